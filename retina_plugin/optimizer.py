"""
The optimizer chosen by SOLVER.OPTIMIZER: detectron2's SGD (the paper) or AdamW.
"""
import torch
from detectron2.solver import build_optimizer as build_sgd_optimizer
from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping

__all__ = ["OPTIMIZERS", "build_optimizer"]

OPTIMIZERS = ("SGD", "AdamW")


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """
    "SGD": exactly detectron2's ``build_optimizer``. "AdamW": ``torch.optim.AdamW`` with
    SOLVER.BASE_LR, WEIGHT_DECAY and ADAMW_BETAS, and no weight decay on the parameters of
    norm layers and on biases (decaying them towards 0 only fights the normalization).
    Both are wrapped with SOLVER.CLIP_GRADIENTS when it is enabled.
    """
    name = cfg.SOLVER.OPTIMIZER
    if name == "SGD":
        return build_sgd_optimizer(cfg, model)
    if name == "AdamW":
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            weight_decay_norm=0.0,
            weight_decay_bias=0.0,
        )
        adamw = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)
        return adamw(
            params,
            lr=cfg.SOLVER.BASE_LR,
            betas=tuple(cfg.SOLVER.ADAMW_BETAS),
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )
    raise ValueError(f"SOLVER.OPTIMIZER must be one of {OPTIMIZERS}, got {name!r}")
