"""
OHEM (the paper's Table 1d baseline): the hardest anchors of each image, at the given
negative:positive ratio and batch, optionally after NMS over anchors; and the meta-architecture
passing each anchor's image and box to it.
"""
import torch
from torch.nn import functional as F

from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from retina_plugin.modeling import build_classification_loss
from retina_plugin.modeling.ohem import OHEMLoss, select_hard_examples

from .conftest import load_cfg, two_image_training_batch


def boxes_apart(n):
    # Disjoint boxes: NMS removes none of them.
    return torch.tensor([[20.0 * i, 0.0, 20.0 * i + 10, 10.0] for i in range(n)])


def test_hardest_at_the_ratio():
    losses = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.8, 0.2, 0.7, 0.6, 0.05, 0.4])
    positive = torch.zeros(10, dtype=torch.bool)
    positive[[0, 3, 8]] = True
    image = torch.zeros(10, dtype=torch.long)
    # B = 8, 1:3: B / 4 = 2 hardest positives (0.3, 0.1), then 3 * 2 = 6 hardest negatives.
    picked = select_hard_examples(losses, positive, image, None, batch_size_per_image=8, neg_pos_ratio=3)
    assert picked.tolist() == [3, 0, 1, 4, 6, 7, 2, 9]
    # B = 4: one positive, three negatives.
    picked = select_hard_examples(losses, positive, image, None, batch_size_per_image=4, neg_pos_ratio=3)
    assert picked.tolist() == [3, 1, 4, 6]
    # 1:1 with a large batch: all 3 positives, 3 negatives.
    picked = select_hard_examples(losses, positive, image, None, batch_size_per_image=100, neg_pos_ratio=1)
    assert sorted(picked.tolist()) == sorted([3, 0, 8, 1, 4, 6])
    # No ratio: the 4 hardest, whatever their label.
    picked = select_hard_examples(losses, positive, image, None, batch_size_per_image=4, neg_pos_ratio=0)
    assert picked.tolist() == [1, 4, 6, 7]


def test_per_image_and_nms():
    losses = torch.tensor([0.9, 0.8, 0.1, 0.7, 0.6, 0.5])
    positive = torch.zeros(6, dtype=torch.bool)
    image = torch.tensor([0, 0, 0, 1, 1, 1])
    picked = select_hard_examples(losses, positive, image, None, batch_size_per_image=2, neg_pos_ratio=0)
    assert picked.tolist() == [0, 1, 3, 4]  # two per image, not the four hardest overall
    # Anchors 0 and 1 overlap (IoU 0.81): NMS at 0.7 keeps only the harder one.
    boxes = boxes_apart(6)
    boxes[1] = boxes[0] + torch.tensor([0.0, 0.0, 0.0, -1.0])
    picked = select_hard_examples(losses, positive, image, boxes, 2, 0, nms_thresh=0.7)
    assert picked.tolist() == [0, 2, 3, 4]
    picked = select_hard_examples(losses, positive, image, boxes, 2, 0, nms_thresh=0.0)  # off
    assert picked.tolist() == [0, 1, 3, 4]


def test_loss_is_cross_entropy_of_the_selected_anchors():
    torch.manual_seed(0)
    logits = torch.randn(12, 3, requires_grad=True)
    labels = torch.tensor([0, 3, 3, 1, 3, 3, 3, 2, 3, 3, 3, 3])
    loss_fn = OHEMLoss(batch_size_per_image=4, neg_pos_ratio=0, nms_thresh=0)
    loss = loss_fn(logits, labels)
    targets = F.one_hot(labels, 4)[:, :3].float()
    per_anchor = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1)
    assert torch.allclose(loss, per_anchor.topk(4).values.sum())
    loss.backward()
    # Only the selected anchors get a gradient.
    assert (logits.grad.abs().sum(1) > 0).sum() == 4


def test_built_from_config_and_trained_through_the_model():
    cfg = load_cfg(opts=[
        "MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS", "OHEMLoss",
        "MODEL.FOCAL_RETINANET.OHEM.BATCH_SIZE_PER_IMAGE", "16",
        "MODEL.FOCAL_RETINANET.OHEM.NEG_POS_RATIO", "0.0",
        "MODEL.FOCAL_RETINANET.OHEM.NMS_THRESH", "0.5",
    ])
    loss_fn = build_classification_loss(cfg)
    assert isinstance(loss_fn, OHEMLoss)
    assert (loss_fn.batch_size_per_image, loss_fn.neg_pos_ratio, loss_fn.nms_thresh) == (16, 0.0, 0.5)
    model = build_model(cfg)
    seen = {}
    original = model.classification_loss.forward

    def spy(logits, labels, image_idxs=None, anchor_boxes=None):
        seen.update(logits=logits, image_idxs=image_idxs, anchor_boxes=anchor_boxes)
        return original(logits, labels, image_idxs, anchor_boxes)

    model.classification_loss.forward = spy
    with EventStorage():
        losses = model(two_image_training_batch())
    assert torch.isfinite(losses["loss_cls"])
    # Each non-ignored anchor comes with its image and its anchor box.
    assert set(seen["image_idxs"].tolist()) == {0, 1}
    assert seen["anchor_boxes"].shape == (len(seen["logits"]), 4)
    losses["loss_cls"].backward()
