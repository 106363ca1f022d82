"""
Merging the detections of overlapping windows into one set for the image.

A detection whose box touches an inner edge of its window (an edge that is not the image's
border) may show only part of an object: it is a *partial* view. The merge is greedy by score,
class by class. The highest remaining detection gathers the others of its class that are the
same object:
- any two with IoU >= ``iou_threshold`` (the same object seen whole twice, as NMS does);
- a partial view and a view from another window that show one object: the other box clipped
  to the partial view's window has IoU >= ``partial_threshold`` with it (a cut part and the
  whole box); for two partial views, both clipped to the area their windows share (two cut
  parts of an object larger than the overlap);
and, transitively, the views that agree so with a gathered one (an object cut by several
windows is a chain of parts).
The group becomes one detection with the group's best score. Its box is the best whole view's
box when some window saw the object whole (the cut views are dropped); when every view is cut
(an object larger than the windows' overlap), it is the union of the views with ``"MERGE"``,
or the best view with ``"NMS"`` (which never makes a box the model did not predict).

Cost: linear in the detections. Only boxes that intersect can be one object, and a box lies in
its window, so candidate pairs come from pairs of windows that overlap, a pair of windows at a
time; only the pairs that may be one object are kept, and the greedy pass walks them.
"""
from typing import List, Tuple

import numpy as np
import torch

__all__ = ["MERGE_METHODS", "merge_window_detections"]

MERGE_METHODS = ("MERGE", "NMS")


def _clipped(boxes: np.ndarray, area: np.ndarray) -> np.ndarray:
    return np.concatenate([np.maximum(boxes[:, :2], area[:, :2]), np.minimum(boxes[:, 2:], area[:, 2:])], axis=1)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _area(_clipped(a, b))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = _intersection(a, b)
    return inter / np.maximum(_area(a) + _area(b) - inter, 1e-12)


def _joinable_pairs(b: np.ndarray, c: np.ndarray, seen_by: np.ndarray, cut: np.ndarray, iou_threshold: float,
                    partial_threshold: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """
    The pairs j, k (P,) of boxes of one class that intersect and may be one object: by IoU
    (P,) bool, and as parts (P,) bool (see the module). They are looked for among the boxes of
    each pair of views whose extents (window and boxes) overlap, one pair of views at a time,
    so memory holds the joinable pairs, not every pair of touching boxes.
    """
    views, view_of = np.unique(seen_by, axis=0, return_inverse=True)
    view_of = view_of.reshape(-1)
    order = np.argsort(view_of, kind="stable")
    starts = np.searchsorted(view_of[order], np.arange(len(views) + 1))
    members = [order[starts[v]:starts[v + 1]] for v in range(len(views))]
    # A box may reach past its window by a rounding: the extent covers both.
    extent = np.array([np.concatenate([np.minimum(w[:2], b[m, :2].min(axis=0)), np.maximum(w[2:], b[m, 2:].max(axis=0))])
                       for w, m in zip(views, members)]).reshape(-1, 4)
    found: List[Tuple[np.ndarray, ...]] = []
    for u in range(len(views)):
        others = np.arange(u, len(views))
        meets = ((extent[others, 0] < extent[u, 2]) & (extent[others, 2] > extent[u, 0])
                 & (extent[others, 1] < extent[u, 3]) & (extent[others, 3] > extent[u, 1]))
        meets[0] = True
        for v in others[meets]:
            mine, theirs = members[u], members[v]
            j = np.repeat(mine, len(theirs))
            k = np.tile(theirs, len(mine))
            keep = (c[j] == c[k]) & (j != k)
            if u == v:
                keep &= j < k
            j, k = j[keep], k[keep]
            touching = _intersection(b[j], b[k]) > 0
            j, k = j[touching], k[touching]
            by_iou = _iou(b[j], b[k]) >= iou_threshold
            # Views from one window are never parts of one object: the model's NMS told them apart.
            by_parts = np.zeros(len(j), dtype=bool)
            if u != v:
                by_parts = (cut[j] | cut[k]) & (_agreement(b, seen_by, cut, j, k) >= partial_threshold)
            joinable = by_iou | by_parts
            found.append((j[joinable], k[joinable], by_iou[joinable], by_parts[joinable]))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, bool)
    return tuple(np.concatenate(x) for x in zip(*found))


def _agreement(b: np.ndarray, seen_by: np.ndarray, cut: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
    """
    (P,) how well boxes j and k (P pairs) show one object, as IoU of what each window would see
    of it: a cut view against the other box clipped to the cut view's window; two cut views,
    both clipped to the area their windows share. Symmetric in j and k.
    """
    shared = _clipped(seen_by[j], seen_by[k])
    area = np.where((cut[j] & cut[k])[:, None], shared, np.where(cut[j][:, None], seen_by[j], seen_by[k]))
    return _iou(_clipped(b[j], area), _clipped(b[k], area))


def merge_window_detections(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, windows: torch.Tensor, partial: torch.Tensor,
    method: str = "NMS", iou_threshold: float = 0.5, partial_threshold: float = 0.9,
    max_detections: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    Args:
        boxes: (N, 4) XYXY in image pixels; scores: (N,); classes: (N,) int64;
        windows: (N, 4) XYXY, the window each box was found in (the image for a whole-image view);
        partial: (N,) bool, the box touches an inner window edge.
        method: "MERGE" or "NMS" (see the module).
        max_detections: keep the best this many (0: all).
    Returns:
        boxes (M, 4), scores (M,), classes (M,), best score first.
    """
    if method not in MERGE_METHODS:
        raise ValueError(f"merge method {method!r}: choose one of {MERGE_METHODS}")
    device, dtype = boxes.device, boxes.dtype
    b = boxes.detach().cpu().double().numpy().reshape(-1, 4)
    s = scores.detach().cpu().double().numpy().reshape(-1)
    c = classes.detach().cpu().numpy().reshape(-1)
    cut = partial.detach().cpu().numpy().reshape(-1).astype(bool)
    seen_by = windows.detach().cpu().double().numpy().reshape(-1, 4)
    n = len(b)

    j, k, same_object, parts = _joinable_pairs(b, c, seen_by, cut, iou_threshold, partial_threshold)
    # Both directions, as adjacency lists (CSR) of each box: neighbour, joined by IoU, by parts.
    source = np.concatenate([j, k])
    target = np.concatenate([k, j])
    by_iou = np.concatenate([same_object, same_object])
    by_parts = np.concatenate([parts, parts])
    order = np.argsort(source, kind="stable")
    target, by_iou, by_parts = target[order].tolist(), by_iou[order].tolist(), by_parts[order].tolist()
    pointer = np.searchsorted(source[order], np.arange(n + 1)).tolist()

    taken = [False] * n
    out_boxes, out_scores, out_classes = [], [], []
    for i in np.argsort(-s, kind="stable").tolist():
        if taken[i]:
            continue
        # The seed's duplicates by IoU and its parts; then, transitively, the parts of those
        # (an object cut by several windows is a chain of overlapping parts).
        taken[i] = True
        group, frontier = [i], [i]
        while frontier:
            m = frontier.pop()
            for e in range(pointer[m], pointer[m + 1]):
                other = target[e]
                if not taken[other] and (by_parts[e] or (m == i and by_iou[e])):
                    taken[other] = True
                    group.append(other)
                    frontier.append(other)
        group = np.asarray(group)
        whole = group[~cut[group]]
        if len(whole):
            box = b[whole[np.argmax(s[whole])]]
        elif method == "MERGE":
            box = np.concatenate([b[group, :2].min(axis=0), b[group, 2:].max(axis=0)])
        else:
            box = b[i]
        out_boxes.append(box)
        out_scores.append(s[group].max())
        out_classes.append(c[i])
    if max_detections > 0:
        out_boxes, out_scores, out_classes = (x[:max_detections] for x in (out_boxes, out_scores, out_classes))
    return (torch.as_tensor(np.asarray(out_boxes, dtype=np.float64).reshape(-1, 4), dtype=dtype, device=device),
            torch.as_tensor(np.asarray(out_scores, dtype=np.float64), dtype=scores.dtype, device=device),
            torch.as_tensor(np.asarray(out_classes, dtype=np.int64), dtype=torch.int64, device=device))
