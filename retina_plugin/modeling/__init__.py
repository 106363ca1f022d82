from .assigners import (
    ANCHOR_ASSIGNER_REGISTRY,
    ATSSAssigner,
    IoUAssigner,
    build_anchor_assigner,
)
from .backbone import build_focal_retinanet_resnet_fpn_backbone
from .head import FOCAL_RETINANET_HEAD_REGISTRY, FocalRetinaNetHead, build_focal_retinanet_head
from .losses import (
    BOX_LOSS_REGISTRY,
    CLASSIFICATION_LOSS_REGISTRY,
    build_box_loss,
    build_classification_loss,
    sigmoid_focal_loss,
)
from .meta_arch import FocalRetinaNet, StaleEngineError
from .test_time_augmentation import FocalRetinaNetWithTTA
from .ohem import OHEMLoss
from .quality_focal_loss import QualityFocalLoss
