"""
Comparing two sets of detections. Near-tied scores may leave a top-k or NMS in another order
after any change of arithmetic (a folded norm, an engine, another batch), so detections are
matched as sets, never by position.
"""
import json
from typing import Dict, List, Union

import torch
from torch import Tensor

from detectron2.structures import BoxMode, Instances

__all__ = ["Detections", "as_detections", "coco_results_by_image", "detection_differences", "same_detections"]

# {"boxes": (M, 4) XYXY, "scores": (M,), "classes": (M,)}
Detections = Dict[str, Tensor]


def as_detections(detections: Union[Instances, Detections]) -> Detections:
    """The boxes, scores and classes of an Instances (pred_*) or of such a dict, on the CPU."""
    if isinstance(detections, Instances):
        detections = {
            "boxes": detections.pred_boxes.tensor,
            "scores": detections.scores,
            "classes": detections.pred_classes,
        }
    return {k: detections[k].detach().to("cpu") for k in ("boxes", "scores", "classes")}


def coco_results_by_image(path: str) -> Dict[int, Detections]:
    """
    {image_id: detections} of a COCO results file (COCOEvaluator's coco_instances_results.json,
    predict.py's coco_results.json); boxes XYXY, classes as the file's category ids.
    """
    with open(path) as f:
        results = json.load(f)
    grouped: Dict[int, list] = {}
    for r in results:
        grouped.setdefault(r["image_id"], []).append(r)
    return {
        image_id: {
            "boxes": BoxMode.convert(torch.tensor([r["bbox"] for r in rs], dtype=torch.float64),
                                     BoxMode.XYWH_ABS, BoxMode.XYXY_ABS),
            "scores": torch.tensor([r["score"] for r in rs], dtype=torch.float64),
            "classes": torch.tensor([r["category_id"] for r in rs]),
        }
        for image_id, rs in grouped.items()
    }


def detection_differences(
    expected: Union[Instances, Detections], actual: Union[Instances, Detections],
    atol: float = 1e-3, rtol: float = 1e-3,
) -> List[str]:
    """
    How two sets of detections differ (an empty list: they are the same set). Each expected
    detection, highest score first, is matched to its own actual detection of the same class
    with score and box coordinates within ``atol + rtol * |expected|``.
    """
    a, b = as_detections(expected), as_detections(actual)
    if len(a["scores"]) != len(b["scores"]):
        return [f"{len(b['scores'])} detections instead of {len(a['scores'])}"]
    if len(a["scores"]) == 0:
        return []
    a_boxes, b_boxes = a["boxes"].double(), b["boxes"].double()
    a_scores, b_scores = a["scores"].double(), b["scores"].double()
    close = (
        (a["classes"].long()[:, None] == b["classes"].long()[None, :])
        & ((a_scores[:, None] - b_scores[None, :]).abs() <= atol + rtol * a_scores.abs()[:, None])
        & ((a_boxes[:, None] - b_boxes[None, :]).abs()
           <= atol + rtol * a_boxes.abs()[:, None]).all(-1)
    )
    used = torch.zeros(len(b_scores), dtype=torch.bool)
    unmatched = []
    for i in torch.argsort(a_scores, descending=True).tolist():
        free = (close[i] & ~used).nonzero()
        if len(free) == 0:
            unmatched.append(i)
            continue
        used[free[0, 0]] = True
    if not unmatched:
        return []
    i = unmatched[0]
    return [
        f"{len(unmatched)} of {len(a_scores)} detections have no match within atol {atol:g} / "
        f"rtol {rtol:g}, e.g. class {int(a['classes'][i])} score {float(a_scores[i]):.4f} box "
        f"{[round(float(v), 2) for v in a_boxes[i]]}"
    ]


def same_detections(expected, actual, atol: float = 1e-3, rtol: float = 1e-3) -> bool:
    """Whether :func:`detection_differences` finds none."""
    return not detection_differences(expected, actual, atol, rtol)
