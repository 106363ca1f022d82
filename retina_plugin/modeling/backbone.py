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

from ..config_domains import check_value

__all__ = ["build_focal_retinanet_resnet_fpn_backbone"]


@BACKBONE_REGISTRY.register()
def build_focal_retinanet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """
    ResNet-FPN with P6/P7 from MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE ("res5" or "p5").
    Outputs p3..p7 (with the usual FPN.IN_FEATURES res3..res5).
    """
    in_feature = cfg.MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE
    check_value("MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE", in_feature)
    bottom_up = build_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
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
