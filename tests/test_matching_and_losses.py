"""
Anchor labelling (IoU >= 0.5 foreground, < 0.4 background, ignored between, low-quality
matches) and the loss normalization of FocalRetinaNet.
"""
import pytest
import torch

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from retina_plugin.modeling.losses import (
    CIoUBoxLoss,
    DIoUBoxLoss,
    GIoUBoxLoss,
    L1BoxLoss,
    SigmoidBCELoss,
    SigmoidFocalLoss,
    SmoothL1BoxLoss,
)

from .conftest import load_cfg

NUM_CLASSES = 4


def model_for(opts=()):
    return build_model(load_cfg(opts=["MODEL.RETINANET.NUM_CLASSES", NUM_CLASSES, *opts]))


def instances(boxes, classes, size=(300, 300)):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


# Anchors against the ground-truth box [0, 0, 10, 10] (class 2), with their IoU:
ANCHORS = [
    [0, 0, 10, 10],  # 1.0   -> foreground
    [0, 0, 10, 20],  # 0.5   -> foreground (>= 0.5)
    [0, 0, 10, 22.2222],  # 0.45 -> ignored
    [0, 0, 10, 25.5],  # 0.392 -> background (< 0.4)
    [100, 100, 110, 110],  # 0 -> background
    [200, 200, 220, 220],  # IoU 0.25 with the second box [200, 200, 240, 240], its best
]


def test_thresholds_ignored_band_and_low_quality_match():
    model = model_for()
    gt = instances([[0, 0, 10, 10], [200, 200, 240, 240]], [2, 3])
    labels, boxes = model.label_anchors(Boxes(torch.tensor(ANCHORS)), [gt])
    K = NUM_CLASSES
    assert labels.tolist() == [[2, 2, -1, K, K, 3]]
    assert boxes[0, 0].tolist() == [0, 0, 10, 10]
    assert boxes[0, 5].tolist() == [200, 200, 240, 240]


def test_low_quality_matches_can_be_turned_off():
    model = model_for(["MODEL.FOCAL_RETINANET.ALLOW_LOW_QUALITY_MATCHES", False])
    gt = instances([[0, 0, 10, 10], [200, 200, 240, 240]], [2, 3])
    labels, _ = model.label_anchors(Boxes(torch.tensor(ANCHORS)), [gt])
    assert labels.tolist() == [[2, 2, -1, NUM_CLASSES, NUM_CLASSES, NUM_CLASSES]]


def test_image_without_boxes_is_all_background():
    model = model_for()
    anchors = Boxes(torch.tensor(ANCHORS))
    labels, boxes = model.label_anchors(anchors, [instances([], []), instances([[0, 0, 10, 10]], [1])])
    assert labels.shape == (2, 6) and boxes.shape == (2, 6, 4)
    assert (labels[0] == NUM_CLASSES).all()
    assert labels[1].tolist() == [1, 1, -1, NUM_CLASSES, NUM_CLASSES, NUM_CLASSES]


def batch(num_images=2, size=128, with_boxes=True):
    g = torch.Generator().manual_seed(3)
    out = []
    for i in range(num_images):
        boxes = [[10, 12, 40, 50], [60, 60, 100, 90]] if with_boxes else []
        out.append(
            {
                "image": (torch.rand(3, size, size, generator=g) * 255),
                "instances": instances(boxes, [i % NUM_CLASSES, 1] if with_boxes else [], (size, size)),
            }
        )
    return out


def _losses_and_foreground(model, inputs):
    model.train()
    with EventStorage() as storage:
        losses = model(inputs)
        num_pos_per_image = storage.latest()["num_pos_anchors"][0]
    return losses, num_pos_per_image * len(inputs)


def test_num_foreground_normalizer_divides_by_foreground_anchors():
    torch.manual_seed(0)
    model = model_for()
    inputs = batch()
    losses, num_foreground = _losses_and_foreground(model, inputs)
    assert num_foreground >= 2  # every box has at least its best anchor

    # Recompute the sums by hand from the model's own predictions and labels.
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.head_in_features]
        logits, deltas = model._transpose_dense_predictions(model.head(features), [NUM_CLASSES, 4])
        anchors = Boxes.cat(model.anchor_generator(features))
        labels, matched = model.label_anchors(anchors, [x["instances"] for x in inputs])
        logits = torch.cat(logits, 1)
        valid = labels >= 0
        fg = valid & (labels < NUM_CLASSES)
        cls_sum = SigmoidFocalLoss(alpha=0.25, gamma=2.0)(logits[valid], labels[valid])
    assert fg.sum().item() == num_foreground
    torch.testing.assert_close(losses["loss_cls"].detach(), cls_sum / num_foreground, rtol=1e-4, atol=1e-6)


def test_ema_normalizer_follows_detectron2():
    model = model_for(["MODEL.FOCAL_RETINANET.LOSS_NORMALIZER", "ema"])
    reference = model_for(["MODEL.FOCAL_RETINANET.LOSS_NORMALIZER", "num_foreground"])
    reference.load_state_dict(model.state_dict())
    inputs = batch()
    ema_losses, n = _losses_and_foreground(model, inputs)
    fg_losses, _ = _losses_and_foreground(reference, inputs)
    ema = 0.9 * 100 + 0.1 * n  # detectron2: starts at 100, momentum 0.9
    for key in ("loss_cls", "loss_box_reg"):
        torch.testing.assert_close(ema_losses[key] * ema, fg_losses[key] * n, rtol=1e-4, atol=1e-5)


def test_images_without_boxes_give_finite_losses():
    model = model_for()
    losses, n = _losses_and_foreground(model, batch(with_boxes=False))
    assert n == 0
    assert losses["loss_box_reg"].item() == 0.0
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"].item() > 0


def test_losses_are_chosen_by_name():
    expected = {
        "smooth_l1": SmoothL1BoxLoss,
        "l1": L1BoxLoss,
        "giou": GIoUBoxLoss,
        "diou": DIoUBoxLoss,
        "ciou": CIoUBoxLoss,
        "GIoUBoxLoss": GIoUBoxLoss,
    }
    for name, cls in expected.items():
        model = model_for(["MODEL.RETINANET.BBOX_REG_LOSS_TYPE", name])
        assert type(model.box_loss) is cls
    model = model_for(["MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS", "SigmoidBCELoss"])
    assert type(model.classification_loss) is SigmoidBCELoss and model.classification_loss.gamma == 0
    model = model_for(["MODEL.RETINANET.FOCAL_LOSS_GAMMA", 1.5, "MODEL.RETINANET.FOCAL_LOSS_ALPHA", 0.5])
    assert (model.classification_loss.gamma, model.classification_loss.alpha) == (1.5, 0.5)


@pytest.mark.parametrize(
    "key, value",
    [
        ("MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "l3"),
        ("MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS", "Softmax"),
    ],
)
def test_unknown_loss_names_are_clear_errors(key, value):
    with pytest.raises(ValueError, match=f"{key} = '{value}': expected one of the registered names"):
        model_for([key, value])


def test_unknown_normalizer_is_a_clear_error():
    with pytest.raises(ValueError, match="LOSS_NORMALIZER"):
        model_for(["MODEL.FOCAL_RETINANET.LOSS_NORMALIZER", "batch"])


def test_box_losses_vanish_on_perfect_predictions_and_grow_with_error():
    transform_cfg = load_cfg()
    anchors = torch.tensor([[0.0, 0, 20, 20], [50, 50, 90, 70]])
    gt = torch.tensor([[2.0, 1, 22, 25], [45, 52, 95, 75]])
    for cls in (SmoothL1BoxLoss, L1BoxLoss, GIoUBoxLoss, DIoUBoxLoss, CIoUBoxLoss):
        loss = cls(transform_cfg)
        perfect = loss.box2box_transform.get_deltas(anchors, gt)
        assert loss(perfect, anchors, gt).item() == pytest.approx(0.0, abs=1e-5), cls
        assert loss(perfect + 0.3, anchors, gt).item() > loss(perfect + 0.1, anchors, gt).item() > 0
