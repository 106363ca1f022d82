"""
Why AP is low: every detection and missed object sorted into TIDE's error types (Bolya et al.,
ECCV 2020), the AP each type costs, PR curves per class and per size, and a gallery of the worst
false positives and missed objects (``tools/analyze_errors.py``).

Error types, at the foreground IoU ``t_f`` = 0.5 and the background IoU ``t_b`` = 0.1, for a
detection that is not a true positive (taken by score, highest first, as COCO matches them):
duplicate (IoU >= t_f with an object of its class already taken by a higher score),
classification (IoU >= t_f with an object of another class), localization (t_b <= IoU < t_f
with an object of its class), both (t_b <= IoU < t_f with an object of another class only),
background (IoU < t_b with every object); missed: an object no detection took and no
classification or localization error points at. The AP an error type costs is TIDE's: the AP50
once that type is fixed by an oracle (a classification error given its object's class, a
localization error its object's box, duplicates, "both" and background errors removed, missed
objects removed from the ground truth), minus the AP50 as it is.

AP itself is pycocotools' COCOeval, as COCOEvaluator computes it, so the figures agree with its
report. We attribute the errors ourselves, on TIDE's definitions, rather than use ``tidecv``: its
last release is from 2020 and it needs opencv-python (beside the headless OpenCV detectron2
uses), pandas and seaborn for what is a hundred lines here.
"""
import contextlib
import copy
import io
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from detectron2.structures import Boxes, BoxMode, pairwise_iou

__all__ = ["ERROR_TYPES", "FOREGROUND_IOU", "BACKGROUND_IOU", "coco_ground_truth", "attribute_errors",
           "error_breakdown", "plot_pr_curves", "draw_gallery", "errors_markdown"]

ERROR_TYPES = ("classification", "localization", "both", "duplicate", "background", "missed")
FOREGROUND_IOU, BACKGROUND_IOU = 0.5, 0.1


def coco_ground_truth(dataset_name: str):
    """The dataset's ground truth as a pycocotools COCO object, with the ids COCOEvaluator uses."""
    from pycocotools.coco import COCO

    from detectron2.data.datasets.coco import convert_to_coco_dict

    coco = COCO()
    with contextlib.redirect_stdout(io.StringIO()):
        coco.dataset = convert_to_coco_dict(dataset_name)
        coco.createIndex()
    return coco


def _xyxy(boxes_xywh: Sequence[Sequence[float]]) -> Boxes:
    """COCO XYWH boxes as detectron2 Boxes (XYXY)."""
    boxes = torch.as_tensor(np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4))
    return Boxes(BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS))


def attribute_errors(coco, detections: Sequence[Dict]) -> Tuple[List[Dict], List[Dict]]:
    """
    Each detection (COCO results: image_id, category_id, bbox XYWH, score) with its "type"
    ("true_positive" or an error type) and the ground-truth annotation id it points at
    ("gt_id", None for background); and the missed ground-truth annotations.
    """
    by_image: Dict[int, List[Dict]] = {}
    for d in detections:
        by_image.setdefault(d["image_id"], []).append(d)
    attributed, missed = [], []
    for image_id in coco.getImgIds():
        gts = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a.get("iscrowd", 0)]
        dets = sorted(by_image.get(image_id, []), key=lambda d: -d["score"])
        gt_boxes = _xyxy([a["bbox"] for a in gts])
        gt_classes = np.array([a["category_id"] for a in gts])
        ious = pairwise_iou(_xyxy([d["bbox"] for d in dets]), gt_boxes).numpy()
        taken = np.zeros(len(gts), dtype=bool)
        pointed_at = np.zeros(len(gts), dtype=bool)
        for i, det in enumerate(dets):
            same = gt_classes == det["category_id"]
            iou = ious[i]

            def best(mask):
                return int(np.argmax(np.where(mask, iou, -1)))

            if (same & ~taken & (iou >= FOREGROUND_IOU)).any():
                g, kind = best(same & ~taken & (iou >= FOREGROUND_IOU)), "true_positive"
                taken[g] = True
            elif (same & (iou >= FOREGROUND_IOU)).any():
                g, kind = best(same & (iou >= FOREGROUND_IOU)), "duplicate"
            elif (~same & (iou >= FOREGROUND_IOU)).any():
                g, kind = best(~same & (iou >= FOREGROUND_IOU)), "classification"
            elif (same & (iou >= BACKGROUND_IOU)).any():
                g, kind = best(same & (iou >= BACKGROUND_IOU)), "localization"
            elif (iou >= BACKGROUND_IOU).any():
                g, kind = best(iou >= BACKGROUND_IOU), "both"
            else:
                g, kind = None, "background"
            if kind in ("classification", "localization"):
                pointed_at[g] = True
            attributed.append(dict(det, type=kind, gt_id=None if g is None else gts[g]["id"]))
        missed += [gts[g] for g in range(len(gts)) if not taken[g] and not pointed_at[g]]
    return attributed, missed


def _evaluate(coco, detections: Sequence[Dict]):
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(coco, coco.loadRes(copy.deepcopy(list(detections))), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def _ap50(coco, detections: Sequence[Dict]) -> float:
    evaluation = _evaluate(coco, detections)
    return 0.0 if evaluation is None else max(0.0, 100 * float(evaluation.stats[1]))


def _fixed(coco, attributed: List[Dict], missed: List[Dict], kind: str):
    """(ground truth, detections) with the errors of ``kind`` fixed by the oracle."""
    if kind == "missed":
        gone = {a["id"] for a in missed}
        fixed_coco = copy.copy(coco)
        with contextlib.redirect_stdout(io.StringIO()):
            fixed_coco.dataset = dict(coco.dataset, annotations=[a for a in coco.dataset["annotations"]
                                                                 if a["id"] not in gone])
            fixed_coco.createIndex()
        return fixed_coco, attributed
    # An object a true positive already took: fixing an error onto it would make a duplicate,
    # which the oracle removes instead (as TIDE does).
    taken = {d["gt_id"] for d in attributed if d["type"] == "true_positive"}
    detections = []
    for d in attributed:
        if d["type"] != kind:
            detections.append(d)
        elif kind == "classification" and d["gt_id"] not in taken:
            detections.append(dict(d, category_id=coco.anns[d["gt_id"]]["category_id"]))
        elif kind == "localization" and d["gt_id"] not in taken:
            detections.append(dict(d, bbox=list(coco.anns[d["gt_id"]]["bbox"])))
        # duplicate, both, background, and fixes onto a taken object: removed
    return coco, detections


def _clean(detections: Sequence[Dict]) -> List[Dict]:
    return [{k: d[k] for k in ("image_id", "category_id", "bbox", "score")} for d in detections]


def error_breakdown(coco, detections: Sequence[Dict]) -> Dict:
    """
    {"AP50": as it is, "AP": COCO AP, "counts": {type: number}, "delta_AP50": {type: AP50 gained
    by fixing that type}, "attributed": detections with their type, "missed": annotations,
    "evaluation": the COCOeval of the detections as they are (for the PR curves)}.
    """
    attributed, missed = attribute_errors(coco, detections)
    evaluation = _evaluate(coco, _clean(detections))
    base = 0.0 if evaluation is None else max(0.0, 100 * float(evaluation.stats[1]))
    counts = {kind: sum(d["type"] == kind for d in attributed) for kind in ERROR_TYPES if kind != "missed"}
    counts["missed"] = len(missed)
    counts["true_positive"] = sum(d["type"] == "true_positive" for d in attributed)
    delta = {}
    for kind in ERROR_TYPES:
        if counts[kind] == 0:
            delta[kind] = 0.0
            continue
        fixed_coco, fixed = _fixed(coco, attributed, missed, kind)
        delta[kind] = _ap50(fixed_coco, _clean(fixed)) - base
    return {"AP50": base, "AP": 0.0 if evaluation is None else max(0.0, 100 * float(evaluation.stats[0])),
            "counts": counts, "delta_AP50": delta, "attributed": attributed, "missed": missed,
            "evaluation": evaluation}


def plot_pr_curves(evaluation, class_names: Sequence[str], path: str):
    """
    Precision against recall at IoU 0.5 and 0.75: per class (left two panels) and per object
    size, all classes (right two), from COCOeval's accumulated precision. Returns the Figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precision = evaluation.eval["precision"]  # (IoU 10, recall 101, class K, area 4, maxDets 3)
    recall = evaluation.params.recThrs
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    for column, (t, iou) in enumerate(((0, 0.5), (5, 0.75))):
        ax = axes[column]
        for k, name in enumerate(class_names):
            curve = precision[t, :, k, 0, 2]
            if (curve >= 0).any():
                ax.plot(recall, np.clip(curve, 0, None), label=f"{name} ({100 * curve[curve >= 0].mean():.1f})")
        ax.set_title(f"per class, IoU {iou} (AP in brackets)", fontsize=9)
        ax = axes[2 + column]
        for a, size in enumerate(("all", "small", "medium", "large")):
            curves = precision[t, :, :, a, 2]
            valid = (curves >= 0).all(axis=0)
            if valid.any():
                mean = curves[:, valid].mean(axis=1)
                ax.plot(recall, mean, label=f"{size} ({100 * mean.mean():.1f})")
        ax.set_title(f"per object size, IoU {iou} (AP in brackets)", fontsize=9)
    for ax in axes:
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return fig


def draw_gallery(coco, breakdown: Dict, metadata, folder: str, count: int = 8) -> List[str]:
    """
    The ``count`` highest-scoring false positives (their error type, score, and the object they
    point at) and the ``count`` largest missed objects, each drawn on its image with detectron2's
    Visualizer, as PNGs in ``folder``. Returns their paths.
    """
    import cv2

    from detectron2.utils.visualizer import Visualizer

    from ..data.mapper import read_image_checked

    os.makedirs(folder, exist_ok=True)
    names = {c["id"]: c["name"] for c in coco.dataset.get("categories", [])}
    false_positives = sorted((d for d in breakdown["attributed"] if d["type"] != "true_positive"),
                             key=lambda d: -d["score"])[:count]
    missed = sorted(breakdown["missed"], key=lambda a: -a["bbox"][2] * a["bbox"][3])[:count]
    paths = []
    for kind, items in (("false_positive", false_positives), ("missed", missed)):
        for i, item in enumerate(items):
            image = read_image_checked(coco.imgs[item["image_id"]]["file_name"], format="RGB")
            visualizer = Visualizer(image, metadata)
            if item.get("gt_id") is not None:
                visualizer.draw_box(_xyxy([coco.anns[item["gt_id"]]["bbox"]]).tensor[0].tolist(), edge_color="g")
            box = _xyxy([item["bbox"]]).tensor[0].tolist()
            visualizer.draw_box(box, edge_color="r" if kind == "false_positive" else "y")
            label = (f"{item['type']}: {names.get(item['category_id'], item['category_id'])} {item['score']:.2f}"
                     if kind == "false_positive" else f"missed: {names.get(item['category_id'], item['category_id'])}")
            visualizer.draw_text(label, (box[0], max(0, box[1] - 12)), horizontal_alignment="left", font_size=10)
            path = os.path.join(folder, f"{kind}_{i:02d}.png")
            cv2.imwrite(path, visualizer.get_output().get_image()[:, :, ::-1])
            paths.append(path)
    return paths


def errors_markdown(breakdown: Dict, dataset: str) -> str:
    """The table of error types: how many, and the AP50 fixing each would gain."""
    counts, delta = breakdown["counts"], breakdown["delta_AP50"]
    lines = [f"# Errors on `{dataset}`", "",
             f"COCO box AP {breakdown['AP']:.1f}, AP50 {breakdown['AP50']:.1f}; "
             f"{counts['true_positive']} true positives at IoU {FOREGROUND_IOU}.", "",
             "| error type | count | AP50 gained if fixed |", "|---|---|---|"]
    lines += [f"| {kind} | {counts[kind]} | {delta[kind]:+.1f} |" for kind in ERROR_TYPES]
    biggest = max(ERROR_TYPES, key=lambda k: delta[k])
    lines += ["", f"The largest cost: **{biggest}** ({delta[biggest]:+.1f} AP50 if fixed).", "",
              "- `pr_curves.png`: precision against recall at IoU 0.5 and 0.75, per class and per object size; "
              "a curve that drops early is a class or size whose high-scoring detections are often wrong.",
              "- `gallery/false_positive_*.png`: the highest-scoring false positives in red, with the object they "
              "point at in green and their error type.",
              "- `gallery/missed_*.png`: the largest objects no detection found, in yellow."]
    return "\n".join(lines) + "\n"
