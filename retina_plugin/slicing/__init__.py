"""
Large images: sliced prediction (:class:`SlicedPredictor`, ``tools/predict.py --slice``),
sliced evaluation (``train_net.py --eval-only TEST.SLICE.ENABLED True``) and tiled datasets
(``tools/slice_dataset.py``, :mod:`retina_plugin.data.tiled_dataset`), over one tiler
(:mod:`retina_plugin.data.windows`).
"""
from ..data.tiled_dataset import TiledCocoWriter, slice_registered_dataset
from ..data.windows import ClipRule, SliceGridError, clip_boxes_to_window, slice_windows
from .inference import SlicedInference, SliceSettings, read_large_image, sliced_inference
from .merge import MERGE_METHODS, merge_window_detections
from .predictor import SlicedPredictor

__all__ = [
    "ClipRule",
    "MERGE_METHODS",
    "SliceGridError",
    "SliceSettings",
    "SlicedInference",
    "SlicedPredictor",
    "TiledCocoWriter",
    "clip_boxes_to_window",
    "merge_window_detections",
    "read_large_image",
    "slice_registered_dataset",
    "slice_windows",
    "sliced_inference",
]
