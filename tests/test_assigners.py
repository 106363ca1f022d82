"""
Anchor label assignment: the "IoU" assigner is detectron2's Matcher exactly, "ATSS" follows
hand-worked cases and a per-box reference loop, with A = 1 and A > 1 anchors per location.
"""
import pytest
import torch

from detectron2.modeling import build_model
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils.events import EventStorage

from retina_plugin.modeling.assigners import ATSSAssigner, IoUAssigner

from .conftest import load_cfg
from .test_matching_and_losses import NUM_CLASSES, batch, instances

ATSS = ["MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER", "ATSS"]
FAR = [[100 + 10 * i, 100, 110 + 10 * i, 110] for i in range(10)]  # IoU 0 with the boxes below


def boxes(x):
    return Boxes(torch.tensor(x, dtype=torch.float32).reshape(-1, 4))


def random_boxes(n, generator, size=200.0):
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * 60 + 4
    return torch.cat([xy, xy + wh], dim=1)


def test_iou_assigner_is_detectron2s_matcher():
    g = torch.Generator().manual_seed(0)
    gt, anchors = Boxes(random_boxes(7, g)), Boxes(random_boxes(500, g))
    cfg = load_cfg()
    assigner = IoUAssigner(cfg, 9)
    reference = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)
    idxs, labels = assigner(gt, anchors, [500])
    ref_idxs, ref_labels = reference(pairwise_iou(gt, anchors))
    assert torch.equal(labels, ref_labels) and torch.equal(idxs, ref_idxs)
    assert (labels == 1).any() and (labels == 0).any() and (labels == -1).any()


def test_atss_center_must_be_inside_the_box():
    # Box [0,0,10,10]. a0 = [0,0,10,30]: IoU 1/3, center (5,15) outside; a1 = [0,-10,10,20]:
    # IoU 1/3, center (5,5) inside; 10 anchors with IoU 0. By hand: mean = (2/3)/12 = 0.0556,
    # std (n-1) = 0.1298, threshold 0.185: both pass on IoU, only a1 is inside.
    anchors = boxes([[0, 0, 10, 30], [0, -10, 10, 20], *FAR])
    idxs, labels = ATSSAssigner(topk=12)(boxes([[0, 0, 10, 10]]), anchors, [12])
    assert labels.tolist() == [0, 1] + [0] * 10
    assert idxs[1].item() == 0


def test_atss_anchor_of_two_boxes_goes_to_the_higher_iou():
    # a0 = [0,0,10,10] is a positive of both boxes (one nonzero IoU among 11 candidates is
    # always above mean + std): IoU 1 with [0,0,10,10] (box 1), 100/144 with [0,0,12,12] (box 0).
    anchors = boxes([[0, 0, 10, 10], *FAR])
    gt = boxes([[0, 0, 12, 12], [0, 0, 10, 10]])
    idxs, labels = ATSSAssigner(topk=11)(gt, anchors, [11])
    assert labels.tolist() == [1] + [0] * 10
    assert idxs[0].item() == 1


def test_atss_candidates_are_the_closest_topk_locations_per_level():
    # Level 0: two locations with A = 2 anchors each (10x10 and 20x20); level 1: one far
    # location. Box [0,0,12,10], center (6,5). With topk=1 only the location at (5,5) is a
    # candidate on level 0: IoUs [100/120, 120/400] and level 1's [0, 0].
    # Threshold = mean + std = 0.283 + 0.393 = 0.676: only [0,0,10,10] is foreground; the
    # second location's anchors are no candidates at all.
    level0 = [[0, 0, 10, 10], [-5, -5, 15, 15], [10, 0, 20, 10], [5, -5, 25, 15]]
    level1 = [[90, 90, 100, 100], [85, 85, 105, 105]]
    gt = boxes([[0, 0, 12, 10]])
    idxs, labels = ATSSAssigner(topk=1, num_anchors_per_location=2)(gt, boxes(level0 + level1), [4, 2])
    assert labels.tolist() == [1, 0, 0, 0, 0, 0]
    # With topk=2 the second location's anchors become candidates too, as in the reference.
    idxs2, labels2 = ATSSAssigner(topk=2, num_anchors_per_location=2)(gt, boxes(level0 + level1), [4, 2])
    ref_idxs, ref_labels = atss_reference(gt.tensor, torch.tensor(level0 + level1, dtype=torch.float32), [4, 2], 2, 2)
    assert labels2.tolist() == ref_labels.tolist()


def atss_reference(gt, anchors, num_per_level, topk, num_per_location):
    """
    ATSS written box by box, level by level, from the paper's Algorithm 1.
    """
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    ious = pairwise_iou(Boxes(gt), Boxes(anchors))
    best_iou = torch.full((len(anchors),), -1.0)
    matched = torch.zeros(len(anchors), dtype=torch.int64)
    for g, box in enumerate(gt):
        box_center = (box[:2] + box[2:]) / 2
        candidates, start = [], 0
        for n in num_per_level:
            dist = ((centers[start : start + n] - box_center) ** 2).sum(1).sqrt()
            order = torch.argsort(dist, stable=True)[: min(topk * num_per_location, n)]
            candidates += (order + start).tolist()
            start += n
        values = ious[g, candidates]
        threshold = values.mean() + values.std()
        for c, v in zip(candidates, values.tolist()):
            x, y = centers[c].tolist()
            inside = min(x - box[0], y - box[1], box[2] - x, box[3] - y) > 0.01
            if v >= threshold and inside and v > best_iou[c]:
                best_iou[c], matched[c] = v, g
    return matched, (best_iou >= 0).to(torch.int8)


@pytest.mark.parametrize("num_per_location", [1, 9])
def test_atss_matches_the_reference_on_random_boxes(num_per_location):
    g = torch.Generator().manual_seed(num_per_location)
    # Anchors on a grid per level, A per location with distinct sizes (no distance ties).
    anchors, num_per_level = [], []
    for stride in (8, 16, 32):
        cs = torch.arange(stride / 2, 128, stride)
        cy, cx = torch.meshgrid(cs, cs, indexing="ij")
        c = torch.stack([cx.flatten(), cy.flatten()], 1).repeat_interleave(num_per_location, 0)
        half = stride * (1 + torch.arange(num_per_location).float().repeat(len(cs) ** 2) / 4)
        anchors.append(torch.cat([c - half[:, None], c + half[:, None]], 1))
        num_per_level.append(len(anchors[-1]))
    anchors = torch.cat(anchors)
    # Centers off the grid's symmetry axes, so that the top-k nearest are unique.
    gt = random_boxes(6, g, size=100) + 0.37
    idxs, labels = ATSSAssigner(topk=3, num_anchors_per_location=num_per_location)(
        Boxes(gt), Boxes(anchors), num_per_level
    )
    ref_idxs, ref_labels = atss_reference(gt, anchors, num_per_level, 3, num_per_location)
    assert labels.tolist() == ref_labels.tolist()
    fg = labels == 1
    assert fg.sum() >= len(gt)
    assert idxs[fg].tolist() == ref_idxs[fg].tolist()


def test_atss_in_the_model_with_9_and_1_anchors_per_location():
    one_anchor = ["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[1.0]],
                  "MODEL.ANCHOR_GENERATOR.SIZES", [[16], [32], [64], [128], [256]]]
    for opts in ([], one_anchor):
        model = build_model(load_cfg(opts=["MODEL.RETINANET.NUM_CLASSES", NUM_CLASSES, *ATSS, *opts]))
        assert isinstance(model.anchor_assigner, ATSSAssigner)
        assert model.anchor_assigner.num_anchors_per_location == (9 if not opts else 1)
        model.train()
        with EventStorage() as storage:
            losses = model(batch())  # two images, each with two boxes
            num_pos = storage.latest()["num_pos_anchors"][0]
        assert num_pos >= 2 and all(torch.isfinite(v) for v in losses.values())
        # Images without boxes: all background, nothing ignored.
        anchors = Boxes(torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]]))
        labels, _ = model.label_anchors(anchors, [instances([], [])], [2])
        assert labels.tolist() == [[NUM_CLASSES, NUM_CLASSES]]


def test_unknown_assigner_is_a_clear_error():
    with pytest.raises(ValueError, match="ANCHOR_ASSIGNER = 'Hungarian': expected one of the registered names"):
        build_model(load_cfg(opts=["MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER", "Hungarian"]))
    with pytest.raises(ValueError, match="ATSS_TOPK"):
        build_model(load_cfg(opts=[*ATSS, "MODEL.FOCAL_RETINANET.ATSS_TOPK", 0]))


def test_detectron2_style_label_anchors_call_labels_per_level():
    # detectron2's RetinaNet.label_anchors(anchors: List[Boxes], gt_instances): the levels come
    # from the list. The same call must give the same labels as the model's own training path.
    model = build_model(load_cfg(opts=["MODEL.RETINANET.NUM_CLASSES", NUM_CLASSES, *ATSS]))
    inputs = batch()
    images = model.preprocess_image(inputs)
    features, _ = model.features_and_predictions(images.tensor)
    anchors_per_level = model.anchor_generator(features)
    gt = [x["instances"] for x in inputs]
    labels, _ = model.label_anchors(anchors_per_level, gt)
    concatenated = Boxes.cat(anchors_per_level)
    expected, _ = model.label_anchors(concatenated, gt, [len(a) for a in anchors_per_level])
    assert torch.equal(labels, expected)
    num_boxes = sum(len(g) for g in gt)
    # ATSS keeps candidates on every level: several foreground anchors per box.
    assert int((labels[labels != -1] < NUM_CLASSES).sum()) > 2 * num_boxes
    # Concatenated anchors without their levels: an error, never a silent single level.
    with pytest.raises(ValueError, match="ATSS picks its candidates per level"):
        model.label_anchors(concatenated, gt)
    with pytest.raises(ValueError, match="contradicts"):
        model.label_anchors(anchors_per_level, gt, [1, 2])
