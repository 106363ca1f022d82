"""
Test-time augmentation for FocalRetinaNet: the image at several scales, each also flipped
horizontally; the detections before NMS of every version, mapped back to the image, are
merged and go through one class-wise NMS. detectron2's own TTA is for R-CNN models only.
"""
from typing import Dict, List

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA
from detectron2.structures import Boxes, Instances

from .meta_arch import FocalRetinaNet

__all__ = ["FocalRetinaNetWithTTA"]


class FocalRetinaNetWithTTA(nn.Module):
    """
    Called like :meth:`FocalRetinaNet.forward` in inference (a list of dataset dicts with
    "image", optionally "height"/"width"), returns ``[{"instances": Instances}]`` in the
    "height" x "width" frame. The versions are those of detectron2's DatasetMapperTTA:
    ``TEST.AUG.MIN_SIZES`` x (as is, flipped if ``TEST.AUG.FLIP``), at most ``TEST.AUG.MAX_SIZE``.
    """

    def __init__(self, cfg, model: nn.Module, tta_mapper=None, batch_size: int = 3):
        """
        Args:
            cfg: the config, for ``TEST.AUG`` (used when ``tta_mapper`` is None).
            model: a FocalRetinaNet (possibly in DistributedDataParallel).
            tta_mapper: dataset dict -> list of augmented dicts, each with "image" and
                "transforms" (the transform from the original image); default DatasetMapperTTA(cfg).
            batch_size: augmented versions run through the network at once.
        """
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        if not isinstance(model, FocalRetinaNet):
            raise TypeError(f"FocalRetinaNetWithTTA needs a FocalRetinaNet, got {type(model).__name__}")
        self.model = model
        self.tta_mapper = tta_mapper if tta_mapper is not None else DatasetMapperTTA(cfg)
        self.batch_size = batch_size

    def forward(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        return [{"instances": self._inference_one_image(x)} for x in batched_inputs]

    @torch.no_grad()
    def _inference_one_image(self, dataset_dict: Dict) -> Instances:
        height = dataset_dict.get("height", dataset_dict["image"].shape[1])
        width = dataset_dict.get("width", dataset_dict["image"].shape[2])
        augmented = self.tta_mapper(dict(dataset_dict, height=height, width=width))
        boxes, scores, classes = [], [], []
        for start in range(0, len(augmented), self.batch_size):
            batch = augmented[start : start + self.batch_size]
            for (b, s, c), aug in zip(self._candidates(batch), batch):
                boxes.append(self._to_original_frame(b, aug["transforms"]))
                scores.append(s)
                classes.append(c)
        boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
        keep = self.model.class_wise_nms(boxes, scores, classes)[: self.model.max_detections_per_image]
        merged = Instances(
            (height, width), pred_boxes=Boxes(boxes[keep]), scores=scores[keep], pred_classes=classes[keep]
        )
        # Clips to the image and drops empty boxes, as the model's own output does.
        return detector_postprocess(merged, height, width)

    def _candidates(self, batch: List[Dict]) -> List:
        """
        Per augmented image, the model's detections before NMS: (boxes (M, 4) in that
        image's frame, scores (M,), classes (M,)). Not clipped yet, as in the model: the
        clipping comes after NMS.
        """
        model = self.model
        images = model.preprocess_image(batch)
        features, predictions = model.features_and_predictions(images.tensor)
        logits, deltas = model.predictions_per_anchor(predictions)
        anchors = model.anchor_generator(features)
        results = []
        for i in range(len(batch)):
            results.append(
                model.decode_candidates(anchors, [x[i] for x in logits], [x[i] for x in deltas])
            )
        return results

    @staticmethod
    def _to_original_frame(boxes: Tensor, transforms) -> Tensor:
        original = transforms.inverse().apply_box(boxes.cpu().numpy())
        return torch.as_tensor(original, dtype=boxes.dtype, device=boxes.device)
