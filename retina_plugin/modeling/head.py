"""
The RetinaNet head: a classification subnet and a box subnet, shared across FPN levels.
"""
import math
from typing import List, Tuple

from torch import Tensor, nn

from detectron2.config import configurable
from detectron2.layers import CycleBatchNormList, ShapeSpec, get_norm
from detectron2.utils.registry import Registry

from ..config_domains import anchors_per_location
from .registry import get_registered

__all__ = ["FOCAL_RETINANET_HEAD_REGISTRY", "FocalRetinaNetHead", "build_focal_retinanet_head"]

FOCAL_RETINANET_HEAD_REGISTRY = Registry("FOCAL_RETINANET_HEAD")
FOCAL_RETINANET_HEAD_REGISTRY.__doc__ = """
Heads of FocalRetinaNet, chosen by MODEL.FOCAL_RETINANET.HEAD_NAME. A head is called with
``(cfg, input_shape: List[ShapeSpec])`` and maps a list of per-level features (N, C, Hi, Wi)
to ``(logits, deltas)``: per-level lists of (N, A*K, Hi, Wi) and (N, A*4, Hi, Wi).
"""


def build_focal_retinanet_head(cfg, input_shape: List[ShapeSpec]) -> nn.Module:
    head_class = get_registered(
        FOCAL_RETINANET_HEAD_REGISTRY,
        cfg.MODEL.FOCAL_RETINANET.HEAD_NAME,
        "MODEL.FOCAL_RETINANET.HEAD_NAME",
    )
    return head_class(cfg, input_shape)


@FOCAL_RETINANET_HEAD_REGISTRY.register()
class FocalRetinaNetHead(nn.Module):
    """
    Two subnets of ``len(conv_dims)`` x (3x3 conv, [norm], ReLU), then a 3x3 conv to A*K class
    logits or A*4 box deltas. Both are applied to every level with the same weights; the two
    subnets share nothing. Parameter names follow detectron2's ``RetinaNetHead`` so its
    checkpoints load: ``cls_subnet``, ``bbox_subnet``, ``cls_score``, ``bbox_pred``.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_classes: int,
        num_anchors: int,
        conv_dims: List[int],
        norm: str = "",
        prior_prob: float = 0.01,
    ):
        """
        Args:
            input_shape: shapes of the input levels; all must have the same channels.
            num_classes: K, foreground classes (no background class: sigmoid per class).
            num_anchors: A, anchors per location (9 in the paper).
            conv_dims: output channels of each hidden conv of a subnet.
            norm: "" (the paper), "GN", or another :func:`detectron2.layers.get_norm` name.
                "BN"/"SyncBN" keep separate statistics per level (shared affine).
            prior_prob: pi; the classifier starts by predicting p = pi everywhere.
        """
        super().__init__()
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"All head input levels must have the same channels, got {channels}")
        self.num_levels = len(input_shape)
        self.num_classes = num_classes
        self.num_anchors = num_anchors

        def subnet() -> nn.Sequential:
            layers = []
            in_channels = input_shape[0].channels
            for out_channels in conv_dims:
                layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=1))
                if norm:
                    layers.append(self._make_norm(norm, out_channels))
                layers.append(nn.ReLU())
                in_channels = out_channels
            return nn.Sequential(*layers)

        self.cls_subnet = subnet()
        self.bbox_subnet = subnet()
        last_dim = conv_dims[-1] if conv_dims else input_shape[0].channels
        self.cls_score = nn.Conv2d(last_dim, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(last_dim, num_anchors * 4, 3, padding=1)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, mean=0.0, std=0.01)
                nn.init.constant_(module.bias, 0.0)
        # The prior keeps the ~1e5 easy negatives from swamping the loss at iteration 0.
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    def _make_norm(self, norm: str, channels: int) -> nn.Module:
        if norm in ("BN", "SyncBN"):
            # Levels have different statistics: one BN per level, cycled through in forward.
            bn_class = nn.BatchNorm2d if norm == "BN" else nn.SyncBatchNorm
            return CycleBatchNormList(self.num_levels, bn_class=bn_class, num_features=channels)
        return get_norm(norm, channels)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        conv_dim = cfg.MODEL.FOCAL_RETINANET.HEAD_CONV_DIM or input_shape[0].channels
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.RETINANET.NUM_CLASSES,
            "num_anchors": anchors_per_location(cfg),
            "conv_dims": [conv_dim] * cfg.MODEL.RETINANET.NUM_CONVS,
            "norm": cfg.MODEL.RETINANET.NORM,
            "prior_prob": cfg.MODEL.RETINANET.PRIOR_PROB,
        }

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """
        Args:
            features: per-level FPN maps (N, C, Hi, Wi), highest resolution first.
        Returns:
            logits: per level (N, A*K, Hi, Wi).
            deltas: per level (N, A*4, Hi, Wi), (dx, dy, dw, dh) per anchor.
        """
        if len(features) != self.num_levels:
            raise ValueError(f"Expected {self.num_levels} feature levels, got {len(features)}")
        logits = [self.cls_score(self.cls_subnet(x)) for x in features]
        deltas = [self.bbox_pred(self.bbox_subnet(x)) for x in features]
        return logits, deltas
