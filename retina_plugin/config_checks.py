"""
The one place where a whole config is checked, before anything is built: every entry point
calls :func:`check_config`, through :func:`retina_plugin.entry_points.defaults.setup_config` or
directly. It lists every value outside its domain and every pair of keys that contradict each
other (:mod:`retina_plugin.config_domains`) and every name missing from its registry, each with
the key and the value.
"""
from typing import List

from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY

from .config import config_value
from .config_domains import raise_errors, value_errors
from .modeling.assigners import ANCHOR_ASSIGNER_ALIASES, ANCHOR_ASSIGNER_REGISTRY
from .modeling.head import FOCAL_RETINANET_HEAD_REGISTRY
from .modeling.losses import BOX_LOSS_REGISTRY, BOX_LOSS_TYPE_ALIASES, CLASSIFICATION_LOSS_REGISTRY
from .modeling.registry import unregistered_name

__all__ = ["config_errors", "check_config", "check_model_config"]


def _registry_errors(cfg) -> List[str]:
    """Names that must be registered, looked up where the builders look them up."""
    f = "MODEL.FOCAL_RETINANET."
    checks = [
        (META_ARCH_REGISTRY, "MODEL.META_ARCHITECTURE", {}),
        (BACKBONE_REGISTRY, "MODEL.BACKBONE.NAME", {}),
        (FOCAL_RETINANET_HEAD_REGISTRY, f + "HEAD_NAME", {}),
        (CLASSIFICATION_LOSS_REGISTRY, f + "CLASSIFICATION_LOSS", {}),
        (BOX_LOSS_REGISTRY, "MODEL.RETINANET.BBOX_REG_LOSS_TYPE", BOX_LOSS_TYPE_ALIASES),
        (ANCHOR_ASSIGNER_REGISTRY, f + "ANCHOR_ASSIGNER", ANCHOR_ASSIGNER_ALIASES),
    ]
    problems = [unregistered_name(registry, config_value(cfg, key), key, aliases) for registry, key, aliases in checks]
    return [p for p in problems if p]


def config_errors(cfg, training: bool = True) -> List[str]:
    """
    Every problem of a yaml config (a CfgNode with retina_plugin's keys): values outside their
    domain, contradicting keys, unregistered names. ``training=False`` leaves out the solver,
    training-input and dataset keys.
    """
    return value_errors(cfg, training) + _registry_errors(cfg)


def check_config(cfg, training: bool = True) -> None:
    """
    Raise ValueError listing every problem :func:`config_errors` finds.
    """
    raise_errors(config_errors(cfg, training))


def check_model_config(cfg) -> None:
    """
    :func:`check_config` without the training keys: what building the model needs.
    """
    check_config(cfg, training=False)
