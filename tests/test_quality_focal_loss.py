"""
The quality-aware classification target (QualityFocalLoss): its values against the focal loss,
where its gradient vanishes, and the IoU targets the model hands it.
"""
import torch
from torch.nn import functional as F

from detectron2.modeling import build_model
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou
from detectron2.utils.events import EventStorage

from retina_plugin.modeling import build_classification_loss, sigmoid_focal_loss
from retina_plugin.modeling.quality_focal_loss import QualityFocalLoss, quality_focal_loss

from .conftest import load_cfg, two_image_training_batch


def test_hard_targets_give_the_focal_loss_without_alpha():
    torch.manual_seed(0)
    logits = torch.randn(50, 3) * 3
    labels = torch.randint(0, 4, (50,))
    loss = QualityFocalLoss(beta=2.0)(logits, labels, torch.ones(50))
    targets = F.one_hot(labels, 4)[:, :3].float()
    expected = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=2.0, reduction="sum")
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_gradient_vanishes_where_the_score_equals_the_quality():
    quality = torch.tensor([0.3, 0.8])
    logits = torch.logit(quality)[:, None].repeat(1, 2).requires_grad_()
    # Class 0 of anchor 0 and class 1 of anchor 1 are the targets; the rest is background.
    labels = torch.tensor([0, 1])
    QualityFocalLoss(beta=2.0)(logits, labels, quality).backward()
    assert logits.grad[0, 0].abs() < 1e-6 and logits.grad[1, 1].abs() < 1e-6
    # Background scores are pushed down.
    assert logits.grad[0, 1] > 0 and logits.grad[1, 0] > 0
    # A score above its quality is pushed down too.
    high = torch.tensor([[2.0]], requires_grad=True)
    quality_focal_loss(high, torch.tensor([[0.5]])).sum().backward()
    assert high.grad.item() > 0


def test_the_model_passes_the_iou_of_each_predicted_box():
    cfg = load_cfg(opts=[
        "MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS", "QualityFocalLoss",
        "MODEL.RETINANET.FOCAL_LOSS_GAMMA", "1.5",
    ])
    loss_fn = build_classification_loss(cfg)
    assert isinstance(loss_fn, QualityFocalLoss) and loss_fn.beta == 1.5
    model = build_model(cfg)
    seen = {}
    original = model.classification_loss.forward

    def spy(logits, labels, quality_targets):
        seen.update(labels=labels, quality_targets=quality_targets)
        return original(logits, labels, quality_targets)

    model.classification_loss.forward = spy
    original_losses = model.losses

    def spy_losses(anchors, pred_logits, pred_deltas, gt_labels, matched_gt_boxes):
        seen.update(anchors=anchors, pred_deltas=pred_deltas, gt_labels=gt_labels,
                    matched_gt_boxes=matched_gt_boxes)
        return original_losses(anchors, pred_logits, pred_deltas, gt_labels, matched_gt_boxes)

    model.losses = spy_losses
    with EventStorage():
        losses = model(two_image_training_batch())
    assert torch.isfinite(losses["loss_cls"])
    losses["loss_cls"].backward()

    gt_labels = seen["gt_labels"]
    valid = gt_labels >= 0
    foreground = valid & (gt_labels != model.num_classes)
    assert foreground.any()
    # Recompute each foreground anchor's IoU from scratch, per image.
    deltas = torch.cat(seen["pred_deltas"], dim=1).detach()
    expected = torch.zeros(gt_labels.shape)
    for image in range(gt_labels.shape[0]):
        idxs = foreground[image].nonzero().squeeze(1)
        boxes = model.box2box_transform.apply_deltas(deltas[image, idxs], seen["anchors"].tensor[idxs])
        expected[image, idxs] = matched_pairwise_iou(
            Boxes(boxes), Boxes(seen["matched_gt_boxes"][image, idxs])
        )
    assert torch.allclose(seen["quality_targets"], expected[valid], atol=1e-6)
    # Foreground targets are IoUs in (0, 1], not the focal loss's hard 1.
    foreground_targets = seen["quality_targets"][seen["labels"] != model.num_classes]
    assert (foreground_targets > 0).all() and (foreground_targets < 1).all()
