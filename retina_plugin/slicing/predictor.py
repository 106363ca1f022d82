"""
:class:`SlicedPredictor`: ``DefaultPredictor``'s contract for one large image, predicted
window by window (``TEST.SLICE``, :mod:`retina_plugin.slicing.inference`).
"""
from typing import Dict, Optional, Union

import numpy as np
import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from ..config import test_resize
from .inference import SliceSettings, read_large_image, sliced_inference

__all__ = ["SlicedPredictor"]


class SlicedPredictor:
    """
    ``SlicedPredictor(cfg)(image)`` -> ``{"instances": Instances}`` in the image's pixels, like
    ``DefaultPredictor``: ``image`` is (H, W, 3) uint8 BGR (or a file name, read with
    :func:`read_large_image`); the model is built from ``cfg`` and ``MODEL.WEIGHTS``, or given
    (e.g. ``build_engine_model(cfg, engine)`` to run an engine). The windows are
    ``TEST.SLICE.SIZE`` pixels of the image, each resized by ``INPUT.MIN_SIZE_TEST`` /
    ``MAX_SIZE_TEST`` as a training tile was.
    """

    def __init__(self, cfg, model: Optional[nn.Module] = None):
        self.cfg = cfg.clone()
        if model is None:
            model = build_model(self.cfg)
            DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        self.model = model.eval()
        self.settings = SliceSettings.from_config(cfg)
        self.resize = test_resize(cfg)
        self.input_format = cfg.INPUT.FORMAT
        assert self.input_format in ["RGB", "BGR"], self.input_format

    def __call__(self, original_image: Union[np.ndarray, str]) -> Dict:
        if isinstance(original_image, str):
            original_image = read_large_image(original_image)
        with torch.no_grad():
            instances = sliced_inference(self.model, original_image, self.settings, self.resize,
                                         flip_channels=self.input_format == "RGB")
        return {"instances": instances}
