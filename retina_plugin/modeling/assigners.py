"""
Anchor label assignment of FocalRetinaNet, chosen by MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER:

- "IoU": the paper's rule, detectron2's ``Matcher`` on the IoU matrix (foreground at IoU >= 0.5,
  background below 0.4, ignored between, each box also keeps its highest-IoU anchors);
- "ATSS": adaptive training sample selection (Zhang et al., CVPR 2020, "Bridging the Gap
  Between Anchor-based and Anchor-free Detection").

An assigner labels the anchors of one image:
``assigner(gt_boxes: Boxes (G, 4), anchors: Boxes (R, 4), num_anchors_per_level: List[int])``
returns ``matched_idxs`` (R,) int64, the box each anchor is assigned to (any value where it is
background), and ``match_labels`` (R,) int8: 1 foreground, 0 background, -1 ignored, as
detectron2's ``Matcher`` does. Anchors come concatenated over levels, highest resolution first,
all anchors of one location next to each other (DefaultAnchorGenerator's order).
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from detectron2.config import configurable
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils.registry import Registry

from ..config_domains import check_value
from .registry import get_registered

__all__ = [
    "ANCHOR_ASSIGNER_REGISTRY",
    "ANCHOR_ASSIGNER_ALIASES",
    "build_anchor_assigner",
    "IoUAssigner",
    "ATSSAssigner",
]

ANCHOR_ASSIGNER_REGISTRY = Registry("FOCAL_RETINANET_ANCHOR_ASSIGNER")
ANCHOR_ASSIGNER_REGISTRY.__doc__ = """
Anchor label assigners of FocalRetinaNet, chosen by MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER.
The config names a class registered here or one of ANCHOR_ASSIGNER_ALIASES. Each is called
with ``(cfg, num_anchors_per_location)`` (``@configurable``) and maps
(gt_boxes, anchors, num_anchors_per_level) to (matched_idxs (R,), match_labels (R,)).
"""

# Short names for MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER.
ANCHOR_ASSIGNER_ALIASES = {"IoU": "IoUAssigner", "ATSS": "ATSSAssigner"}


def build_anchor_assigner(cfg, num_anchors_per_location: int) -> nn.Module:
    """
    Args:
        num_anchors_per_location: A, anchors per feature-map location (the same on all levels).
    """
    return get_registered(
        ANCHOR_ASSIGNER_REGISTRY, cfg.MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER, "MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER",
        ANCHOR_ASSIGNER_ALIASES,
    )(cfg, num_anchors_per_location)


@ANCHOR_ASSIGNER_REGISTRY.register()
class IoUAssigner(nn.Module):
    """
    The paper's IoU thresholds through detectron2's Matcher (MODEL.RETINANET.IOU_THRESHOLDS /
    IOU_LABELS, MODEL.FOCAL_RETINANET.ALLOW_LOW_QUALITY_MATCHES).
    """

    @configurable
    def __init__(self, *, matcher: Matcher):
        super().__init__()
        self.matcher = matcher

    @classmethod
    def from_config(cls, cfg, num_anchors_per_location: int):
        return {
            "matcher": Matcher(
                cfg.MODEL.RETINANET.IOU_THRESHOLDS,
                cfg.MODEL.RETINANET.IOU_LABELS,
                allow_low_quality_matches=cfg.MODEL.FOCAL_RETINANET.ALLOW_LOW_QUALITY_MATCHES,
            )
        }

    def forward(
        self, gt_boxes: Boxes, anchors: Boxes, num_anchors_per_level: Optional[List[int]] = None
    ) -> Tuple[Tensor, Tensor]:
        # The IoU rule is the same on every level: the levels are not needed.
        return self.matcher(pairwise_iou(gt_boxes, anchors))

    def extra_repr(self):
        m = self.matcher
        return (
            f"thresholds={m.thresholds[1:-1]}, labels={m.labels}, "
            f"allow_low_quality_matches={m.allow_low_quality_matches}"
        )


@ANCHOR_ASSIGNER_REGISTRY.register()
class ATSSAssigner(nn.Module):
    """
    ATSS: for each box, the candidates are, on every level, the ``topk * A`` anchors whose
    centers are closest (L2) to the box center (``topk`` locations with their A anchors each).
    A candidate is foreground when its IoU with the box is >= mean + std of the candidates'
    IoUs and its center lies inside the box. An anchor foreground for several boxes goes to
    the one of highest IoU. Nothing is ignored.
    """

    # How far (pixels) inside the box an anchor center must lie, as in the ATSS code.
    CENTER_MARGIN = 0.01

    @configurable
    def __init__(self, *, topk: int = 9, num_anchors_per_location: int = 1):
        super().__init__()
        check_value("MODEL.FOCAL_RETINANET.ATSS_TOPK", topk)
        self.topk = topk
        self.num_anchors_per_location = num_anchors_per_location

    @classmethod
    def from_config(cls, cfg, num_anchors_per_location: int):
        return {
            "topk": cfg.MODEL.FOCAL_RETINANET.ATSS_TOPK,
            "num_anchors_per_location": num_anchors_per_location,
        }

    def forward(
        self, gt_boxes: Boxes, anchors: Boxes, num_anchors_per_level: Optional[List[int]]
    ) -> Tuple[Tensor, Tensor]:
        """
        Args:
            gt_boxes: (G, 4), G >= 1.
            anchors: (R, 4), levels concatenated.
            num_anchors_per_level: R_l per level, summing to R. Required: the candidates are
                picked per level.
        Returns:
            matched_idxs (R,) int64 and match_labels (R,) int8 in {0, 1}.
        """
        if num_anchors_per_level is None:
            raise ValueError(
                "ATSS picks its candidates per level: give the anchors per level (a list of "
                "Boxes, as detectron2's label_anchors takes) or num_anchors_per_level"
            )
        if sum(num_anchors_per_level) != len(anchors):
            raise ValueError(
                f"num_anchors_per_level {num_anchors_per_level} does not add up to the "
                f"{len(anchors)} anchors"
            )
        ious = pairwise_iou(gt_boxes, anchors)  # (G, R)
        gt_centers = gt_boxes.get_centers()  # (G, 2)
        anchor_centers = anchors.get_centers()  # (R, 2)
        distances = torch.cdist(gt_centers, anchor_centers)  # (G, R)

        # Candidates: the closest anchors of each level, as indices into all R anchors.
        candidates = []
        start = 0
        for num_level in num_anchors_per_level:
            k = min(self.topk * self.num_anchors_per_location, num_level)
            if k > 0:
                _, idxs = distances[:, start : start + num_level].topk(k, dim=1, largest=False)
                candidates.append(idxs + start)
            start += num_level
        candidates = torch.cat(candidates, dim=1)  # (G, C)

        candidate_ious = ious.gather(1, candidates)  # (G, C)
        std = candidate_ious.std(dim=1) if candidates.shape[1] > 1 else 0.0
        thresholds = candidate_ious.mean(dim=1) + std  # (G,)
        positive = candidate_ious >= thresholds[:, None]

        # Anchor center strictly inside the box: min distance to its four sides > margin.
        centers = anchor_centers[candidates]  # (G, C, 2)
        box = gt_boxes.tensor[:, None, :]  # (G, 1, 4)
        sides = torch.stack(
            [
                centers[..., 0] - box[..., 0],
                centers[..., 1] - box[..., 1],
                box[..., 2] - centers[..., 0],
                box[..., 3] - centers[..., 1],
            ],
            dim=-1,
        )
        positive &= sides.min(dim=-1).values > self.CENTER_MARGIN

        positive_mask = torch.zeros_like(ious, dtype=torch.bool)
        positive_mask.scatter_(1, candidates, positive)
        # Where an anchor is foreground for several boxes, the highest IoU wins.
        masked_ious = torch.where(positive_mask, ious, ious.new_full((), -1.0))
        _, matched_idxs = masked_ious.max(dim=0)
        match_labels = positive_mask.any(dim=0).to(torch.int8)
        return matched_idxs, match_labels

    def extra_repr(self):
        return f"topk={self.topk}, num_anchors_per_location={self.num_anchors_per_location}"
