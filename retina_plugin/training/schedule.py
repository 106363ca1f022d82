"""
What detectron2's learning-rate schedule (SOLVER.LR_SCHEDULER_NAME, WARMUP_*, STEPS, MAX_ITER)
does to SOLVER.BASE_LR, checked before training: a warm-up that reaches past the first lr step
ramps to the decayed rate (the warm-up's end value is the schedule's value at WARMUP_ITERS), so
the run never trains at BASE_LR; detectron2 accepts that without a word. Found on issue 27's
small-data regime: WARMUP_ITERS 1000 (detectron2's default) with MAX_ITER 1000 and STEPS
(770, 930) keeps the learning rate under 0.01 x BASE_LR for the whole run.
"""
import logging
from typing import List

import torch
from detectron2.solver import build_lr_scheduler

__all__ = ["learning_rate_factors", "schedule_warnings", "log_schedule_warnings"]


def learning_rate_factors(cfg, iterations: int) -> List[float]:
    """
    The learning rate of the first ``iterations`` iterations as fractions of SOLVER.BASE_LR,
    read from detectron2's own scheduler (``build_lr_scheduler``) as training would step it.
    """
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    factors = []
    for _ in range(min(iterations, cfg.SOLVER.MAX_ITER)):
        factors.append(optimizer.param_groups[0]["lr"] / cfg.SOLVER.BASE_LR)
        optimizer.step()  # no gradient, no change; torch warns when a scheduler steps first
        scheduler.step()
    return factors


def schedule_warnings(cfg) -> List[str]:
    """
    Sentences on a schedule that does not do what its keys suggest, each naming the keys and
    values; empty when the warm-up ends at 0.9 x BASE_LR or more (a cosine schedule has decayed
    to 0.98 x after a tenth of it). Looks at the warm-up only: after it, detectron2's schedulers
    never rise above their value at its end (SOLVER.GAMMA <= 1).
    """
    solver = cfg.SOLVER
    warmup_iters = min(solver.WARMUP_ITERS, solver.MAX_ITER)
    peak = max(learning_rate_factors(cfg, warmup_iters + 1))
    if peak >= 0.9:
        return []
    first_step = min([s for s in solver.STEPS if s <= solver.MAX_ITER], default=None)
    if solver.LR_SCHEDULER_NAME == "WarmupMultiStepLR" and first_step is not None:
        reason, fix = f"past the first lr step (SOLVER.STEPS {tuple(solver.STEPS)})", f"below {first_step}"
    else:
        reason, fix = f"into {solver.LR_SCHEDULER_NAME}'s decay", "shorter"
    return [
        f"SOLVER.WARMUP_ITERS = {solver.WARMUP_ITERS} (SOLVER.MAX_ITER {solver.MAX_ITER}) reaches {reason}: "
        f"detectron2 ramps the learning rate to the schedule's value at the warm-up's end, so it never "
        f"exceeds {peak:.3g} x SOLVER.BASE_LR ({peak * solver.BASE_LR:.3g}). Make SOLVER.WARMUP_ITERS {fix}."
    ]


def log_schedule_warnings(cfg, logger: logging.Logger) -> None:
    """Write :func:`schedule_warnings` to ``logger`` (log.txt), one warning each."""
    for warning in schedule_warnings(cfg):
        logger.warning(warning)
