"""
The paper's experiments as tools for a user's own model and data: the ablation harness
(Table 1), the loss distribution (Figure 4), the model analysis (parameters, FLOPs, anchors).
"""
