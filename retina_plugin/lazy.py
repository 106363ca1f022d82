"""
One entry point for both config kinds: yaml (CfgNode, with our keys added) and LazyConfig
``.py`` files (``configs/*.py``), so that the tools take either.
"""
from typing import List, Sequence, Tuple

from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model
from torch import nn

from .config import add_retina_config

__all__ = ["load_any_config", "build_any_model", "model_weights", "test_resize"]


def load_any_config(path: str, opts: Sequence[str] = ()):
    """
    A yaml config as a CfgNode (``opts``: KEY VALUE pairs), or a ``.py`` LazyConfig
    (``opts``: ``key=value`` overrides, detectron2's lazy-config convention).
    """
    if path.endswith(".py"):
        cfg = LazyConfig.load(path)
        return LazyConfig.apply_overrides(cfg, list(opts))
    if not path.endswith((".yaml", ".yml")):
        raise ValueError(f"Config file {path!r}: expected a .yaml or .py file")
    cfg = get_cfg()
    add_retina_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    return cfg


def build_any_model(cfg) -> nn.Module:
    """
    The model of either config kind, with randomly initialized weights.
    """
    if isinstance(cfg, CfgNode):
        return build_model(cfg)
    return instantiate(cfg.model)


def model_weights(cfg) -> str:
    """
    The checkpoint a config names: MODEL.WEIGHTS, or train.init_checkpoint for LazyConfig.
    """
    if isinstance(cfg, CfgNode):
        return cfg.MODEL.WEIGHTS
    return cfg.train.get("init_checkpoint", "")


def test_resize(cfg) -> Tuple[int, int, str]:
    """
    (shortest edge, max size, input format) of the config's test-time resize.
    """
    if isinstance(cfg, CfgNode):
        return cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.FORMAT
    resizes: List = [
        a for a in cfg.dataloader.test.mapper.augmentations if "short_edge_length" in a
    ]
    if not resizes:
        raise ValueError("dataloader.test.mapper.augmentations has no ResizeShortestEdge")
    return resizes[0].short_edge_length, resizes[0].max_size, cfg.model.input_format
