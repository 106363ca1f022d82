"""
The paper's head: subnets, prior initialization, output shapes, detectron2's parameter names.
"""
import math

import pytest
import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead

from retina_plugin.modeling import FocalRetinaNetHead, build_focal_retinanet_head

from .conftest import CONFIGS, load_cfg



def paper_cfg(opts=()):
    return load_cfg(CONFIGS / "Base-RetinaNet.yaml", ["MODEL.RESNETS.DEPTH", 50, *opts])


def test_head_output_shapes():
    cfg = load_cfg(opts=["MODEL.RETINANET.NUM_CLASSES", 7])
    shapes = [ShapeSpec(channels=32, stride=s) for s in (8, 16, 32, 64, 128)]
    head = build_focal_retinanet_head(cfg, shapes)
    features = [torch.randn(2, 32, h, w) for h, w in [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1)]]
    logits, deltas = head(features)
    assert [tuple(x.shape) for x in logits] == [(2, 9 * 7) + tuple(f.shape[2:]) for f in features]
    assert [tuple(x.shape) for x in deltas] == [(2, 9 * 4) + tuple(f.shape[2:]) for f in features]


def test_head_subnets_follow_the_paper():
    cfg = paper_cfg(["MODEL.RETINANET.NUM_CLASSES", 80])
    head = build_focal_retinanet_head(cfg, [ShapeSpec(channels=256)] * 5)
    for subnet in (head.cls_subnet, head.bbox_subnet):
        convs = [m for m in subnet if isinstance(m, nn.Conv2d)]
        assert len(convs) == 4
        assert all(c.kernel_size == (3, 3) and c.out_channels == 256 for c in convs)
        assert sum(isinstance(m, nn.ReLU) for m in subnet) == 4
        assert len(subnet) == 8  # conv, ReLU x 4: no norm
    assert head.cls_score.out_channels == 9 * 80 and head.bbox_pred.out_channels == 9 * 4
    # Two subnets, no shared parameters.
    cls_params = {id(p) for p in head.cls_subnet.parameters()}
    assert not cls_params & {id(p) for p in head.bbox_subnet.parameters()}


def test_prior_bias_initialization_gives_p_about_0_01():
    cfg = load_cfg(opts=["MODEL.RETINANET.PRIOR_PROB", 0.01])
    head = build_focal_retinanet_head(cfg, [ShapeSpec(channels=32)] * 5)
    assert head.cls_score.bias.detach() == pytest.approx(
        torch.full_like(head.cls_score.bias, -math.log(99)), abs=1e-6
    )
    logits, _ = head([torch.randn(2, 32, 16, 16) for _ in range(5)])
    probs = torch.cat([x.flatten() for x in logits]).sigmoid()
    assert probs.mean().item() == pytest.approx(0.01, abs=1e-3)
    assert probs.max().item() < 0.02


@pytest.mark.parametrize("norm", ["", "GN", "BN"])
def test_head_parameter_names_match_detectron2(norm):
    cfg = load_cfg(opts=["MODEL.RETINANET.NORM", norm, "MODEL.RETINANET.NUM_CONVS", 4])
    shapes = [ShapeSpec(channels=32)] * 5
    ours = FocalRetinaNetHead(cfg, shapes)
    theirs = RetinaNetHead(cfg, shapes)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }


def test_narrow_head_conv_dim():
    cfg = load_cfg(opts=["MODEL.FOCAL_RETINANET.HEAD_CONV_DIM", 64])
    head = build_focal_retinanet_head(cfg, [ShapeSpec(channels=128)] * 5)
    assert head.cls_subnet[0].in_channels == 128 and head.cls_subnet[0].out_channels == 64
    assert head.cls_score.in_channels == 64 and head.bbox_pred.in_channels == 64


def test_unknown_head_name_is_a_clear_error():
    cfg = load_cfg(opts=["MODEL.FOCAL_RETINANET.HEAD_NAME", "NoSuchHead"])
    with pytest.raises(ValueError, match="MODEL.FOCAL_RETINANET.HEAD_NAME = 'NoSuchHead': expected one of the registered names"):
        build_focal_retinanet_head(cfg, [ShapeSpec(channels=32)] * 5)
