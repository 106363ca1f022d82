"""
LazyConfig support: one entry point for both config kinds, yaml (CfgNode, with our keys
added) and LazyConfig ``.py`` files (``configs/*.py``), so that the tools take either; the
optimizer that the demo's lazy config needs; detectron2's lazy-config training loop
(``do_train`` / ``do_test``, as in detectron2's ``tools/lazyconfig_train_net.py``).
"""
from typing import List, Sequence, Tuple

import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, create_ddp_model, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.modeling import build_model
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm

from .config import add_retina_config

__all__ = [
    "load_any_config",
    "build_any_model",
    "model_weights",
    "test_resize",
    "clipped_sgd",
    "do_train",
    "do_test",
]


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


def clipped_sgd(
    params, lr: float, momentum: float, weight_decay: float, clip_value: float,
    clip_type: str = "norm", norm_type: float = 2.0,
) -> torch.optim.Optimizer:
    """
    SGD with detectron2's gradient clipping (SOLVER.CLIP_GRADIENTS of yaml configs), for
    LazyConfig optimizers: ``L(clipped_sgd)(params=..., lr=..., clip_value=...)``.
    """
    clip_cfg = get_cfg()
    clip_cfg.SOLVER.CLIP_GRADIENTS.update(
        ENABLED=True, CLIP_TYPE=clip_type, CLIP_VALUE=clip_value, NORM_TYPE=norm_type
    )
    sgd = maybe_add_gradient_clipping(clip_cfg, torch.optim.SGD)
    return sgd(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def do_test(cfg, model):
    """
    Evaluate ``model`` on ``cfg.dataloader.test`` with ``cfg.dataloader.evaluator``.
    """
    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    print_csv_format(results)
    return results


def do_train(cfg, resume: bool = False):
    """
    detectron2's lazy-config training loop: instantiate model, optimizer, train loader and
    lr schedule from ``cfg``, train for ``cfg.train.max_iter`` iterations with periodic
    checkpoints, evaluation and logging in ``cfg.train.output_dir``.
    """
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optimizer)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
        hooks.PeriodicWriter(
            _default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period
        ) if comm.is_main_process() else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)
    return trainer


def _default_writers(output_dir: str, max_iter: int):
    from detectron2.engine.defaults import default_writers

    return default_writers(output_dir, max_iter)
