"""
What a dataset's boxes look like to a config's model: sizes and aspect ratios at the scale the
config's resize gives them, the FPN level each falls to, and anchor coverage, the share of boxes
whose best anchor reaches the foreground IoU threshold, computed with the model's own anchor
generator and anchor assigner (``tools/analyze_dataset.py``; a summary at the start of training).

A box whose best anchor stays under the threshold is learned from one low-quality match at
most (``ALLOW_LOW_QUALITY_MATCHES``), or from none: such boxes are what the model barely learns.
Crop augmentations are not modelled: the scale is the resize's (the middle of
``INPUT.MIN_SIZE_TRAIN`` for training, ``INPUT.MIN_SIZE_TEST`` for testing).
"""
import logging
import math
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.structures import Boxes, BoxMode, pairwise_iou

from ..config_domains import anchors_per_location
from ..modeling.assigners import build_anchor_assigner

__all__ = ["SIZE_RANGES", "COVERAGE_WARNING_BELOW", "analyze_dataset", "summary_lines", "plot_box_shapes",
           "log_training_data_analysis"]

# COCO's size ranges, on the box's area at the analysed scale (px^2).
SIZE_RANGES = {"small": (0, 32 ** 2), "medium": (32 ** 2, 96 ** 2), "large": (96 ** 2, math.inf)}
# Training warns under this coverage.
COVERAGE_WARNING_BELOW = 0.9


def _boxes_xyxy(record: Dict) -> Tuple[np.ndarray, List[int]]:
    annotations = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    boxes = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations]
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), [a["category_id"] for a in annotations]


def _resized_size(height: int, width: int, short_edge: int, max_size: int) -> Tuple[int, int]:
    """(h, w) after detectron2's ResizeShortestEdge to ``short_edge`` with ``max_size``."""
    h, w = T.ResizeShortestEdge.get_output_shape(height, width, short_edge, max_size)
    return int(h), int(w)


class _AnchorsForSize:
    """The model's anchors (per level) for one padded input size, built once per size."""

    def __init__(self, cfg):
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        self.in_features = list(cfg.MODEL.RETINANET.IN_FEATURES)
        self.strides = [shapes[f].stride for f in self.in_features]
        self.divisibility = max(backbone.size_divisibility, 1)
        self.generator = build_anchor_generator(cfg, [shapes[f] for f in self.in_features])
        self._cache: Dict[Tuple[int, int], Tuple[Boxes, List[int]]] = {}

    def __call__(self, height: int, width: int) -> Tuple[Boxes, List[int]]:
        """Every anchor (R, 4), levels in order, and how many each level has."""
        padded = (math.ceil(height / self.divisibility) * self.divisibility,
                  math.ceil(width / self.divisibility) * self.divisibility)
        if padded not in self._cache:
            # The generator reads only the feature maps' sizes.
            features = [torch.zeros(1, 1, math.ceil(padded[0] / s), math.ceil(padded[1] / s)) for s in self.strides]
            per_level = self.generator(features)
            self._cache[padded] = (Boxes.cat(per_level), [len(a) for a in per_level])
        return self._cache[padded]


def _analyze_at_scale(cfg, records: Sequence[Dict], short_edge: int, max_size: int, anchors: _AnchorsForSize,
                      assigner, foreground_iou: float, classes: Sequence[str]) -> Dict:
    best_ious, levels, areas, ratios, class_ids, scaled_boxes, no_foreground = [], [], [], [], [], [], 0
    foreground_counts, foreground_ious = [], []
    for record in records:
        boxes, categories = _boxes_xyxy(record)
        if len(boxes) == 0:
            continue
        h, w = _resized_size(record["height"], record["width"], short_edge, max_size)
        scale = np.array([w / record["width"], h / record["height"]] * 2)
        gt = Boxes(torch.as_tensor(boxes * scale, dtype=torch.float32))
        all_anchors, level_sizes = anchors(h, w)
        ious = pairwise_iou(gt, all_anchors)  # (G, R)
        best_per_level = torch.stack([iou.max(dim=1).values for iou in ious.split(level_sizes, dim=1)], dim=1)
        best, level = best_per_level.max(dim=1)  # (G,): best IoU, and the level it is on
        best_ious.append(best.numpy())
        levels.append(level.numpy())
        areas.append(gt.area().numpy())
        ratios.append(((gt.tensor[:, 3] - gt.tensor[:, 1]) / (gt.tensor[:, 2] - gt.tensor[:, 0]).clamp(min=1e-6)).numpy())
        class_ids.append(np.array(categories))
        scaled_boxes.append(gt.tensor.numpy())
        matched, labels = assigner(gt, all_anchors, level_sizes)
        foreground = (labels == 1).nonzero()[:, 0]
        per_box = torch.bincount(matched[foreground], minlength=len(gt))
        no_foreground += int((per_box == 0).sum())
        foreground_counts.append(per_box.numpy())
        foreground_ious.append(ious[matched[foreground], foreground].numpy())
    if not best_ious:
        return {"boxes": 0}
    best_iou, level, area, ratio, class_id = (np.concatenate(x) for x in (best_ious, levels, areas, ratios, class_ids))
    covered = best_iou >= foreground_iou
    counts, assigned_ious = np.concatenate(foreground_counts), np.concatenate(foreground_ious)
    side = np.sqrt(area)
    smallest_anchor = min(min(sizes) for sizes in cfg.MODEL.ANCHOR_GENERATOR.SIZES)
    per_class = {}
    for c, name in enumerate(classes):
        mine = class_id == c
        if mine.any():
            per_class[name] = {"boxes": int(mine.sum()), "coverage": float(covered[mine].mean())}
    per_size = {}
    for name, (low, high) in SIZE_RANGES.items():
        mine = (area >= low) & (area < high)
        per_size[name] = {"boxes": int(mine.sum()), "coverage": float(covered[mine].mean()) if mine.any() else None}
    return {
        "short_edge": short_edge,
        "boxes": int(len(best_iou)),
        "coverage": float(covered.mean()),
        "coverage_per_class": {k: v["coverage"] for k, v in per_class.items()},
        "boxes_per_class": {k: v["boxes"] for k, v in per_class.items()},
        "coverage_per_size": per_size,
        "no_foreground_anchor": no_foreground,
        # What the assigner trains on: ATSS gives many more, lower-IoU foreground anchors per box
        # than the IoU assigner, which is what loses in crowds of small objects.
        "foreground_anchors_per_box": {"mean": float(counts.mean()), "median": float(np.median(counts))},
        "foreground_anchor_iou": ({"mean": float(assigned_ious.mean()), "p10": float(np.percentile(assigned_ious, 10))}
                                  if len(assigned_ious) else None),
        "smaller_than_smallest_anchor": int((side < smallest_anchor).sum()),
        "boxes_per_level": {anchors.in_features[i]: int((level == i).sum()) for i in range(len(anchors.in_features))},
        "box_side_px": {"min": float(side.min()), "median": float(np.median(side)), "max": float(side.max())},
        "aspect_ratio_h_over_w": {"min": float(ratio.min()), "median": float(np.median(ratio)), "max": float(ratio.max())},
        "box_widths_heights": [[float(np.sqrt(a / r)), float(np.sqrt(a * r))] for a, r in zip(area, ratio)],
        "boxes_xyxy": np.concatenate(scaled_boxes).round(2).tolist(),
    }


def analyze_dataset(cfg, dataset_name: Optional[str] = None, max_images: Optional[int] = None,
                    scales: Sequence[str] = ("train", "test")) -> Dict:
    """
    The analysis of ``dataset_name`` (default: the first of ``DATASETS.TRAIN``) for ``cfg``'s
    model, at the training and the test scale (``scales``; one computed once where both are
    the same). Keys: "dataset", "images", "boxes",
    "boxes_per_image", "anchor_sizes", "aspect_ratios", "foreground_iou", "train" and "test"
    (each with "coverage" in [0, 1], "coverage_per_class", "coverage_per_size",
    "no_foreground_anchor", "foreground_anchors_per_box" (mean, median), "foreground_anchor_iou"
    (mean, p10; None without any), "smaller_than_smallest_anchor", "boxes_per_level", box sides
    and aspect ratios, and every box: "box_widths_heights", "boxes_xyxy"), and, at the top, the
    training scale's "coverage", "coverage_per_class" and "no_foreground_anchor".
    """
    name = dataset_name or cfg.DATASETS.TRAIN[0]
    records = DatasetCatalog.get(name)
    sampled = max_images is not None and len(records) > max_images
    if sampled:  # evenly over the dataset, not its first images
        records = [records[i] for i in np.linspace(0, len(records) - 1, max_images).round().astype(int)]
    classes = list(MetadataCatalog.get(name).get("thing_classes", [])) or [
        str(i) for i in range(cfg.MODEL.RETINANET.NUM_CLASSES)]
    anchors = _AnchorsForSize(cfg)
    assigner = build_anchor_assigner(cfg, anchors_per_location(cfg))
    foreground_iou = float(cfg.MODEL.RETINANET.IOU_THRESHOLDS[-1])
    train_sizes = list(cfg.INPUT.MIN_SIZE_TRAIN)
    train_edge = int(round((min(train_sizes) + max(train_sizes)) / 2))
    sizes = {"train": (train_edge, cfg.INPUT.MAX_SIZE_TRAIN), "test": (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)}
    at: Dict[str, Dict] = {}
    with torch.no_grad():
        for scale in scales:
            same = [other for other in at if sizes[other] == sizes[scale]]
            at[scale] = at[same[0]] if same else _analyze_at_scale(
                cfg, records, *sizes[scale], anchors, assigner, foreground_iou, classes)
    counts, per_class = [], defaultdict(int)
    for record in records:
        categories = _boxes_xyxy(record)[1]
        counts.append(len(categories))
        for c in categories:
            per_class[classes[c] if c < len(classes) else str(c)] += 1
    return {
        "dataset": name,
        "images": len(records),
        "sampled": bool(sampled),
        "boxes": int(sum(counts)),
        "boxes_per_class": dict(per_class),
        "boxes_per_image": {"mean": float(np.mean(counts)) if counts else 0.0, "max": int(max(counts, default=0))},
        "anchor_sizes": [list(map(float, s)) for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES],
        "strides": anchors.strides,
        "aspect_ratios": [list(map(float, r)) for r in cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS],
        "foreground_iou": foreground_iou,
        "anchor_assigner": cfg.MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER,
        "coverage": at["train"].get("coverage"),
        "coverage_per_class": at["train"].get("coverage_per_class", {}),
        "no_foreground_anchor": at["train"].get("no_foreground_anchor", 0),
        "train": at.get("train", {}),
        "test": at.get("test", {}),
    }


def summary_lines(analysis: Dict) -> List[str]:
    """A few lines for a person (the tool's output, the training log)."""
    lines = [f"{analysis['dataset']}: {analysis['images']} images, {analysis['boxes']} boxes "
             f"({analysis['boxes_per_image']['mean']:.1f} per image), per class {analysis['boxes_per_class']}"]
    for scale in ("train", "test"):
        at = analysis.get(scale, {})
        if not at.get("boxes"):
            continue
        side, ratio = at["box_side_px"], at["aspect_ratio_h_over_w"]
        lines.append(
            f"at {scale} scale (short edge {at['short_edge']}): box sides {side['min']:.0f}-{side['max']:.0f} px "
            f"(median {side['median']:.0f}), aspect h/w {ratio['min']:.2f}-{ratio['max']:.2f}; anchor coverage "
            f"{at['coverage']:.2f} (best anchor IoU >= {analysis['foreground_iou']}), "
            f"{at['smaller_than_smallest_anchor']} boxes smaller than the smallest anchor, "
            f"{at['no_foreground_anchor']} with no foreground anchor ({analysis['anchor_assigner']} assigner); "
            f"per level {at['boxes_per_level']}")
        per_box, iou = at["foreground_anchors_per_box"], at["foreground_anchor_iou"]
        if iou is not None:
            lines.append(
                f"  {analysis['anchor_assigner']} assigner at {scale} scale: {per_box['mean']:.1f} foreground anchors "
                f"per box (median {per_box['median']:.0f}), their IoU with the box {iou['mean']:.2f} on average, "
                f"10% under {iou['p10']:.2f}")
        low = {k: round(v, 2) for k, v in at["coverage_per_class"].items() if v < COVERAGE_WARNING_BELOW}
        if low:
            lines.append(f"  classes under {COVERAGE_WARNING_BELOW} coverage at {scale} scale: {low}")
    return lines


def plot_box_shapes(analysis: Dict, path: str, scale: str = "train"):
    """
    Box width against height at ``scale``, with each level's anchor shapes drawn over it.
    Returns the matplotlib Figure (saved to ``path``, closed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    shapes = np.array(analysis[scale].get("box_widths_heights", [])).reshape(-1, 2)
    ax.scatter(shapes[:, 0], shapes[:, 1], s=6, alpha=0.5, label=f"boxes ({len(shapes)})")
    sizes, ratios = analysis["anchor_sizes"], analysis["aspect_ratios"]
    levels = max(len(sizes), len(ratios))
    for i in range(levels):
        level_sizes, level_ratios = sizes[min(i, len(sizes) - 1)], ratios[min(i, len(ratios) - 1)]
        # detectron2's cell anchors: area size^2, height / width = ratio.
        widths_heights = [(math.sqrt(s * s / r), r * math.sqrt(s * s / r)) for s in level_sizes for r in level_ratios]
        ax.scatter(*zip(*widths_heights), marker="x", s=40, label=f"anchors, level {i}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"box width (px, {scale} scale)")
    ax.set_ylabel(f"box height (px, {scale} scale)")
    ax.set_title(f"{analysis['dataset']}: coverage {analysis[scale].get('coverage', float('nan')):.2f}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def log_training_data_analysis(cfg, logger: logging.Logger, max_images: int = 200) -> Optional[Dict]:
    """
    At the start of training: the summary of the first training dataset in the log (on at most
    ``max_images`` images, spread over it), and one WARNING when anchor coverage is under
    :data:`COVERAGE_WARNING_BELOW`, naming what to run. Never stops training.
    """
    if not cfg.DATASETS.TRAIN:
        return None
    try:
        analysis = analyze_dataset(cfg, cfg.DATASETS.TRAIN[0], max_images, scales=("train",))
    except Exception as e:  # the analysis informs; a dataset it cannot read fails training anyway
        logger.warning(f"Dataset analysis skipped: {type(e).__name__}: {e}")
        return None
    sample = f" (on {analysis['images']} of its images)" if analysis["sampled"] else ""
    logger.info("Training data, as the model sees it" + sample + ":\n  " + "\n  ".join(summary_lines(analysis)))
    coverage = analysis["coverage"]
    if coverage is not None and coverage < COVERAGE_WARNING_BELOW:
        untrained = analysis["no_foreground_anchor"] / max(analysis["train"].get("boxes", 0), 1)
        # Which of the two it is decides how much it costs: on thin shapes, fitted anchors gained
        # 0.6 AP with low-quality matches and 33 AP without them (docs/datasets.md).
        if untrained >= 1 - COVERAGE_WARNING_BELOW:
            effect = (f"{untrained:.0%} get no foreground anchor at all under the {analysis['anchor_assigner']} "
                      "assigner and are never trained as objects")
        else:
            effect = "each of those trains only its best anchor (a low-quality match)"
        logger.warning(
            f"Anchor coverage of {analysis['dataset']} is {coverage:.2f} at the training scale: "
            f"{1 - coverage:.0%} of its boxes have no anchor with IoU >= {analysis['foreground_iou']}; {effect}. "
            "tools/fit_anchors.py --config-file ... --output anchors.yaml fits MODEL.ANCHOR_GENERATOR.SIZES / "
            "ASPECT_RATIOS to them (and names the INPUT.MIN_SIZE_* that would cover them); "
            "tools/analyze_dataset.py --config-file ... --plot boxes.png shows them")
    return analysis
