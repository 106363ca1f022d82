"""
``tools/ablate.py --compare-recipes``: the recipes a user chooses between, run on their own
data, with a verdict that accounts for seed noise.

A recipe is a set of overrides of the user's config, which stands for the paper default: the
paper default itself (the config unchanged), v2 (:data:`V2_RECIPE`, what ``configs/*_v2.yaml``
add to their paper-default configs: model and loss options on the config's own anchor assignment
and optimizer), v2 with ATSS and AdamW (:data:`V2_ADAMW_RECIPE`, ``configs/*_v2_adamw.yaml``, the
reef's best set, which lost on held-out data) and detectron2's own RetinaNet on the same config.
"""
import math
from typing import Dict, List, Sequence, Tuple

__all__ = ["V2_RECIPE", "V2_ADAMW_RECIPE", "RECIPES", "scaled_schedule", "recipe_verdict"]

# What configs/*_v2.yaml add to their paper-default config (tested): P6/P7 from P5, the GIoU box
# loss, the quality focal loss. The anchor assignment (IoU) and the optimizer stay the config's:
# ATSS lost in a crowd of small objects (docs/accuracy.md).
V2_RECIPE: List[Tuple[str, str]] = [
    ("MODEL.BACKBONE.NAME", "build_focal_retinanet_resnet_fpn_backbone"),
    ("MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE", "p5"),
    ("MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS", "QualityFocalLoss"),
    ("MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "giou"),
]

# What configs/*_v2_adamw.yaml add (the CPU ones exactly; tested): v2 with ATSS and AdamW, the
# reef's best set.
V2_ADAMW_RECIPE: List[Tuple[str, str]] = V2_RECIPE + [
    ("MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER", "ATSS"),
    ("SOLVER.OPTIMIZER", "AdamW"),
    ("SOLVER.BASE_LR", "0.001"),
    ("SOLVER.WEIGHT_DECAY", "0.05"),
]

# name -> overrides; the paper default is the base config ("base" in the sweep). The runs in
# experiment_records/ before v2 lost AdamW name these two "v2_sgd" (now v2) and "v2" (now v2_adamw).
RECIPES: Dict[str, List[Tuple[str, str]]] = {
    "v2": V2_RECIPE,
    "v2_adamw": V2_ADAMW_RECIPE,
    "detectron2_RetinaNet": [("MODEL.META_ARCHITECTURE", "RetinaNet")],
}


def scaled_schedule(cfg, fraction: float) -> List[str]:
    """
    Overrides that run ``fraction`` of ``cfg``'s schedule: iterations, learning-rate steps and
    warm-up scaled alike (at least one iteration each), evaluation only at the end.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"--schedule-fraction must be in (0, 1], got {fraction}")
    solver = cfg.SOLVER
    max_iter = max(1, round(solver.MAX_ITER * fraction))
    steps = tuple(sorted({max(1, round(s * fraction)) for s in solver.STEPS if round(s * fraction) < max_iter}))
    return ["SOLVER.MAX_ITER", str(max_iter), "SOLVER.STEPS", str(steps),
            "SOLVER.WARMUP_ITERS", str(min(max_iter, round(solver.WARMUP_ITERS * fraction))),
            "TEST.EVAL_PERIOD", "0"]


def _finished_aps(row: Dict) -> List[float]:
    return [r["metrics"]["AP"] for r in row["runs"]
            if r["status"] == "finished" and not math.isnan(r["metrics"]["AP"])]


def _compare(name: str, aps: Sequence[float], paper: Sequence[float]) -> Tuple[str, str]:
    """(outcome, sentence) of one recipe against the paper default, seed by seed."""
    if not aps:
        return "no result", f"{name}: no finished run with detections"
    difference = sum(aps) / len(aps) - sum(paper) / len(paper)
    spread = f"{name} {min(aps):.1f}-{max(aps):.1f} AP against the paper default's {min(paper):.1f}-{max(paper):.1f}"
    if min(aps) > max(paper):
        return "better", f"{name} is better: every seed above every paper-default seed ({spread}, {difference:+.1f} on average)"
    if max(aps) < min(paper):
        return "worse", f"{name} is worse: every seed below every paper-default seed ({spread}, {difference:+.1f})"
    return "tie", f"{name} ties with the paper default within seed noise: their seeds overlap ({spread}, {difference:+.1f})"


def recipe_verdict(rows: Sequence[Dict]) -> str:
    """
    The verdict on summarized rows of a recipe comparison (a "base" row, the paper default,
    and one row per recipe): a recipe is better or worse only when all its seeds lie above or
    below all of the paper default's; otherwise the two tie within seed noise, and the paper
    default stands. Ends with the recipe to use.
    """
    by_variant = {row["variant"]: row for row in rows}
    paper = _finished_aps(by_variant["base"])
    if not paper:
        return "Verdict: the paper default has no finished run with detections; nothing to compare against."
    lines, better = [], []
    for name, row in by_variant.items():
        if name == "base":
            continue
        outcome, sentence = _compare(name, _finished_aps(row), paper)
        lines.append(f"- {sentence}.")
        if outcome == "better":
            better.append((sum(_finished_aps(row)) / len(_finished_aps(row)), name))
    seeds = min(len(_finished_aps(r)) for r in rows)
    if better:
        choice = f"use {max(better)[1]} on this data"
    else:
        choice = "use the paper default on this data: no recipe beats it beyond seed noise"
    if seeds < 3:
        choice += f" ({seeds} seed(s) per recipe: 3 or more tell noise from effect more surely)"
    return "Verdict (AP, seed by seed):\n" + "\n".join(lines) + f"\n\n**{choice[0].upper() + choice[1:]}.**"
