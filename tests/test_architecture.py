"""
The paper's architecture from configs/Base-RetinaNet.yaml: FPN P3-P7, anchors, head.
"""
import math

import pytest
import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator, build_anchor_generator
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead

from retina_plugin.modeling import FocalRetinaNetHead, build_focal_retinanet_head

from .conftest import CONFIGS, load_cfg

LEVELS = ["p3", "p4", "p5", "p6", "p7"]


def paper_cfg(opts=()):
    return load_cfg(CONFIGS / "Base-RetinaNet.yaml", ["MODEL.RESNETS.DEPTH", 50, *opts])


def test_fpn_levels_strides_channels_and_no_norm():
    cfg = paper_cfg()
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    assert [f for f in LEVELS] == sorted(shapes, key=lambda k: shapes[k].stride)
    assert [shapes[f].stride for f in LEVELS] == [8, 16, 32, 64, 128]
    assert {shapes[f].channels for f in LEVELS} == {256}
    # No BN / GN inside FPN.
    fpn_modules = [m for n, m in backbone.named_modules() if not n.startswith("bottom_up")]
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in fpn_modules)
    assert all(getattr(m, "norm", None) is None for m in fpn_modules if hasattr(m, "norm"))
    # P6: 3x3 stride-2 conv on C5 (2048 channels for R50); P7 the same on ReLU(P6).
    top = backbone.top_block
    assert (top.p6.kernel_size, top.p6.stride, top.p6.in_channels) == ((3, 3), (2, 2), 2048)
    assert (top.p7.kernel_size, top.p7.stride) == ((3, 3), (2, 2))
    c5 = torch.randn(1, 2048, 8, 8)
    p6, p7 = top(c5)
    torch.testing.assert_close(p7, top.p7(torch.relu(top.p6(c5))))
    assert not torch.allclose(p7, top.p7(top.p6(c5)))


def test_anchors_nine_per_location_with_paper_areas_and_ratios():
    cfg = paper_cfg()
    shapes = [ShapeSpec(channels=256, stride=s) for s in (8, 16, 32, 64, 128)]
    generator = build_anchor_generator(cfg, shapes)
    assert isinstance(generator, DefaultAnchorGenerator)
    assert generator.num_cell_anchors == [9] * 5
    for level, cell in enumerate(generator.cell_anchors):
        widths, heights = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
        base = 32 * 2**level
        sizes = sorted({round(v, 3) for v in torch.sqrt(widths * heights).tolist()})
        expected = sorted(round(base * 2 ** (k / 3), 3) for k in range(3))
        assert sizes == pytest.approx(expected, rel=1e-4)
        ratios = sorted({round(v, 4) for v in (heights / widths).tolist()})
        assert ratios == pytest.approx([0.5, 1.0, 2.0], rel=1e-4)
    # All anchors of a 256x320 image: sum over levels of Hi * Wi * 9.
    features = [torch.zeros(1, 256, math.ceil(256 / s), math.ceil(320 / s)) for s in (8, 16, 32, 64, 128)]
    anchors = generator(features)
    assert [len(a) for a in anchors] == [f.shape[2] * f.shape[3] * 9 for f in features]


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
    with pytest.raises(KeyError, match="MODEL.FOCAL_RETINANET.HEAD_NAME='NoSuchHead'"):
        build_focal_retinanet_head(cfg, [ShapeSpec(channels=32)] * 5)
