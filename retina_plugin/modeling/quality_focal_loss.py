"""
A quality-aware classification target: the quality focal loss (Li et al., "Generalized Focal
Loss", 2020). Instead of 1, a foreground anchor's target for its class is the IoU of its own
predicted box with its ground-truth box, so the score learns to rank detections by how well
they are localized, which is what COCO AP at high IoU rewards; background targets stay 0.

The meta-architecture computes the targets (the IoUs, detached) for classification losses that
set ``needs_quality_targets = True`` and passes them as ``quality_targets``.
"""
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou

from ..config_domains import check_value
from .losses import CLASSIFICATION_LOSS_REGISTRY

__all__ = ["quality_focal_loss", "predicted_box_ious", "QualityFocalLoss"]


def quality_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, beta: float = 2.0
) -> torch.Tensor:
    """
    QFL(p, q) = -|q - p|^beta * (q log p + (1 - q) log(1 - p)) with p = sigmoid(logits),
    element-wise; with hard targets (q in {0, 1}) it is the focal loss with gamma = beta and no
    alpha weighting.

    Args:
        logits: (M, K) float.
        targets: (M, K) float in [0, 1], the soft targets q.
        beta: the focusing exponent >= 0.
    Returns:
        (M, K) the loss per element.
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if beta != 0:
        loss = loss * (targets - torch.sigmoid(logits)).abs().pow(beta)
    return loss


@torch.no_grad()
def predicted_box_ious(
    box2box_transform: Box2BoxTransform,
    pred_deltas: torch.Tensor,
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
) -> torch.Tensor:
    """
    Args:
        pred_deltas, anchors, gt_boxes: (F, 4) of F foreground anchors (boxes XYXY).
    Returns:
        (F,) the IoU of each anchor's predicted box with its ground-truth box (no gradient):
        the quality target of its class.
    """
    predicted_boxes = box2box_transform.apply_deltas(pred_deltas.float(), anchors.float())
    return matched_pairwise_iou(Boxes(predicted_boxes), Boxes(gt_boxes.float()))


@CLASSIFICATION_LOSS_REGISTRY.register()
class QualityFocalLoss(nn.Module):
    """
    The quality focal loss over (M, K) logits, summed. The focusing exponent is
    MODEL.RETINANET.FOCAL_LOSS_GAMMA (its beta; the paper's 2); FOCAL_LOSS_ALPHA is not used:
    the soft targets already weigh the foreground.
    """

    needs_quality_targets = True

    @configurable
    def __init__(self, *, beta: float = 2.0):
        super().__init__()
        check_value("MODEL.RETINANET.FOCAL_LOSS_GAMMA", beta)
        self.beta = beta

    @classmethod
    def from_config(cls, cfg):
        return {"beta": cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA}

    def forward(
        self, pred_logits: torch.Tensor, gt_labels: torch.Tensor, quality_targets: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            pred_logits: (M, K) logits of the anchors that are not ignored.
            gt_labels: (M,) int64 in [0, K]; K means background.
            quality_targets: (M,) float in [0, 1], the target of each foreground anchor's class
                (the IoU of its predicted box with its ground-truth box); ignored for background.
        Returns:
            scalar, the loss summed over anchors and classes.
        """
        num_classes = pred_logits.shape[1]
        one_hot = F.one_hot(gt_labels, num_classes + 1)[:, :num_classes].float()
        targets = one_hot * quality_targets.detach().float().clamp(0, 1)[:, None]
        # float32 even under autocast: the loss sums ~1e5 terms.
        return quality_focal_loss(pred_logits.float(), targets, self.beta).sum()

    def extra_repr(self):
        return f"beta={self.beta}"
