"""
FocalRetinaNet: the one-stage detector of :paper:`RetinaNet`, as a detectron2 meta-architecture.
"""
import logging
import math
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torchvision.ops import nms

from detectron2.config import configurable
from detectron2.layers import batched_nms, cat
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import log_first_n

from ..config_domains import anchors_per_location, check_model_values, check_value
from .assigners import build_anchor_assigner
from .fast_inference import FoldedBackboneAndHead, folded_copy_applies
from .head import build_focal_retinanet_head
from .losses import build_box_loss, build_classification_loss
from .quality_focal_loss import predicted_box_ious
from .weights_version import WeightsVersion

__all__ = ["FocalRetinaNet", "StaleEngineError"]

# (normalized, padded images (N, 3, H, W)) -> (features per level, [logits, deltas] per level)
DensePredictor = Callable[[Tensor], Tuple[List[Tensor], List[List[Tensor]]]]


class StaleEngineError(RuntimeError):
    """An attached engine asked to answer for weights the model no longer has."""


@META_ARCH_REGISTRY.register()
class FocalRetinaNet(DenseDetector):
    """
    RetinaNet: an FPN backbone, a head shared across levels predicting K sigmoid scores and
    4 box deltas for each of A anchors per location, trained with the focal loss.

    Inputs and outputs are detectron2's standard ones (see :class:`DenseDetector`): training
    returns ``{"loss_cls", "loss_box_reg"}``, inference a list of ``{"instances": Instances}``
    with ``pred_boxes``, ``scores`` and ``pred_classes``.

    Backbone and head run in :meth:`features_and_predictions`, the one place that computes
    them. In eval mode, with ``fast_inference``, it runs ``inference_copy``, a copy of both
    with the norms folded into the convs (:mod:`retina_plugin.modeling.fast_inference`), built
    by :meth:`prepare_for_inference` or the first eval-mode call and built anew whenever the
    weights changed since (see :mod:`retina_plugin.modeling.weights_version`); the modules
    themselves run while a submodule is in training mode or has a forward hook. An engine
    attached with :meth:`attach_engine` (:mod:`retina_plugin.deploy`) takes its place, and
    refuses to answer once the model's weights changed after it was attached.
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
        inference_dtype: str = "float32",
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
            fast_inference: in eval mode, run a copy of the backbone and head with norms
                folded into convs, in channels_last; same detections (tested as sets).
            inference_dtype: "float32", or "bfloat16" for a bfloat16 fast path (not the same
                detections: compare AP); decoding, scores and NMS stay float32.
        """
        super().__init__(
            backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        check_value("MODEL.FOCAL_RETINANET.LOSS_NORMALIZER", loss_normalizer)
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
        check_value("MODEL.FOCAL_RETINANET.INFERENCE_DTYPE", inference_dtype)
        self.inference_dtype = inference_dtype
        # Derived state, never in the state_dict (plain attributes, not submodules): the
        # folded copy of backbone + head, an attached deployment engine and the weights the
        # model had when it was attached.
        self.inference_copy: Optional[FoldedBackboneAndHead] = None
        self.inference_engine: Optional[DensePredictor] = None
        self._engine_weights: Optional[WeightsVersion] = None

    @classmethod
    def from_config(cls, cfg):
        check_model_values(cfg)
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
        return {
            "backbone": backbone,
            "head": build_focal_retinanet_head(cfg, feature_shapes),
            "head_in_features": in_features,
            "anchor_generator": build_anchor_generator(cfg, feature_shapes),
            "box2box_transform": Box2BoxTransform(weights=cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS),
            "anchor_assigner": build_anchor_assigner(cfg, anchors_per_location(cfg)),
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
            "inference_dtype": cfg.MODEL.FOCAL_RETINANET.INFERENCE_DTYPE,
        }

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[Dict[str, Tensor]]):
        """
        detectron2's model call: ``batched_inputs`` is a list of dataset dicts with "image"
        (C, H, W) and, in training, "instances"; see :meth:`DenseDetector.forward`.
        """
        images = self.preprocess_image(batched_inputs)
        features, predictions = self.features_and_predictions(images.tensor)
        if self.training:
            assert not torch.jit.is_scripting(), "Not supported"
            assert "instances" in batched_inputs[0], "Instance annotations are missing in training!"
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            return self.forward_training(images, features, predictions, gt_instances)
        results = self.forward_inference(images, features, predictions)
        if torch.jit.is_scripting():
            return results
        return self.postprocess(results, batched_inputs, images.image_sizes)

    def features_and_predictions(self, images: Tensor) -> Tuple[List[Tensor], List[List[Tensor]]]:
        """
        The one place backbone and head run, for training, inference, test-time augmentation
        and every tool.

        Args:
            images: (N, 3, H, W) normalized, padded batch (``preprocess_image(...).tensor``).
        Returns:
            features: per level of ``head_in_features``, (N, C, Hi, Wi).
            predictions: [logits per level (N, A*K, Hi, Wi), deltas per level (N, A*4, Hi, Wi)].
        """
        if not torch.jit.is_scripting():
            runner = self._inference_runner()
            if runner is not None:
                return runner(images)
        features = self.backbone(images)
        features = [features[f] for f in self.head_in_features]
        return features, self.head(features)

    @torch.jit.unused
    def predictions_per_anchor(self, predictions: List[List[Tensor]]) -> Tuple[List[Tensor], List[Tensor]]:
        """
        ``predictions`` of :meth:`features_and_predictions` per anchor: logits per level
        (N, Hi*Wi*A, K) and deltas per level (N, Hi*Wi*A, 4), in the anchor generator's order.
        """
        logits, deltas = self._transpose_dense_predictions(predictions, [self.num_classes, 4])
        return logits, deltas

    @torch.jit.unused
    def _inference_runner(self) -> Optional[DensePredictor]:
        """What runs backbone + head instead of the modules themselves, if anything."""
        if self.training or torch.jit.is_tracing():
            # Export traces the modules themselves.
            return None
        if self.inference_engine is not None:
            self._check_engine_weights()
            return self.inference_engine
        if not self.fast_inference:
            return None
        applies, why_not = folded_copy_applies([self.backbone, self.head])
        if not applies:
            log_first_n(logging.INFO, f"FocalRetinaNet: the folded fast path stands aside while {why_not}; "
                        "the modules themselves run", n=1, key="caller")
            return None
        return self.prepare_for_inference()

    @torch.jit.unused
    def prepare_for_inference(self, rebuild: bool = False) -> FoldedBackboneAndHead:
        """
        ``inference_copy`` (backbone and head with folded norms, channels_last, in
        ``inference_dtype``), built anew when missing, when the weights changed since it was
        built, when ``inference_dtype`` changed, or when ``rebuild`` (after writes through
        ``param.data``, which torch does not count).
        """
        copy = self.inference_copy
        dtype = torch.bfloat16 if self.inference_dtype == "bfloat16" else None  # None: the modules' own
        if copy is None or rebuild or copy.dtype != dtype or not copy.is_current(self.backbone, self.head):
            self.inference_copy = None  # free the old copy before building the new one
            self.inference_copy = FoldedBackboneAndHead(self.backbone, self.head, self.head_in_features,
                                                        dtype=dtype)
        return self.inference_copy

    @torch.jit.unused
    def attach_engine(self, engine: DensePredictor) -> None:
        """
        Run ``engine`` (:mod:`retina_plugin.deploy`) in place of backbone and head in eval
        mode. It answers only while the model's backbone and head weights stay those it had
        when the engine was attached.
        """
        self.inference_engine = engine
        self._engine_weights = WeightsVersion([self.backbone, self.head])

    @torch.jit.unused
    def detach_engine(self) -> Optional[DensePredictor]:
        """Stop running the attached engine (returned); backbone and head run again."""
        engine, self.inference_engine, self._engine_weights = self.inference_engine, None, None
        return engine

    @torch.jit.unused
    def _check_engine_weights(self) -> None:
        if self._engine_weights is None:
            # Attached by assignment: from now on, these weights are the engine's.
            self._engine_weights = WeightsVersion([self.backbone, self.head])
        elif not self._engine_weights.matches([self.backbone, self.head]):
            raise StaleEngineError(
                f"the engine {self.inference_engine!r} is attached to this model, and the model's "
                "backbone or head weights changed after it was attached (load_state_dict, copy_, "
                ".to(), ...); the engine still computes the weights it was made from. Call "
                "model.detach_engine() to run the model's own weights, or export the new weights "
                "(tools/export_model.py) and attach that engine (model.attach_engine(load_engine(...)))"
            )

    def train(self, mode: bool = True):
        if mode:
            self.inference_copy = None  # frees its memory; it would be rebuilt anyway
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        # .to(), .cuda(), .half(), ...: free the copy on the old device now.
        self.inference_copy = None
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        # deepcopy and pickle leave derived state behind: the copy's tensors are new ones, so
        # its folded copy would be rebuilt anyway, and an engine it carries takes the copy's
        # weights as its own on the first call.
        state = super().__getstate__()
        state["inference_copy"] = None
        state["_engine_weights"] = None
        return state

    @torch.jit.unused
    def postprocess(self, results: List[Instances], batched_inputs: List[Dict], image_sizes) -> List[Dict]:
        """
        Detections in each input's "height" x "width" frame (default: the size fed to the
        network), clipped, empty boxes dropped: ``[{"instances": Instances}]``.
        """
        processed = []
        for instances, input_per_image, image_size in zip(results, batched_inputs, image_sizes):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            processed.append({"instances": detector_postprocess(instances, height, width)})
        return processed

    # ------------------------------------------------------------------ training
    def forward_training(self, images, features, predictions, gt_instances):
        pred_logits, pred_deltas = self.predictions_per_anchor(predictions)
        anchors_per_level = self.anchor_generator(features)
        gt_labels, matched_gt_boxes = self.label_anchors(anchors_per_level, gt_instances)
        anchors = Boxes.cat(anchors_per_level)
        return self.losses(anchors, pred_logits, pred_deltas, gt_labels, matched_gt_boxes)

    @torch.no_grad()
    def label_anchors(
        self,
        anchors: Union[List[Boxes], Boxes],
        gt_instances: List[Instances],
        num_anchors_per_level: Optional[List[int]] = None,
    ) -> Tuple[Tensor, Tensor]:
        """
        Args:
            anchors: per level, Boxes (R_l, 4), as detectron2's ``RetinaNet.label_anchors``
                takes them; or Boxes (R, 4) of all levels concatenated, with
                ``num_anchors_per_level`` (R_l per level, sum R) for assigners that work per
                level (ATSS; the IoU assigner needs no levels).
            gt_instances: per image, Instances with ``gt_boxes`` and ``gt_classes``.
        Returns:
            gt_labels: (N, R) int64; a class in [0, K) for foreground anchors, K for
                background, -1 for ignored ones (e.g. IoU between the two thresholds).
            matched_gt_boxes: (N, R, 4) the box each anchor is matched to (XYXY);
                meaningful for foreground anchors only.
        """
        if isinstance(anchors, (list, tuple)):
            levels = [len(a) for a in anchors]
            if num_anchors_per_level is not None and list(num_anchors_per_level) != levels:
                raise ValueError(
                    f"num_anchors_per_level {list(num_anchors_per_level)} contradicts the "
                    f"anchors given per level ({levels})"
                )
            num_anchors_per_level = levels
            anchors = Boxes.cat(anchors)
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
        # Box loss on the foreground anchors only, instead of on all N * R and masking.
        _, foreground_anchor_idxs = foreground.nonzero(as_tuple=True)
        foreground_deltas = cat(pred_deltas, dim=1)[foreground]
        foreground_anchors = anchors.tensor[foreground_anchor_idxs]
        if getattr(self.classification_loss, "needs_quality_targets", False):
            # Background anchors keep target 0; ignored ones are not passed.
            quality_targets = torch.zeros(foreground.shape, device=foreground.device)
            quality_targets[foreground] = predicted_box_ious(
                self.box2box_transform,
                foreground_deltas,
                foreground_anchors,
                matched_gt_boxes[foreground],
            )
            cls_context["quality_targets"] = quality_targets[valid]
        loss_cls = self.classification_loss(
            cat(pred_logits, dim=1)[valid], gt_labels[valid], **cls_context
        )
        loss_box_reg = self.box_loss(
            foreground_deltas, foreground_anchors, matched_gt_boxes[foreground]
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
    # torch.jit.script (see retina_plugin/deploy/export.py).
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
        # The inference copy and engine are Python-side state.
        return [name for name in self._modules if name not in self.INFERENCE_MODULES] + [
            "inference_copy",
            "inference_engine",
            "_engine_weights",
        ]

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
