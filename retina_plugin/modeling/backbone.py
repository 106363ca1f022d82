"""
The RetinaNet ResNet-FPN backbone with a choice of input for its P6/P7 block.

``build_focal_retinanet_resnet_fpn_backbone`` (in detectron2's BACKBONE_REGISTRY) is detectron2's
``build_retinanet_resnet_fpn_backbone`` plus MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE:
"res5" computes P6 from C5 (the paper; same modules, parameter names and shapes as
detectron2's, so its checkpoints load), "p5" from the FPN's P5 output (torchvision's
retinanet_resnet50_fpn_v2; P6's conv then has FPN.OUT_CHANNELS inputs instead of C5's).
"""
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7

__all__ = [
    "TOP_BLOCK_IN_FEATURES",
    "build_focal_retinanet_resnet_fpn_backbone",
    "check_top_block_in_feature",
]

TOP_BLOCK_IN_FEATURES = ("res5", "p5")
# Backbone builders that read MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE.
_BUILDERS_WITH_TOP_BLOCK_CHOICE = ("build_focal_retinanet_resnet_fpn_backbone",)


def check_top_block_in_feature(cfg):
    """
    A non-default TOP_BLOCK_IN_FEATURE with a backbone that ignores it is a config error,
    not a silent paper-setting run.
    """
    value = cfg.MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE
    if value not in TOP_BLOCK_IN_FEATURES:
        raise ValueError(
            f"MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE must be one of {TOP_BLOCK_IN_FEATURES}, "
            f"got {value!r}"
        )
    if value != "res5" and cfg.MODEL.BACKBONE.NAME not in _BUILDERS_WITH_TOP_BLOCK_CHOICE:
        raise ValueError(
            f"MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE={value!r} needs MODEL.BACKBONE.NAME "
            f"'build_focal_retinanet_resnet_fpn_backbone'; {cfg.MODEL.BACKBONE.NAME!r} "
            f"always computes P6 from res5"
        )


@BACKBONE_REGISTRY.register()
def build_focal_retinanet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """
    ResNet-FPN with P6/P7 from MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE ("res5" or "p5").
    Outputs p3..p7 (with the usual FPN.IN_FEATURES res3..res5).
    """
    check_top_block_in_feature(cfg)
    bottom_up = build_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    in_feature = cfg.MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE
    if in_feature == "res5":
        in_channels = bottom_up.output_shape()["res5"].channels
    else:  # an FPN output: out_channels wide
        in_channels = out_channels
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(in_channels, out_channels, in_feature=in_feature),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
