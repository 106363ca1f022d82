"""
Online hard example mining (OHEM) as a classification loss: the paper's Table 1d baseline
against the focal loss. Instead of down-weighting easy anchors, OHEM keeps only the hardest
ones by loss (optionally after NMS over anchors, and at a fixed negative:positive ratio) and
applies plain sigmoid cross entropy to them.

It needs to know which image each anchor comes from and where it is, so the meta-architecture
passes ``image_idxs`` and ``anchor_boxes`` to classification losses that set
``needs_anchor_context = True`` (the others keep the two-argument call).
"""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import nms

from detectron2.config import configurable

from .losses import CLASSIFICATION_LOSS_REGISTRY

__all__ = ["OHEMLoss", "select_hard_examples"]


def select_hard_examples(
    losses: torch.Tensor,
    is_positive: torch.Tensor,
    image_idxs: torch.Tensor,
    anchor_boxes: Optional[torch.Tensor] = None,
    batch_size_per_image: int = 128,
    neg_pos_ratio: float = 3.0,
    nms_thresh: float = 0.7,
) -> torch.Tensor:
    """
    Indices of the hardest anchors of each image.

    Args:
        losses: (M,) per-anchor loss, the hardness score.
        is_positive: (M,) bool, anchors matched to a ground-truth box.
        image_idxs: (M,) int64, the image of each anchor.
        anchor_boxes: (M, 4) XYXY, for NMS over anchors; None skips NMS.
        batch_size_per_image: at most this many anchors per image.
        neg_pos_ratio: r > 0: the hardest min(#pos, B / (1 + r)) positives and
            r * max(that, 1) hardest negatives (1:3 is r = 3), both capped by B and by what the
            image has; r <= 0: the B hardest anchors, whatever their label.
        nms_thresh: IoU of NMS over the anchors scored by loss, so that one hard region does not
            fill the batch; <= 0 or >= 1 disables it.
    Returns:
        (S,) int64 indices into the M anchors.
    """
    selected = []
    use_nms = anchor_boxes is not None and 0 < nms_thresh < 1
    for image in torch.unique(image_idxs):
        idxs = torch.nonzero(image_idxs == image).squeeze(1)
        if use_nms:
            # nms returns the survivors sorted by decreasing loss.
            idxs = idxs[nms(anchor_boxes[idxs].float(), losses[idxs].float(), nms_thresh)]
        else:
            idxs = idxs[torch.argsort(losses[idxs], descending=True)]
        if neg_pos_ratio <= 0:
            selected.append(idxs[:batch_size_per_image])
            continue
        positives = idxs[is_positive[idxs]]
        negatives = idxs[~is_positive[idxs]]
        num_pos = min(len(positives), int(batch_size_per_image / (1 + neg_pos_ratio)))
        num_neg = min(
            len(negatives),
            batch_size_per_image - num_pos,
            int(round(neg_pos_ratio * max(num_pos, 1))),
        )
        selected += [positives[:num_pos], negatives[:num_neg]]
    if not selected:
        return torch.zeros(0, dtype=torch.long, device=losses.device)
    return torch.cat(selected)


@CLASSIFICATION_LOSS_REGISTRY.register()
class OHEMLoss(nn.Module):
    """
    Sigmoid cross entropy (summed over the K classes of an anchor) over the hardest anchors
    of each image only, chosen by that loss; see :func:`select_hard_examples`.
    """

    needs_anchor_context = True

    @configurable
    def __init__(
        self,
        *,
        batch_size_per_image: int = 128,
        neg_pos_ratio: float = 3.0,
        nms_thresh: float = 0.7,
    ):
        super().__init__()
        self.batch_size_per_image = batch_size_per_image
        self.neg_pos_ratio = neg_pos_ratio
        self.nms_thresh = nms_thresh

    @classmethod
    def from_config(cls, cfg):
        ohem = cfg.MODEL.FOCAL_RETINANET.OHEM
        return {
            "batch_size_per_image": ohem.BATCH_SIZE_PER_IMAGE,
            "neg_pos_ratio": ohem.NEG_POS_RATIO,
            "nms_thresh": ohem.NMS_THRESH,
        }

    def forward(
        self,
        pred_logits: torch.Tensor,
        gt_labels: torch.Tensor,
        image_idxs: Optional[torch.Tensor] = None,
        anchor_boxes: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            pred_logits: (M, K) logits of the anchors that are not ignored.
            gt_labels: (M,) int64 in [0, K]; K means background.
            image_idxs: (M,) the image of each anchor; None: all from one image.
            anchor_boxes: (M, 4) the anchors, for NMS; None: no NMS.
        Returns:
            scalar, the cross entropy summed over the selected anchors and all classes.
        """
        num_classes = pred_logits.shape[1]
        targets = F.one_hot(gt_labels, num_classes + 1)[:, :num_classes].float()
        per_anchor = F.binary_cross_entropy_with_logits(
            pred_logits.float(), targets, reduction="none"
        ).sum(dim=1)
        if image_idxs is None:
            image_idxs = torch.zeros_like(gt_labels)
        selected = select_hard_examples(
            per_anchor.detach(),
            gt_labels != num_classes,
            image_idxs,
            anchor_boxes,
            self.batch_size_per_image,
            self.neg_pos_ratio,
            self.nms_thresh,
        )
        return per_anchor[selected].sum()

    def extra_repr(self):
        return (
            f"batch_size_per_image={self.batch_size_per_image}, "
            f"neg_pos_ratio={self.neg_pos_ratio}, nms_thresh={self.nms_thresh}"
        )
