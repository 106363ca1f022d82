"""
Optimizers: the one SOLVER.OPTIMIZER chooses for yaml configs (detectron2's SGD, the paper, or
AdamW), and SGD with detectron2's gradient clipping for LazyConfig files.
"""
import torch
from detectron2.config import get_cfg
from detectron2.solver import build_optimizer as build_sgd_optimizer
from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping

from ..config_domains import check_value

__all__ = ["build_optimizer", "clipped_sgd"]


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """
    "SGD": exactly detectron2's ``build_optimizer``. "AdamW": ``torch.optim.AdamW`` with
    SOLVER.BASE_LR, WEIGHT_DECAY and ADAMW_BETAS, and no weight decay on the parameters of
    norm layers and on biases (decaying them towards 0 only fights the normalization).
    Both are wrapped with SOLVER.CLIP_GRADIENTS when it is enabled.
    """
    name = cfg.SOLVER.OPTIMIZER
    check_value("SOLVER.OPTIMIZER", name)
    if name == "SGD":
        return build_sgd_optimizer(cfg, model)
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=0.0,
        weight_decay_bias=0.0,
    )
    adamw = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)
    return adamw(
        params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.ADAMW_BETAS),
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )


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
