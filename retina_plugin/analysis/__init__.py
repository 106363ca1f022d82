"""
Your own data, looked at before training: what the boxes look like to the model and how well
its anchors cover them (``tools/analyze_dataset.py``), and anchors fitted to them
(``tools/fit_anchors.py``).
"""
from .anchor_fitting import anchors_yaml, fit_anchors, shape_coverage_bound
from .dataset import analyze_dataset, plot_box_shapes, summary_lines

__all__ = ["analyze_dataset", "plot_box_shapes", "summary_lines", "fit_anchors", "anchors_yaml", "shape_coverage_bound"]
