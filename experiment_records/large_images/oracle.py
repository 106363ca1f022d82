"""
How much of the gap between the reef's tile AP and its whole-area AP is the metric's, not the
model's (issue 29's target: sliced AP >= tile AP - 1). No model: an oracle detector that, in
every window, returns exactly the boxes the tiler labels there (each coral clipped to the window,
kept under the reef's clip rule), then the same with each box side moved by Gaussian noise of
``sigma`` x its length and random scores, as a stand-in for a weaker detector. For each noise
level, COCO AP on
- the 12 val tiles against their own (cut) boxes: the tile AP;
- the whole val area (retina_reef_val_full, boxes uncut) from the 512-px windows the slicing
  defaults cut (overlap 0.25), merged by our default rule and by class-wise NMS;
- the whole val area from the val tiles' detections placed in it unmerged.

    python experiment_records/large_images/oracle.py

Writes oracle.json / oracle.md here.
"""
import json
import os
import sys
from dataclasses import replace

import numpy as np
import torch
from pycocotools.coco import COCO

from detectron2.layers import batched_nms

from retina_plugin.data.reef import REEF_SPLITS, clip_rule, ensure_reef_splits, reef_root
from retina_plugin.data.windows import clip_boxes_to_window, slice_windows
from retina_plugin.slicing.inference import SliceSettings, WindowDetections, inner_edge_boxes, merge_views

from run import detection_results, results_ap

HERE = os.path.dirname(os.path.abspath(__file__))
SIGMAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
REPEATS = 5


def _xyxy(annotations):
    return np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                     for a in annotations], dtype=float).reshape(-1, 4)


def _noisy(boxes: np.ndarray, sigma: float, rng) -> np.ndarray:
    sides = np.concatenate([boxes[:, 2:3] - boxes[:, 0:1], boxes[:, 3:4] - boxes[:, 1:2]] * 2, axis=1)
    moved = boxes + rng.normal(0.0, sigma, boxes.shape) * sides
    x0, x1 = np.minimum(moved[:, 0], moved[:, 2] - 1), np.maximum(moved[:, 2], moved[:, 0] + 1)
    y0, y1 = np.minimum(moved[:, 1], moved[:, 3] - 1), np.maximum(moved[:, 3], moved[:, 1] + 1)
    return np.stack([x0, y0, x1, y1], axis=1)


# Our merge with the defaults, and with the union box, wider edge margins (window pixels) and
# lower partial-view IoUs.
VARIANTS = {"sliced, ours (defaults)": SliceSettings()}
VARIANTS.update({f"sliced, ours {merge}, margin {margin:g}, partial IoU {partial:g}": replace(
    SliceSettings(), merge=merge, edge_margin=margin, partial_threshold=partial)
    for merge in ("NMS", "MERGE") for margin in (2.0, 16.0) for partial in (0.5, 0.7, 0.9)
    if (merge, margin, partial) != ("NMS", 2.0, 0.9)})


def with_edge_margin(views, size, margin: float):
    """The views with their partial flags set again for an edge margin of ``margin`` image pixels."""
    flagged = []
    for view in views:
        offset = torch.tensor([view.window[0], view.window[1]] * 2, dtype=torch.float32)
        partial = inner_edge_boxes(view.boxes - offset, view.window, size, margin)
        flagged.append(replace(view, partial=partial))
    return flagged


def main() -> int:
    root = reef_root()
    ensure_reef_splits(root)
    tiles_gt = COCO(os.path.join(root, REEF_SPLITS["retina_reef_val"], "annotations.json"))
    full_gt = COCO(os.path.join(root, REEF_SPLITS["retina_reef_val_full"], "annotations.json"))
    (full_image,) = full_gt.loadImgs(full_gt.getImgIds())
    full_annotations = full_gt.loadAnns(full_gt.getAnnIds(imgIds=[full_image["id"]]))
    full_boxes = _xyxy(full_annotations)
    full_categories = np.array([a["category_id"] for a in full_annotations])
    size = (full_image["height"], full_image["width"])
    settings = SliceSettings()  # the TEST.SLICE defaults
    windows = slice_windows(*size, settings.size, settings.overlap)
    rule = clip_rule()
    # The val tiles in the whole image: the 6 x 2 grid of 512-px tiles from its top left.
    tile_windows = slice_windows(*size, (512, 512), 0.0)
    rows = {}
    for sigma in SIGMAS:
        row = {"tiles": [], "tiles placed, no merge": [], "sliced, class-wise NMS 0.5": []}
        for repeat in range(REPEATS if sigma else 1):
            rng = np.random.default_rng(repeat)
            tile_results, placed = [], []
            for image_id in tiles_gt.getImgIds():
                annotations = tiles_gt.loadAnns(tiles_gt.getAnnIds(imgIds=[image_id]))
                boxes = _noisy(_xyxy(annotations), sigma, rng)
                scores = rng.uniform(size=len(boxes))
                tile_results += detection_results(image_id, boxes, scores, [a["category_id"] for a in annotations])
            row["tiles"].append(results_ap(tiles_gt, tile_results)["AP"])
            for window in tile_windows:
                kept, boxes, _ = clip_boxes_to_window(full_boxes, window, rule)
                boxes = _noisy(boxes, sigma, rng) + np.array(window[:2] * 2)
                placed += detection_results(full_image["id"], boxes, rng.uniform(size=len(boxes)), full_categories[kept])
            row["tiles placed, no merge"].append(results_ap(full_gt, placed)["AP"])
            views = []
            for window in windows:
                kept, boxes, _ = clip_boxes_to_window(full_boxes, window, rule)
                boxes = torch.as_tensor(_noisy(boxes, sigma, rng) + np.array(window[:2] * 2), dtype=torch.float32)
                # Partial flags come per edge margin below.
                views.append(WindowDetections(tuple(window), boxes,
                                              torch.as_tensor(rng.uniform(size=len(boxes)), dtype=torch.float32),
                                              torch.as_tensor(full_categories[kept], dtype=torch.int64),
                                              torch.zeros(len(boxes), dtype=torch.bool)))
            flagged = {m: with_edge_margin(views, size, m) for m in {v.edge_margin for v in VARIANTS.values()}}
            for name, variant in VARIANTS.items():
                merged = merge_views(flagged[variant.edge_margin], size, variant)
                row.setdefault(name, []).append(results_ap(full_gt, detection_results(
                    full_image["id"], merged.pred_boxes.tensor, merged.scores, merged.pred_classes.tolist()))["AP"])
            boxes, scores, classes = (torch.cat([getattr(v, f) for v in views]) for f in ("boxes", "scores", "classes"))
            keep = batched_nms(boxes, scores, classes, 0.5)
            row["sliced, class-wise NMS 0.5"].append(results_ap(full_gt, detection_results(
                full_image["id"], boxes[keep], scores[keep], classes[keep].tolist()))["AP"])
        rows[sigma] = {k: float(np.mean(v)) for k, v in row.items()}
        print(sigma, rows[sigma], flush=True)
    with open(os.path.join(HERE, "oracle.json"), "w") as f:
        json.dump({"sigmas": list(SIGMAS), "repeats": REPEATS, "rows": {str(k): v for k, v in rows.items()}}, f, indent=1)
    names = list(next(iter(rows.values())))
    lines = ["| setting \\ box noise (sigma x side) | " + " | ".join(f"{s:g}" for s in rows) + " |",
             "|---" * (len(rows) + 1) + "|"]
    lines += [f"| {n} | " + " | ".join(f"{r[n]:.1f}" for r in rows.values()) + " |" for n in names]
    lines.append("| best sliced - tiles | " + " | ".join(
        f"{max(v for n, v in r.items() if n.startswith('sliced')) - r['tiles']:+.1f}" for r in rows.values()) + " |")
    with open(os.path.join(HERE, "oracle.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
