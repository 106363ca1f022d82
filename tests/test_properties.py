"""
Property-based tests (hypothesis) with random boxes, scores and image sizes: the focal loss,
anchor labelling and post-processing never raise, never give NaN, keep boxes inside the
image, sort scores and return at most DETECTIONS_PER_IMAGE detections (issue 9).
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from retina_plugin.modeling.losses import sigmoid_focal_loss

from .conftest import load_cfg

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
NUM_CLASSES = 3
MAX_DETECTIONS = 7


@pytest.fixture(scope="module")
def model():
    cfg = load_cfg(opts=["MODEL.RETINANET.NUM_CLASSES", str(NUM_CLASSES),
                         "TEST.DETECTIONS_PER_IMAGE", str(MAX_DETECTIONS)])
    return build_model(cfg).eval()


def _boxes(draw, n, width, height, min_size=0.0):
    out = []
    for _ in range(n):
        x1 = draw(st.floats(-0.5 * width, 1.5 * width))
        y1 = draw(st.floats(-0.5 * height, 1.5 * height))
        w = draw(st.floats(min_size, 2.0 * width))
        h = draw(st.floats(min_size, 2.0 * height))
        out.append([x1, y1, x1 + w, y1 + h])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


@SETTINGS
@given(
    logits=st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=40),
    data=st.data(),
    alpha=st.one_of(st.floats(0, 1), st.just(-1.0)),
    gamma=st.floats(0, 5),
)
def test_focal_loss_is_finite_and_non_negative(logits, data, alpha, gamma):
    x = torch.tensor(logits, requires_grad=True)
    targets = torch.tensor(data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=len(logits),
                                              max_size=len(logits))))
    loss = sigmoid_focal_loss(x, targets, alpha, gamma, reduction="none")
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()


@SETTINGS
@given(data=st.data(), num_gt=st.integers(0, 6),
       width=st.integers(16, 400), height=st.integers(16, 400))
def test_anchor_labels_are_valid_for_any_boxes(model, data, num_gt, width, height):
    anchors = Boxes(_boxes(data.draw, 50, width, height, min_size=1.0))
    gt = Instances((height, width))
    gt.gt_boxes = Boxes(_boxes(data.draw, num_gt, width, height, min_size=0.5))
    gt.gt_classes = torch.tensor(
        data.draw(st.lists(st.integers(0, NUM_CLASSES - 1), min_size=num_gt, max_size=num_gt)),
        dtype=torch.int64,
    )
    labels, matched = model.label_anchors(anchors, [gt])
    assert labels.shape == (1, 50) and matched.shape == (1, 50, 4)
    assert ((labels >= -1) & (labels <= NUM_CLASSES)).all()
    assert torch.isfinite(matched).all()
    if num_gt == 0:
        assert (labels == NUM_CLASSES).all()
    else:
        # Each foreground anchor is matched to one of the image's boxes.
        fg = labels[0] < NUM_CLASSES
        fg &= labels[0] >= 0
        for box in matched[0][fg]:
            assert (gt.gt_boxes.tensor == box).all(dim=1).any()


@SETTINGS
@given(data=st.data(), width=st.integers(8, 300), height=st.integers(8, 300),
       delta_scale=st.sampled_from([0.1, 3.0, 50.0]), logit_scale=st.sampled_from([1.0, 10.0, 1e3]))
def test_postprocessing_keeps_sorted_scores_and_boxes_inside_the_image(
    model, data, width, height, delta_scale, logit_scale
):
    seed = data.draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    anchors, logits, deltas = [], [], []
    for level in range(2):
        n = data.draw(st.integers(0, 60))
        anchors.append(Boxes(_boxes(data.draw, n, width, height, min_size=1.0)))
        logits.append(torch.randn(n, NUM_CLASSES, generator=g) * logit_scale)
        deltas.append(torch.randn(n, 4, generator=g) * delta_scale)
    with torch.no_grad():
        result = model.inference_single_image(anchors, logits, deltas, (height, width))
    result = detector_postprocess(result, height, width)
    boxes, scores = result.pred_boxes.tensor, result.scores
    assert len(result) <= MAX_DETECTIONS
    assert torch.isfinite(boxes).all() and torch.isfinite(scores).all()
    assert (scores[:-1] >= scores[1:]).all()
    assert ((scores > model.test_score_thresh) & (scores <= 1)).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert ((result.pred_classes >= 0) & (result.pred_classes < NUM_CLASSES)).all()
    assert not math.isnan(float(scores.sum()))
