"""
Losses of FocalRetinaNet: the sigmoid focal loss and the classification / box losses that
yaml picks by name from two registries.

A classification loss is called as ``loss(pred_logits (M, K), gt_labels (M,))`` with the
labels in [0, K] (K = background) and returns the sum over the M anchors; a box loss as
``loss(pred_deltas (M, 4), anchors (M, 4), gt_boxes (M, 4))`` over the foreground anchors
(boxes XYXY, absolute pixels), also summed. Normalization is the meta-architecture's job.
"""
import torch
from fvcore.nn import giou_loss, smooth_l1_loss
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ciou_loss, diou_loss
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.utils.registry import Registry

from ..config_domains import check_value
from .fused_focal_loss import fused_sigmoid_focal_loss_from_labels
from .registry import get_registered

__all__ = [
    "sigmoid_focal_loss",
    "CLASSIFICATION_LOSS_REGISTRY",
    "BOX_LOSS_REGISTRY",
    "BOX_LOSS_TYPE_ALIASES",
    "build_classification_loss",
    "build_box_loss",
    "SigmoidFocalLoss",
    "SigmoidBCELoss",
    "SmoothL1BoxLoss",
    "L1BoxLoss",
    "GIoUBoxLoss",
    "DIoUBoxLoss",
    "CIoUBoxLoss",
]

CLASSIFICATION_LOSS_REGISTRY = Registry("FOCAL_RETINANET_CLASSIFICATION_LOSS")
CLASSIFICATION_LOSS_REGISTRY.__doc__ = """
Classification losses of FocalRetinaNet, chosen by MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS.
Each is called with ``cfg`` (``@configurable``) and maps (logits (M, K), labels (M,)) to a sum.
"""

BOX_LOSS_REGISTRY = Registry("FOCAL_RETINANET_BOX_LOSS")
BOX_LOSS_REGISTRY.__doc__ = """
Box regression losses of FocalRetinaNet, chosen by MODEL.RETINANET.BBOX_REG_LOSS_TYPE (a
detectron2 name from BOX_LOSS_TYPE_ALIASES, or a class name registered here).
Each maps (pred_deltas (M, 4), anchors (M, 4), gt_boxes (M, 4)) to a sum.
"""

# detectron2's names for MODEL.RETINANET.BBOX_REG_LOSS_TYPE, so its yaml files keep working.
BOX_LOSS_TYPE_ALIASES = {
    "smooth_l1": "SmoothL1BoxLoss",
    "l1": "L1BoxLoss",
    "giou": "GIoUBoxLoss",
    "diou": "DIoUBoxLoss",
    "ciou": "CIoUBoxLoss",
}


def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """
    FL(p_t) = -alpha_t * (1 - p_t)^gamma * log(p_t) with p = sigmoid(inputs), element-wise
    (:paper:`RetinaNet`, eq. 5). Same signature and values as
    ``torchvision.ops.sigmoid_focal_loss``.

    Args:
        inputs: logits, a float tensor of any shape.
        targets: same shape as ``inputs``; 1 for positives, 0 for negatives.
        alpha: weight of the positives in [0, 1] (negatives get 1 - alpha);
            ``alpha < 0`` disables the weighting.
        gamma: focusing parameter >= 0; 0 gives (alpha-balanced) binary cross entropy.
        reduction: "none" (shaped like ``inputs``), "mean" or "sum" (scalars).
    """
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(
            f"Invalid value for arg 'reduction': {reduction!r}; "
            "supported reduction modes: 'none', 'mean', 'sum'"
        )
    # log(p_t) from the logits directly: stable for any |inputs|.
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    if gamma != 0:
        # 1 - p_t from sigmoid(-x) instead of 1 - sigmoid(x), which rounds to 0 for large
        # logits; the floor keeps pow's gradient finite where 1 - p_t underflows (|x| > 87)
        # and gamma < 1, and changes no value above float's smallest normal number.
        one_minus_p_t = targets * torch.sigmoid(-inputs) + (1 - targets) * torch.sigmoid(inputs)
        tiny = torch.finfo(one_minus_p_t.dtype).tiny
        loss = loss * one_minus_p_t.clamp(min=tiny) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss

    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def build_classification_loss(cfg) -> nn.Module:
    name = cfg.MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS
    return get_registered(
        CLASSIFICATION_LOSS_REGISTRY, name, "MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS"
    )(cfg)


def build_box_loss(cfg) -> nn.Module:
    return get_registered(
        BOX_LOSS_REGISTRY, cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE, "MODEL.RETINANET.BBOX_REG_LOSS_TYPE",
        BOX_LOSS_TYPE_ALIASES,
    )(cfg)


@CLASSIFICATION_LOSS_REGISTRY.register()
class SigmoidFocalLoss(nn.Module):
    """
    The paper's loss: one sigmoid per class, background is "all classes negative".
    """

    @configurable
    def __init__(self, *, alpha: float = 0.25, gamma: float = 2.0, fused: bool = True):
        """
        fused: compute it with :func:`fused_sigmoid_focal_loss_from_labels` (same values and
            gradients, faster, no (M, K) intermediates); False runs the reference
            :func:`sigmoid_focal_loss` through autograd.
        """
        super().__init__()
        check_value("MODEL.RETINANET.FOCAL_LOSS_ALPHA", alpha)
        check_value("MODEL.RETINANET.FOCAL_LOSS_GAMMA", gamma)
        self.alpha = alpha
        self.gamma = gamma
        self.fused = fused

    @classmethod
    def from_config(cls, cfg):
        return {
            "alpha": cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA,
            "gamma": cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA,
            "fused": cfg.MODEL.FOCAL_RETINANET.FUSED_FOCAL_LOSS,
        }

    def forward(self, pred_logits: torch.Tensor, gt_labels: torch.Tensor) -> torch.Tensor:
        """
        Args:
            pred_logits: (M, K) logits of the anchors that are not ignored.
            gt_labels: (M,) int64 in [0, K]; K means background.
        Returns:
            scalar, the loss summed over anchors and classes.
        """
        if self.fused:
            return self._fused_loss(pred_logits, gt_labels)
        num_classes = pred_logits.shape[1]
        # one_hot over K + 1 then drop the background column: background = all zeros.
        targets = F.one_hot(gt_labels, num_classes + 1)[:, :num_classes]
        # float32 even under autocast: the loss sums ~1e5 terms.
        return sigmoid_focal_loss(
            pred_logits.float(), targets.float(), self.alpha, self.gamma, reduction="sum"
        )

    @torch.jit.unused
    def _fused_loss(self, pred_logits: torch.Tensor, gt_labels: torch.Tensor) -> torch.Tensor:
        # float32 even under autocast: the loss sums ~1e5 terms.
        return fused_sigmoid_focal_loss_from_labels(
            pred_logits.float(), gt_labels, self.alpha, self.gamma, reduction="sum"
        )

    def extra_repr(self):
        return f"alpha={self.alpha}, gamma={self.gamma}, fused={self.fused}"


@CLASSIFICATION_LOSS_REGISTRY.register()
class SigmoidBCELoss(SigmoidFocalLoss):
    """
    Alpha-balanced binary cross entropy (the paper's "CE" baseline): the focal loss at gamma=0.
    """

    @configurable
    def __init__(self, *, alpha: float = 0.25, fused: bool = True):
        super().__init__(alpha=alpha, gamma=0.0, fused=fused)

    @classmethod
    def from_config(cls, cfg):
        return {
            "alpha": cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA,
            "fused": cfg.MODEL.FOCAL_RETINANET.FUSED_FOCAL_LOSS,
        }


class _BoxLoss(nn.Module):
    """
    Base of the box losses: holds the (dx, dy, dw, dh) coding of boxes relative to anchors.
    """

    @configurable
    def __init__(self, *, box2box_transform: Box2BoxTransform):
        super().__init__()
        self.box2box_transform = box2box_transform

    @classmethod
    def from_config(cls, cfg):
        return {"box2box_transform": Box2BoxTransform(weights=cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS)}


@BOX_LOSS_REGISTRY.register()
class SmoothL1BoxLoss(_BoxLoss):
    """
    Smooth-L1 on the (dx, dy, dw, dh) deltas; ``beta`` ~ 0 is L1 (detectron2's model zoo).
    """

    @configurable
    def __init__(self, *, box2box_transform: Box2BoxTransform, beta: float = 0.0):
        super().__init__(box2box_transform=box2box_transform)
        self.beta = beta

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["beta"] = cfg.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA
        return ret

    def forward(self, pred_deltas, anchors, gt_boxes):
        """
        pred_deltas, anchors, gt_boxes: (M, 4) each, for the M foreground anchors.
        Returns the loss summed over anchors and coordinates (scalar).
        """
        gt_deltas = self.box2box_transform.get_deltas(anchors, gt_boxes)
        return smooth_l1_loss(pred_deltas, gt_deltas, beta=self.beta, reduction="sum")

    def extra_repr(self):
        return f"beta={self.beta}"


@BOX_LOSS_REGISTRY.register()
class L1BoxLoss(_BoxLoss):
    """
    L1 on the (dx, dy, dw, dh) deltas.
    """

    def forward(self, pred_deltas, anchors, gt_boxes):
        gt_deltas = self.box2box_transform.get_deltas(anchors, gt_boxes)
        return F.l1_loss(pred_deltas, gt_deltas, reduction="sum")


@BOX_LOSS_REGISTRY.register()
class GIoUBoxLoss(_BoxLoss):
    """
    Generalized IoU loss on the decoded boxes.
    """

    # (pred_boxes (M, 4), gt_boxes (M, 4), reduction=...) -> loss
    iou_loss = staticmethod(giou_loss)

    def forward(self, pred_deltas, anchors, gt_boxes):
        pred_boxes = self.box2box_transform.apply_deltas(pred_deltas, anchors)
        return self.iou_loss(pred_boxes, gt_boxes, reduction="sum")


@BOX_LOSS_REGISTRY.register()
class DIoUBoxLoss(GIoUBoxLoss):
    """
    Distance IoU loss on the decoded boxes.
    """

    iou_loss = staticmethod(diou_loss)


@BOX_LOSS_REGISTRY.register()
class CIoUBoxLoss(GIoUBoxLoss):
    """
    Complete IoU loss on the decoded boxes.
    """

    iou_loss = staticmethod(ciou_loss)
