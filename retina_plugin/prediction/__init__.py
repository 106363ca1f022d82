"""
Prediction at scale (tools/predict.py): batched, sharded over detectron2's ``launch``
processes, resumable, with the eager model or a deployment engine.
"""
