# The paper's RetinaNet (R50-FPN, P3-P7, A=9, 4x256 subnets, focal loss) as a LazyConfig
# model, built on our @configurable classes; configs/retina_R50.py and demo_R18_cpu.py use it.
# The yaml counterpart is configs/Base-RetinaNet.yaml + retina_R50.yaml.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone import FPN, BasicStem, ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher

from retina_plugin.modeling import FocalRetinaNet, FocalRetinaNetHead
from retina_plugin.modeling.assigners import IoUAssigner
from retina_plugin.modeling.losses import SigmoidFocalLoss, SmoothL1BoxLoss

FPN_CHANNELS = 256
LEVELS = ["p3", "p4", "p5", "p6", "p7"]
# Anchor areas 32^2 .. 512^2 on P3 .. P7, 3 scales x 3 aspect ratios.
BASE_ANCHOR_SIZE = 32
ANCHOR_SCALES = [2 ** 0, 2 ** (1 / 3), 2 ** (2 / 3)]
ASPECT_RATIOS = [0.5, 1.0, 2.0]


def anchor_sizes(base_size):
    return [[base_size * 2**level * s for s in ANCHOR_SCALES] for level in range(len(LEVELS))]


def head_input_shape(channels):
    return [ShapeSpec(channels=channels)] * len(LEVELS)


model = L(FocalRetinaNet)(
    backbone=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="FrozenBN"),
            out_features=["res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features="${.bottom_up.out_features}",
        out_channels=FPN_CHANNELS,
        top_block=L(LastLevelP6P7)(in_channels=2048, out_channels="${..out_channels}"),
    ),
    head=L(FocalRetinaNetHead)(
        input_shape=head_input_shape(FPN_CHANNELS),
        num_classes="${..num_classes}",
        num_anchors=len(ANCHOR_SCALES) * len(ASPECT_RATIOS),
        conv_dims=[FPN_CHANNELS] * 4,
        norm="",
        prior_prob=0.01,
    ),
    head_in_features=LEVELS,
    anchor_generator=L(DefaultAnchorGenerator)(
        sizes=anchor_sizes(BASE_ANCHOR_SIZE),
        aspect_ratios=ASPECT_RATIOS,
        strides=[8, 16, 32, 64, 128],
        offset=0.0,
    ),
    box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
    anchor_assigner=L(IoUAssigner)(
        matcher=L(Matcher)(thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True)
    ),
    num_classes=80,
    classification_loss=L(SigmoidFocalLoss)(alpha=0.25, gamma=2.0),
    # The box loss codes boxes as the model does: one definition of the weights.
    box_loss=L(SmoothL1BoxLoss)(box2box_transform="${..box2box_transform}", beta=0.0),
    box_loss_weight=1.0,
    loss_normalizer="num_foreground",
    test_score_thresh=0.05,
    test_topk_candidates=1000,
    test_nms_thresh=0.5,
    max_detections_per_image=100,
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
    input_format="BGR",
)
