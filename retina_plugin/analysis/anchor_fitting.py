"""
Anchors fitted to a dataset's boxes at the training scale (``tools/fit_anchors.py``).

The fit keeps the model's shapes: the same number of sizes per level and of aspect ratios (so
the head and detectron2's checkpoints keep theirs), one size list per FPN level, each level's
sizes twice the level below's (the levels' strides double) and increasing within the level.
What it chooses: the smallest size, the spread of the sizes within a level, and the aspect
ratios. It searches by evolution (as YOLOv5's anchor check does) on a fast proxy, each box's
IoU with every anchor shape placed at its level's grid point nearest the box's centre, then
measures the real coverage (anchors on
their grid, the model's own generator; :mod:`retina_plugin.analysis.dataset`) and keeps the
fitted anchors only where that is higher: it never makes coverage worse.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .dataset import COVERAGE_WARNING_BELOW, analyze_dataset

__all__ = ["anchor_shapes", "fit_anchors", "anchors_yaml", "shape_coverage_bound"]

# The sizes of a level span at most an octave (the next level's start) and at least this factor,
# so that they stay distinct and increasing.
MIN_SPREAD = 1.05


def anchor_shapes(sizes: Sequence[Sequence[float]], ratios: Sequence[float]) -> np.ndarray:
    """(width, height) of every anchor: area size^2, height / width = ratio (detectron2's)."""
    return np.array([(math.sqrt(s * s / r), r * math.sqrt(s * s / r)) for level in sizes for s in level for r in ratios])


def _best_grid_iou(boxes: np.ndarray, sizes, ratios, strides: Sequence[int]) -> np.ndarray:
    """
    Per box (N, 4 XYXY): the best IoU with an anchor of each shape placed at the grid point of
    its level nearest to the box's centre (detectron2 puts anchor centres on multiples of the
    stride): the real coverage's figure, without building every anchor.
    """
    shapes = anchor_shapes(sizes, ratios)  # (M, 2), level by level
    per_level = len(shapes) // len(sizes)
    stride = np.repeat(np.asarray(strides[: len(sizes)], dtype=float), per_level)  # (M,)
    centre = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2  # (N, 1, 2)
    grid = np.round(centre / stride[None, :, None]) * stride[None, :, None]  # (N, M, 2)
    low, high = grid - shapes[None] / 2, grid + shapes[None] / 2
    inter = np.clip(np.minimum(boxes[:, None, 2:], high) - np.maximum(boxes[:, None, :2], low), 0, None).prod(-1)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(-1)
    return (inter / (area[:, None] + shapes.prod(-1)[None] - inter)).max(axis=1)


def _anchors(base: float, spread: float, log_ratios: np.ndarray, levels: int, per_level: int):
    # Rounded as written to the yaml, so that what is measured is what is written.
    sizes = [[round(base * 2 ** level * spread ** (j / per_level), 2) for j in range(per_level)] for level in range(levels)]
    return sizes, sorted(round(float(np.exp(r)), 3) for r in log_ratios)


def _fitness(boxes, strides, sizes, ratios, threshold) -> float:
    best = _best_grid_iou(boxes, sizes, ratios, strides)
    # Coverage first; the mean best IoU breaks ties toward better-placed shapes.
    return float((best >= threshold).mean() + 0.1 * best.mean())


def _evolve(boxes: np.ndarray, strides: Sequence[int], levels: int, per_level: int, num_ratios: int, start: Tuple,
            threshold: float, seed: int, generations: int) -> Tuple[List[List[float]], List[float]]:
    rng = np.random.default_rng(seed)
    base, spread, log_ratios = start
    best = (base, spread, np.array(log_ratios, dtype=float))
    best_fitness = _fitness(boxes, strides, *_anchors(*best, levels, per_level), threshold)
    for _ in range(generations):
        base = best[0] * math.exp(rng.normal(0, 0.2))
        spread = min(2.0, max(MIN_SPREAD, best[1] * math.exp(rng.normal(0, 0.1)))) if per_level > 1 else best[1]
        log_ratios = best[2] + rng.normal(0, 0.15, size=num_ratios)
        fitness = _fitness(boxes, strides, *_anchors(base, spread, log_ratios, levels, per_level), threshold)
        if fitness > best_fitness:
            best, best_fitness = (base, spread, log_ratios), fitness
    return _anchors(*best, levels, per_level)


def _start(sizes: Sequence[Sequence[float]], ratios: Sequence[float]) -> Tuple[float, float, List[float]]:
    """The search's start: the config's own anchors in the fit's terms."""
    first = sorted(sizes[0])
    spread = (first[-1] / first[0]) ** (len(first) / (len(first) - 1)) if len(first) > 1 else 2.0
    return first[0], min(2.0, max(MIN_SPREAD, spread)), [math.log(r) for r in ratios]


def _with_anchors(cfg, sizes, ratios):
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [list(map(float, s)) for s in sizes]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [list(map(float, ratios))]
    return cfg


def _scaled_input(cfg, factor: float):
    cfg = cfg.clone()
    cfg.defrost()
    cfg.INPUT.MIN_SIZE_TRAIN = tuple(int(round(s * factor)) for s in cfg.INPUT.MIN_SIZE_TRAIN)
    cfg.INPUT.MAX_SIZE_TRAIN = int(round(cfg.INPUT.MAX_SIZE_TRAIN * factor))
    cfg.INPUT.MIN_SIZE_TEST = int(round(cfg.INPUT.MIN_SIZE_TEST * factor))
    cfg.INPUT.MAX_SIZE_TEST = int(round(cfg.INPUT.MAX_SIZE_TEST * factor))
    return cfg


def shape_coverage_bound(boxes: np.ndarray, ratios: Sequence[float], threshold: float) -> float:
    """
    The most any input size can cover of ``boxes`` (N, 4 XYXY) with anchors of these aspect
    ratios: the share whose best IoU with an anchor of one of ``ratios`` placed on the box's
    centre, at the area that maximizes that IoU (the box's own), reaches ``threshold``. Scaling
    the input moves boxes against the sizes and the grid, never their shape.
    """
    if len(boxes) == 0:
        return 1.0
    width = np.clip(boxes[:, 2] - boxes[:, 0], 1e-6, None)[:, None]
    height = np.clip(boxes[:, 3] - boxes[:, 1], 1e-6, None)[:, None]
    ratio = np.asarray(ratios, dtype=float)[None]
    area = width * height
    anchor_width = np.sqrt(area / ratio)
    inter = np.minimum(width, anchor_width) * np.minimum(height, ratio * anchor_width)
    best = (inter / (2 * area - inter)).max(axis=1)
    return float((best >= threshold).mean())


def _input_size_advice(cfg, dataset_name: Optional[str], max_images: Optional[int]) -> Optional[Dict]:
    """
    The smallest upscale of the input (1.25x .. 4x) at which ``cfg``'s anchors reach the
    coverage aimed at (measured on their grid, as the analysis does, at the training scale),
    with the keys to set; None when even 4x does not.
    """
    for factor in (1.25, 1.5, 2.0, 2.5, 3.0, 4.0):
        scaled = _scaled_input(cfg, factor)
        coverage = analyze_dataset(scaled, dataset_name, max_images, scales=("train",))["coverage"]
        if coverage >= COVERAGE_WARNING_BELOW:
            return {"factor": factor, "coverage": coverage,
                    "INPUT.MIN_SIZE_TRAIN": tuple(scaled.INPUT.MIN_SIZE_TRAIN),
                    "INPUT.MAX_SIZE_TRAIN": scaled.INPUT.MAX_SIZE_TRAIN,
                    "INPUT.MIN_SIZE_TEST": scaled.INPUT.MIN_SIZE_TEST,
                    "INPUT.MAX_SIZE_TEST": scaled.INPUT.MAX_SIZE_TEST}
    return None


# Fitted anchors replace the config's only when they cover more than this share of the boxes more:
# on the reef, anchors fitted for +0.007 coverage gave 4.2 +- 1.1 AP against the shipped ones'
# 5.0 +- 0.9 (3 seeds each, docs/datasets.md), a change that bought nothing measurable.
DEFAULT_MIN_COVERAGE_GAIN = 0.02


def fit_anchors(cfg, dataset_name: Optional[str] = None, seed: int = 0, generations: int = 1000,
                max_images: Optional[int] = None, min_gain: float = DEFAULT_MIN_COVERAGE_GAIN) -> Dict:
    """
    Anchors fitted to the boxes of ``dataset_name`` (default: the first of DATASETS.TRAIN) at
    ``cfg``'s training scale. Returns {"sizes", "ratios", "changed", "coverage_before",
    "coverage_after", "coverage_fitted", "before", "after" (the two analyses), "input_size"
    (advice, or None), "shape_coverage_bound" (the most any input size covers with the
    config's ratios; None unless coverage stays low)}; ``changed`` is False, and "sizes" and
    "ratios" are the config's, unless the fitted anchors cover more than ``min_gain`` more boxes
    ("coverage_fitted": what they cover). The same seed gives the same anchors.
    """
    before = analyze_dataset(cfg, dataset_name, max_images)
    sizes = [list(map(float, s)) for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES]
    ratios_per_level = cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS
    if len(ratios_per_level) != 1 or len({len(s) for s in sizes}) != 1:
        raise ValueError("fit_anchors fits one ASPECT_RATIOS list for all levels and the same number of SIZES per "
                         f"level; the config has {len(ratios_per_level)} ratio lists and sizes {sizes}")
    ratios = [float(r) for r in ratios_per_level[0]]
    boxes = np.array(before["train"].get("boxes_xyxy", []), dtype=float).reshape(-1, 4)
    threshold = before["foreground_iou"]
    result = {"sizes": sizes, "ratios": ratios, "changed": False, "before": before, "after": before,
              "coverage_before": before["coverage"], "coverage_after": before["coverage"],
              "coverage_fitted": before["coverage"]}
    if len(boxes):
        fitted_sizes, fitted_ratios = _evolve(boxes, before["strides"], len(sizes), len(sizes[0]), len(ratios),
                                              _start(sizes, ratios), threshold, seed, generations)
        after = analyze_dataset(_with_anchors(cfg, fitted_sizes, fitted_ratios), dataset_name, max_images)
        result["coverage_fitted"] = after["coverage"]
        if after["coverage"] > before["coverage"] + min_gain:
            result.update(sizes=fitted_sizes, ratios=fitted_ratios, changed=True, after=after,
                          coverage_after=after["coverage"])
    result["input_size"], result["shape_coverage_bound"] = None, None
    if len(boxes) and result["coverage_after"] < COVERAGE_WARNING_BELOW:
        # With the config's anchors: fitted ones fit the boxes at this size, not at a larger one.
        # Boxes too thin or too wide for its ratios stay uncovered at every size: no scan then
        # (each step is a full analysis, minutes on thousands of boxes).
        result["shape_coverage_bound"] = shape_coverage_bound(boxes, ratios, threshold)
        if result["shape_coverage_bound"] >= COVERAGE_WARNING_BELOW:
            result["input_size"] = _input_size_advice(cfg, dataset_name, max_images)
    return result


def anchors_yaml(sizes: Sequence[Sequence[float]], ratios: Sequence[float], comment: str = "") -> str:
    """A yaml to merge with _BASE_ or cfg.merge_from_file: the anchor generator's SIZES and ASPECT_RATIOS."""
    lines = [f"# {line}" for line in comment.splitlines()] if comment else []
    lines += ["MODEL:", "  ANCHOR_GENERATOR:",
              "    SIZES: [" + ", ".join("[" + ", ".join(repr(float(s)) for s in level) + "]" for level in sizes) + "]",
              "    ASPECT_RATIOS: [[" + ", ".join(repr(float(r)) for r in ratios) + "]]"]
    return "\n".join(lines) + "\n"
