"""
Running an engine with detectron2's contracts: a FocalRetinaNet whose backbone and head are
the engine (:func:`build_engine_model`, for ``inference_on_dataset`` / COCOEvaluator and the
batch predictor), and :class:`EnginePredictor`, ``DefaultPredictor`` with an engine.

Pre- and post-processing are the model's own, built from the same config: only the dense
network is replaced. The config must agree with the engine on every key the network's
outputs depend on (:data:`~retina_plugin.deploy.build.MODEL_KEYS`); test-time thresholds,
top-k and NMS may differ, they run after the engine.
"""
from torch import nn

from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from ..config import test_resize
from .build import model_key_values
from .engines import EngineError, load_engine, read_engine_metadata

__all__ = ["check_engine_config", "build_engine_model", "EnginePredictor"]


def check_engine_config(cfg, path: str) -> None:
    """Raise EngineError naming each model key where ``cfg`` and the engine at ``path`` differ."""
    directory, metadata = read_engine_metadata(path)
    made_with = metadata.get("model_keys", {})
    differences = [
        f"{key}: config {value!r}, engine {made_with[key]!r}"
        for key, value in model_key_values(cfg).items()
        if key in made_with and made_with[key] != value
    ]
    if differences:
        raise EngineError(
            f"{directory} was made from another model than this config describes: "
            + "; ".join(differences) + ". Use the config the engine was exported with."
        )


def build_engine_model(cfg, path: str, threads=None, refuse_failed: bool = True) -> nn.Module:
    """
    A FocalRetinaNet from ``cfg`` in eval mode whose backbone and head are the engine at
    ``path``; its own backbone and head weights are never used (kept on the meta device).
    ``refuse_failed``: see :func:`~retina_plugin.deploy.engines.load_engine`.
    """
    check_engine_config(cfg, path)
    engine = load_engine(path, threads, refuse_failed)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = engine.metadata.get("device", "cpu")
    cfg.MODEL.WEIGHTS = ""
    model = build_model(cfg).eval()
    model.backbone.to("meta")
    model.head.to("meta")
    model.attach_engine(engine)
    return model


class EnginePredictor(DefaultPredictor):
    """
    ``DefaultPredictor(cfg)`` with an engine: called with one image (H, W, C) in
    ``cfg.INPUT.FORMAT``, returns ``{"instances": Instances}`` at the image's size, after
    the config's test-time resize.
    """

    def __init__(self, cfg, engine_path: str, threads=None):
        # DefaultPredictor.__init__ would load MODEL.WEIGHTS: the weights are in the engine.
        self.cfg = cfg.clone()
        self.model = build_engine_model(cfg, engine_path, threads)
        self.aug = test_resize(cfg)
        self.input_format = cfg.INPUT.FORMAT
        assert self.input_format in ["RGB", "BGR"], self.input_format

    @property
    def engine(self):
        return self.model.inference_engine
