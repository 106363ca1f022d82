"""
FocalRetinaNet: the one-stage detector of :paper:`RetinaNet`, as a detectron2 meta-architecture.
"""
import math
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torchvision.ops import nms

from detectron2.config import configurable
from detectron2.layers import batched_nms, cat
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from ..config_checks import check_model_config
from .fast_inference import FastInferenceModules, fast_inference_forward
from .assigners import build_anchor_assigner
from .backbone import check_top_block_in_feature
from .head import build_focal_retinanet_head
from .losses import build_box_loss, build_classification_loss

__all__ = ["FocalRetinaNet"]

# detectron2's DefaultAnchorGenerator calls torch.meshgrid without `indexing` (its "ij"
# default is what it means); the deprecation notice would otherwise show in every run.
warnings.filterwarnings(
    "ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning
)

LOSS_NORMALIZERS = ("num_foreground", "ema")


@META_ARCH_REGISTRY.register()
class FocalRetinaNet(DenseDetector):
    """
    RetinaNet: an FPN backbone, a head shared across levels predicting K sigmoid scores and
    4 box deltas for each of A anchors per location, trained with the focal loss.

    Inputs and outputs are detectron2's standard ones (see :class:`DenseDetector`): training
    returns ``{"loss_cls", "loss_box_reg"}``, inference a list of ``{"instances": Instances}``
    with ``pred_boxes``, ``scores`` and ``pred_classes``.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        head_in_features: List[str],
        anchor_generator: nn.Module,
        box2box_transform: Box2BoxTransform,
        anchor_assigner: nn.Module,
        num_classes: int,
        classification_loss: nn.Module,
        box_loss: nn.Module,
        box_loss_weight: float = 1.0,
        loss_normalizer: str = "num_foreground",
        loss_normalizer_momentum: float = 0.9,
        test_score_thresh: float = 0.05,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.5,
        max_detections_per_image: int = 100,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
        input_format: str = "BGR",
        fast_inference: bool = True,
    ):
        """
        Args:
            backbone: detectron2 backbone, e.g. from ``build_retinanet_resnet_fpn_backbone``.
            head: maps per-level features to per-level (N, A*K, Hi, Wi) logits and
                (N, A*4, Hi, Wi) deltas, e.g. :class:`FocalRetinaNetHead`.
            head_in_features: backbone outputs fed to the head, highest resolution first.
            anchor_generator: e.g. ``DefaultAnchorGenerator``; A anchors per location.
            box2box_transform: (dx, dy, dw, dh) coding of boxes relative to anchors.
            anchor_assigner: labels one image's anchors foreground (1) / background (0) /
                ignored (-1), see :mod:`retina_plugin.modeling.assigners`.
            num_classes: K.
            classification_loss: (logits (M, K), labels (M,)) -> summed loss.
            box_loss: (deltas (M, 4), anchors (M, 4), gt boxes (M, 4)) -> summed loss.
            box_loss_weight: weight of the box loss.
            loss_normalizer: "num_foreground" (the paper: foreground anchors in the whole
                batch) or "ema" (detectron2's moving average of it).
            loss_normalizer_momentum: momentum of the "ema" normalizer.
            test_score_thresh: per level, only scores above this are candidates.
            test_topk_candidates: per level, at most this many candidates (by score).
            test_nms_thresh: IoU of class-wise NMS over the merged levels.
            max_detections_per_image: detections kept per image after NMS.
            pixel_mean, pixel_std, input_format: image normalization, see DenseDetector.
            fast_inference: in eval mode without autograd, run a copy of the backbone and
                head with norms folded into convs, in channels_last (see
                :mod:`retina_plugin.modeling.fast_inference`); same detections.
        """
        super().__init__(
            backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        if loss_normalizer not in LOSS_NORMALIZERS:
            raise ValueError(
                f"loss_normalizer (MODEL.FOCAL_RETINANET.LOSS_NORMALIZER) must be one of "
                f"{LOSS_NORMALIZERS}, got {loss_normalizer!r}"
            )
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.anchor_assigner = anchor_assigner
        self.classification_loss = classification_loss
        self.box_loss = box_loss
        self.box_loss_weight = box_loss_weight
        self.loss_normalizer = loss_normalizer
        self.loss_normalizer_momentum = loss_normalizer_momentum
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image
        self.input_format = input_format
        self.fast_inference = fast_inference
        self._fast_modules = FastInferenceModules()

    @classmethod
    def from_config(cls, cfg):
        check_model_config(cfg)  # issue 9: every key in its domain, named if not
        check_top_block_in_feature(cfg)
        backbone = build_backbone(cfg)
        backbone_shapes = backbone.output_shape()
        in_features = list(cfg.MODEL.RETINANET.IN_FEATURES)
        missing = [f for f in in_features if f not in backbone_shapes]
        if missing:
            raise ValueError(
                f"MODEL.RETINANET.IN_FEATURES names {missing}, which the backbone "
                f"({cfg.MODEL.BACKBONE.NAME}) does not output; it outputs {sorted(backbone_shapes)}"
            )
        feature_shapes = [backbone_shapes[f] for f in in_features]
        anchor_generator = build_anchor_generator(cfg, feature_shapes)
        num_anchors = anchor_generator.num_anchors
        if len(set(num_anchors)) != 1:
            raise ValueError(
                f"MODEL.ANCHOR_GENERATOR gives different numbers of anchors per location on "
                f"different levels ({num_anchors}); the shared head needs the same on all"
            )
        return {
            "backbone": backbone,
            "head": build_focal_retinanet_head(cfg, feature_shapes),
            "head_in_features": in_features,
            "anchor_generator": anchor_generator,
            "box2box_transform": Box2BoxTransform(weights=cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS),
            "anchor_assigner": build_anchor_assigner(cfg, num_anchors[0]),
            "num_classes": cfg.MODEL.RETINANET.NUM_CLASSES,
            "classification_loss": build_classification_loss(cfg),
            "box_loss": build_box_loss(cfg),
            "box_loss_weight": cfg.MODEL.FOCAL_RETINANET.BOX_LOSS_WEIGHT,
            "loss_normalizer": cfg.MODEL.FOCAL_RETINANET.LOSS_NORMALIZER,
            "loss_normalizer_momentum": cfg.MODEL.FOCAL_RETINANET.LOSS_NORMALIZER_MOMENTUM,
            "test_score_thresh": cfg.MODEL.RETINANET.SCORE_THRESH_TEST,
            "test_topk_candidates": cfg.MODEL.RETINANET.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": cfg.MODEL.RETINANET.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
            "fast_inference": cfg.MODEL.FOCAL_RETINANET.FAST_INFERENCE,
        }

    def __call__(self, *args, **kwargs):
        # The inference fast path is taken here rather than in forward(), which stays
        # DenseDetector's: that is what TorchScript compiles when the model is scripted for
        # export, and a second method built from the same function would clash there.
        if self._use_fast_inference():
            return fast_inference_forward(self, self._fast_modules, *args, **kwargs)
        return super().__call__(*args, **kwargs)

    def _use_fast_inference(self) -> bool:
        # Not while tracing (export) or when someone asks for gradients in eval mode.
        return (
            self.fast_inference
            and not self.training
            and not torch.is_grad_enabled()
            and not torch.jit.is_tracing()
        )

    # ------------------------------------------------------------------ training
    def forward_training(self, images, features, predictions, gt_instances):
        pred_logits, pred_deltas = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4]
        )
        anchors_per_level = self.anchor_generator(features)
        anchors = Boxes.cat(anchors_per_level)
        gt_labels, matched_gt_boxes = self.label_anchors(
            anchors, gt_instances, [len(a) for a in anchors_per_level]
        )
        return self.losses(anchors, pred_logits, pred_deltas, gt_labels, matched_gt_boxes)

    @torch.no_grad()
    def label_anchors(
        self,
        anchors: Boxes,
        gt_instances: List[Instances],
        num_anchors_per_level: Optional[List[int]] = None,
    ) -> Tuple[Tensor, Tensor]:
        """
        Args:
            anchors: Boxes (R, 4), the anchors of all levels concatenated.
            gt_instances: per image, Instances with ``gt_boxes`` and ``gt_classes``.
            num_anchors_per_level: R_l per level (sum R); None: all R on one level.
        Returns:
            gt_labels: (N, R) int64; a class in [0, K) for foreground anchors, K for
                background, -1 for ignored ones (e.g. IoU between the two thresholds).
            matched_gt_boxes: (N, R, 4) the box each anchor is matched to (XYXY);
                meaningful for foreground anchors only.
        """
        if num_anchors_per_level is None:
            num_anchors_per_level = [len(anchors)]
        gt_labels, matched_gt_boxes = [], []
        for instances in gt_instances:
            if len(instances) == 0:
                # Nothing to match: every anchor is a (possibly hard) negative.
                gt_labels.append(
                    torch.full((len(anchors),), self.num_classes, device=anchors.device)
                )
                matched_gt_boxes.append(torch.zeros_like(anchors.tensor))
                continue
            matched_idxs, match_labels = self.anchor_assigner(
                instances.gt_boxes, anchors, num_anchors_per_level
            )
            labels = instances.gt_classes[matched_idxs]
            labels[match_labels == 0] = self.num_classes
            labels[match_labels == -1] = -1
            gt_labels.append(labels)
            matched_gt_boxes.append(instances.gt_boxes.tensor[matched_idxs])
        return torch.stack(gt_labels), torch.stack(matched_gt_boxes)

    def losses(self, anchors, pred_logits, pred_deltas, gt_labels, matched_gt_boxes):
        """
        Args:
            anchors: Boxes (R, 4), all levels concatenated.
            pred_logits, pred_deltas: per level, (N, Ri, K) and (N, Ri, 4).
            gt_labels, matched_gt_boxes: (N, R) and (N, R, 4), see :meth:`label_anchors`.
        Returns:
            {"loss_cls", "loss_box_reg"}: scalars, each summed over anchors and divided by
            the loss normalizer.
        """
        num_images = gt_labels.shape[0]
        valid = gt_labels >= 0
        foreground = valid & (gt_labels != self.num_classes)
        num_foreground = foreground.sum()
        get_event_storage().put_scalar("num_pos_anchors", num_foreground.item() / num_images)
        normalizer = self._normalizer(num_foreground)

        # Losses that pick anchors per image (OHEM) also get each anchor's image and box.
        cls_context = {}
        if getattr(self.classification_loss, "needs_anchor_context", False):
            image_idxs, anchor_idxs = valid.nonzero(as_tuple=True)
            cls_context = {"image_idxs": image_idxs, "anchor_boxes": anchors.tensor[anchor_idxs]}
        loss_cls = self.classification_loss(
            cat(pred_logits, dim=1)[valid], gt_labels[valid], **cls_context
        )
        # Box loss on the foreground anchors only, instead of on all N * R and masking.
        _, foreground_anchor_idxs = foreground.nonzero(as_tuple=True)
        loss_box_reg = self.box_loss(
            cat(pred_deltas, dim=1)[foreground],
            anchors.tensor[foreground_anchor_idxs],
            matched_gt_boxes[foreground],
        )
        return {
            "loss_cls": loss_cls / normalizer,
            "loss_box_reg": self.box_loss_weight * loss_box_reg / normalizer,
        }

    def _normalizer(self, num_foreground: Tensor) -> float:
        if self.loss_normalizer == "ema":
            return self._ema_update(
                "_loss_normalizer_ema",
                max(num_foreground.item(), 1),
                initial_value=100,
                momentum=self.loss_normalizer_momentum,
            )
        # The paper divides by the foreground anchors of the whole batch. Each worker sees
        # part of it and DDP averages gradients over workers, so each divides by the
        # global count / world size.
        world_size = comm.get_world_size()
        total = num_foreground.detach().float()
        if world_size > 1:
            torch.distributed.all_reduce(total)
        return max(total.item(), 1.0) / world_size

    # ----------------------------------------------------------------- inference
    # Inference is written to be exported: no Python number is derived from a tensor, so that
    # a trace (TorchScript, ONNX) stays right at every input size, and it compiles with
    # torch.jit.script (see retina_plugin/export.py).
    def forward_inference(
        self, images: ImageList, features: List[Tensor], predictions: List[List[Tensor]]
    ) -> List[Instances]:
        pred_logits, pred_deltas = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4]
        )
        anchors = self.anchor_generator(features)
        results: List[Instances] = []
        for i, image_size in enumerate(images.image_sizes):
            results.append(
                self.inference_single_image(
                    anchors, [x[i] for x in pred_logits], [x[i] for x in pred_deltas], image_size
                )
            )
        return results

    def inference_single_image(
        self,
        anchors: List[Boxes],
        pred_logits: List[Tensor],
        pred_deltas: List[Tensor],
        image_size: Tuple[int, int],
    ) -> Instances:
        """
        Args:
            anchors: per level, Boxes (Ri, 4).
            pred_logits, pred_deltas: per level, (Ri, K) and (Ri, 4), for this image.
            image_size: (height, width) of the image as fed to the network.
        Returns:
            Instances with at most ``max_detections_per_image`` detections.
        """
        boxes, scores, classes = self.decode_candidates(anchors, pred_logits, pred_deltas)
        keep = self.class_wise_nms(boxes, scores, classes)
        keep = keep[: self.max_detections_per_image]
        return Instances(
            image_size, pred_boxes=Boxes(boxes[keep]), scores=scores[keep], pred_classes=classes[keep]
        )

    def decode_candidates(
        self, anchors: List[Boxes], pred_logits: List[Tensor], pred_deltas: List[Tensor]
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """
        The detections before NMS: per level, the top ``test_topk_candidates`` (anchor, class)
        pairs scoring above ``test_score_thresh``, decoded.

        Args:
            anchors, pred_logits, pred_deltas: per level, Boxes (Ri, 4), (Ri, K), (Ri, 4).
        Returns:
            boxes (M, 4) XYXY, scores (M,), classes (M,) int64; levels in order, each sorted
            by decreasing score.
        """
        # Comparing logits with logit(threshold) selects the same (anchor, class) pairs as
        # comparing sigmoid scores, without a sigmoid over all Ri * K of them.
        logit_thresh = _logit(self.test_score_thresh)
        scores_per_level: List[Tensor] = []
        classes_per_level: List[Tensor] = []
        deltas_per_level: List[Tensor] = []
        anchors_per_level: List[Tensor] = []
        for anchors_i, logits_i, deltas_i in zip(anchors, pred_logits, pred_deltas):
            logits_i = logits_i.flatten()
            candidates = torch.nonzero(logits_i > logit_thresh).squeeze(1)
            num_candidates = candidates.shape[0]
            if isinstance(num_candidates, Tensor):
                # Tracing records sizes as tensors: k then follows the input's size instead
                # of being frozen at the traced image's count.
                num_topk = torch.clamp(num_candidates, max=self.test_topk_candidates)
            else:
                num_topk = min(num_candidates, self.test_topk_candidates)
            scores_i, order = logits_i[candidates].sigmoid().topk(num_topk)
            candidates = candidates[order]
            anchor_idxs = torch.div(candidates, self.num_classes, rounding_mode="floor")
            scores_per_level.append(scores_i)
            classes_per_level.append(candidates % self.num_classes)
            deltas_per_level.append(deltas_i[anchor_idxs])
            anchors_per_level.append(anchors_i.tensor[anchor_idxs])
        # One decode for all levels.
        boxes = self.box2box_transform.apply_deltas(
            torch.cat(deltas_per_level), torch.cat(anchors_per_level)
        )
        return boxes, torch.cat(scores_per_level), torch.cat(classes_per_level)

    def class_wise_nms(self, boxes: Tensor, scores: Tensor, classes: Tensor) -> Tensor:
        """
        Indices (int64) of the boxes (M, 4) kept by NMS within each class, by decreasing score.
        """
        if torch.jit.is_tracing():
            return _traceable_batched_nms(boxes, scores, classes, self.test_nms_thresh)
        return batched_nms(boxes, scores, classes, self.test_nms_thresh)

    @property
    @torch.jit.unused
    def __jit_ignored_attributes__(self) -> List[str]:
        # torch.jit.script compiles every submodule, used or not; the training-only ones
        # (losses, anchor assignment, anything added later) need not be scriptable. What
        # inference uses is listed in INFERENCE_MODULES; everything else is left out.
        return [name for name in self._modules if name not in self.INFERENCE_MODULES]

    # Submodules that inference (and so TorchScript) uses.
    INFERENCE_MODULES = ("backbone", "head", "anchor_generator")


def _traceable_batched_nms(
    boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float
) -> Tensor:
    """
    Class-wise NMS as one NMS over boxes shifted apart by class, with no data-dependent
    Python branch, so that a trace also runs on images with no candidate at all (where
    torchvision's traced ``batched_nms`` fails on ``max()`` of an empty tensor).
    """
    coords = torch.cat([boxes.flatten(), boxes.new_zeros(1)])
    # Each class gets its own interval, wider than all boxes (negative coordinates included).
    span = coords.max() - coords.min() + 1
    shifted = boxes + (classes.to(boxes) * span)[:, None]
    return nms(shifted, scores, iou_threshold)


def _logit(p: float) -> float:
    if p <= 0:
        return -math.inf
    if p >= 1:
        return math.inf
    return math.log(p / (1 - p))
