"""
Sliced prediction on the whole reef val area (issue 29's targets): one trained reef model,
COCO AP on
- the val tiles (retina_reef_val, 12 tiles of 512 px at half scale: the AP the model is known by);
- the val area as one image (retina_reef_val_full, 3072 x 1024) resized whole to the test size;
- the val tiles' own detections placed in that image, unmerged: the tile AP's detections
  against the uncut boxes;
- the same image sliced into 512-px windows (each resized as a tile), and into 1024-px windows
  at the tiles' half scale (TEST.SLICE.SCALE), merged by our rules (three partial-view IoUs) and,
  on the very same window detections, by sahi's (NMS, NMM, GREEDYNMM; only if ``sahi`` imports:
  ``pip install --target /tmp/sahi_site --no-deps sahi==0.12.8 shapely`` and
  ``PYTHONPATH=/tmp/sahi_site``; not a dependency of the project, see docs/prediction.md);
- the whole image at the tiles' scale in one input;
and the sliced AP through the real entry point (``Trainer.test`` with ``TEST.SLICE.ENABLED``),
which must equal this script's own.

    python experiment_records/large_images/run.py output/reef_v2_adamw/model_final.pth [configs/reef_R18_cpu_v2_adamw.yaml [TAG]]

Writes results{TAG}.json / results{TAG}.md here and, without a TAG, docs/large_image_reef.jpg (the val area with the
sliced detections scoring >= 0.4, downscaled).
"""
import json
import os
import sys
import time
from dataclasses import replace

import cv2
import numpy as np
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.layers import batched_nms
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retina_plugin.config import load_config, test_resize
from retina_plugin.data.reef import REEF_SPLITS, reef_root
from retina_plugin.data.windows import slice_windows
from retina_plugin.slicing.inference import SliceSettings, detect_in_windows, detect_in_full_image, merge_views
from retina_plugin.training.trainer import Trainer
from retina_plugin.visualization import draw_detections

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def detection_results(image_id: int, boxes, scores, category_ids) -> list:
    """COCO result dicts: boxes (N, 4) XYXY, scores (N,) tensors, ``category_ids`` the json ids (N,)."""
    return [{"image_id": image_id, "category_id": int(c), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
             "score": float(s)} for b, s, c in zip(boxes.tolist(), scores.tolist(), category_ids)]


def results_ap(gt: COCO, results: list, max_dets: int = 1000) -> dict:
    """COCO AP, AP50 and AP75 of ``results`` (all 0 without any), up to ``max_dets`` an image."""
    if not results:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluation.params.maxDets = [1, 10, max_dets]
    evaluation.evaluate()
    evaluation.accumulate()
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # T, R, K at area "all", max dets

    def mean(p):
        return float(np.mean(p[p > -1]) * 100) if (p > -1).any() else 0.0

    return {"AP": mean(precision), "AP50": mean(precision[0]), "AP75": mean(precision[5])}


def coco_ap(gt: COCO, image_id: int, instances: Instances, category_ids, max_dets: int = 1000):
    results = detection_results(image_id, instances.pred_boxes.tensor, instances.scores,
                                [category_ids[c] for c in instances.pred_classes.tolist()])
    return {**results_ap(gt, results, max_dets), "detections": len(results)}


def sahi_merge(views, image_size, method: str, metric: str):
    from sahi.postprocess.combine import GreedyNMMPostprocess, NMMPostprocess, NMSPostprocess
    from sahi.prediction import ObjectPrediction

    height, width = image_size
    predictions = [ObjectPrediction(bbox=b, category_id=int(c), category_name=str(int(c)), score=float(s),
                                    shift_amount=[0, 0], full_shape=[height, width])
                   for v in views for b, s, c in zip(v.boxes.tolist(), v.scores.tolist(), v.classes.tolist())]
    post = {"NMS": NMSPostprocess, "NMM": NMMPostprocess, "GREEDYNMM": GreedyNMMPostprocess}[method](
        match_threshold=0.5, match_metric=metric, class_agnostic=False)
    merged = post(predictions)
    boxes = torch.tensor([p.bbox.to_xyxy() for p in merged], dtype=torch.float32).reshape(-1, 4)
    scores = torch.tensor([p.score.value for p in merged], dtype=torch.float32)
    classes = torch.tensor([p.category.id for p in merged], dtype=torch.int64)
    order = scores.argsort(descending=True)[:1000]
    return Instances(image_size, pred_boxes=Boxes(boxes[order]), scores=scores[order], pred_classes=classes[order])


def concatenated(views, image_size):
    boxes, scores, classes = (torch.cat([getattr(v, f) for v in views]) for f in ("boxes", "scores", "classes"))
    order = scores.argsort(descending=True)[:1000]
    return Instances(image_size, pred_boxes=Boxes(boxes[order]), scores=scores[order], pred_classes=classes[order])


def plain_nms(views, image_size):
    boxes, scores, classes = (torch.cat([getattr(v, f) for v in views]) for f in ("boxes", "scores", "classes"))
    keep = batched_nms(boxes, scores, classes, 0.5)[:1000]
    return Instances(image_size, pred_boxes=Boxes(boxes[keep]), scores=scores[keep], pred_classes=classes[keep])


def load_val_full():
    """retina_reef_val_full's dataset dict, its COCO ground truth, contiguous -> json category ids, and its image."""
    (record,) = DatasetCatalog.get("retina_reef_val_full")
    gt = COCO(os.path.join(reef_root(), REEF_SPLITS["retina_reef_val_full"], "annotations.json"))
    mapping = MetadataCatalog.get("retina_reef_val_full").thing_dataset_id_to_contiguous_id
    return record, gt, {v: k for k, v in mapping.items()}, cv2.imread(record["file_name"])


def main(weights: str, config: str = "configs/reef_R18_cpu_v2_adamw.yaml", tag: str = "") -> int:
    torch.set_num_threads(2)
    cfg = load_config(config, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", os.path.join(REPO, "output", "large_images_eval")])
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(weights)
    rows = {}

    start = time.perf_counter()
    tiles = Trainer.test(_with(cfg, "retina_reef_val"), model)["bbox"]
    rows["val tiles (12 x 512 px, each at half scale)"] = {k: tiles[k] for k in ("AP", "AP50", "AP75")}
    tiles_seconds = time.perf_counter() - start
    whole = Trainer.test(_with(cfg, "retina_reef_val_full"), model)["bbox"]
    rows["val area as one image, resized whole to the test size"] = {k: whole[k] for k in ("AP", "AP50", "AP75")}

    record, gt, category_ids, image = load_val_full()
    size = image.shape[:2]
    resize = test_resize(cfg)
    timings = {}
    base = SliceSettings.from_config(cfg)
    # The val tiles themselves (6 x 2 windows of 512 px without overlap), their detections placed
    # in the whole image as they are: what the tile AP's detections score against uncut boxes.
    tiles_in_place = replace(base, size=(512, 512), scale=0.0, overlap=0.0)
    views = [d for batch in detect_in_windows(model, image, slice_windows(*size, (512, 512), 0.0), tiles_in_place, resize)
             for d in batch]
    rows["the val tiles' own detections placed in the whole image, no merge"] = coco_ap(
        gt, record["image_id"], concatenated(views, size), category_ids)
    # (window side, scale, overlap): 512-px windows resized by the test resize (256: half scale,
    # as the tiles), and larger windows at that same half scale (TEST.SLICE.SCALE 0.5).
    for side, scale, overlap in ((512, 0.0, 0.25), (512, 0.0, 0.5), (1024, 0.5, 0.25), (1024, 0.5, 0.5)):
        settings = replace(base, size=(side, side), scale=scale, overlap=overlap)
        label = f"sliced {side} px" + (f" at scale {scale}" if scale else "") + f", overlap {overlap}"
        windows = slice_windows(*size, settings.size, overlap)
        start = time.perf_counter()
        views = [d for batch in detect_in_windows(model, image, windows, settings, resize) for d in batch]
        seconds = time.perf_counter() - start
        timings[label] = {"windows": len(windows), "seconds": seconds}
        variants = {f"{label}, ours {method}, partial IoU {t}": merge_views(
            views, size, replace(settings, merge=method, partial_threshold=t)) for method in ("MERGE", "NMS")
                    for t in (0.5, 0.7, 0.9)}
        variants[f"{label}, class-wise NMS 0.5 without the edge rule"] = plain_nms(views, size)
        if side == 512 and overlap == 0.25:
            full = detect_in_full_image(model, image, resize)
            for method in ("MERGE", "NMS"):
                variants[f"{label}, ours {method}, partial IoU {settings.partial_threshold} + whole-image pass"] = merge_views(
                    views + [full], size, replace(settings, merge=method))
        try:
            for method, metric in (("NMS", "IOU"), ("NMM", "IOS"), ("GREEDYNMM", "IOS")):
                variants[f"{label}, sahi {method} {metric} 0.5"] = sahi_merge(views, size, method, metric)
        except ImportError:
            print("sahi is not installed: its merges are left out (see this script's docstring)")
        for name, instances in variants.items():
            rows[name] = coco_ap(gt, record["image_id"], instances, category_ids)
            print(f"{name}: {rows[name]}", flush=True)
    # The whole image at the tiles' scale in one call: what slicing bounds the memory of.
    settings = replace(base, size=size, scale=0.5, overlap=0.0)
    start = time.perf_counter()
    (views,) = detect_in_windows(model, image, [(0, 0, size[1], size[0])], settings, resize)
    timings["whole image at scale 0.5, one input"] = {"windows": 1, "seconds": time.perf_counter() - start}
    rows["val area as one image at scale 0.5 (one 1536 x 512 input)"] = coco_ap(
        gt, record["image_id"], merge_views(views, size, settings), category_ids)
    if not tag:
        _draw(model, image, size, base, resize)
    entry = Trainer.test(_with(cfg, "retina_reef_val_full", sliced=True), model)["bbox"]
    rows["Trainer.test with TEST.SLICE.ENABLED (the config's TEST.SLICE)"] = {k: entry[k] for k in ("AP", "AP50", "AP75")}
    timings["val tiles, plain evaluation"] = {"seconds": tiles_seconds}
    results = {"weights": weights, "config": config, "rows": rows, "timings": timings}
    with open(os.path.join(HERE, f"results{tag}.json"), "w") as f:
        json.dump(results, f, indent=1)
    lines = ["| setting | AP | AP50 | AP75 |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['AP']:.1f} | {r['AP50']:.1f} | {r['AP75']:.1f} |" for name, r in rows.items()]
    with open(os.path.join(HERE, f"results{tag}.md"), "w") as f:
        f.write("\n".join(lines) + "\n\n" + json.dumps(timings, indent=1) + "\n")
    print("\n".join(lines))
    print(json.dumps(timings, indent=1))
    return 0


def _draw(model, image, size, settings, resize) -> None:
    """docs/large_image_reef.jpg: the sliced detections scoring >= 0.4, at half size."""
    windows = slice_windows(*size, settings.size, settings.overlap)
    chosen = merge_views([d for batch in detect_in_windows(model, image, windows, settings, resize) for d in batch],
                         size, settings)
    drawn = draw_detections(image, chosen[chosen.scores >= 0.4], MetadataCatalog.get("retina_reef_val_full"))
    small = cv2.resize(drawn, (drawn.shape[1] // 2, drawn.shape[0] // 2), interpolation=cv2.INTER_AREA)
    cv2.imwrite(os.path.join(REPO, "docs", "large_image_reef.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 80])


def _with(cfg, dataset: str, sliced: bool = False):
    c = cfg.clone()
    c.defrost()
    c.DATASETS.TEST = (dataset,)
    c.TEST.SLICE.ENABLED = sliced
    c.freeze()
    return c


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
