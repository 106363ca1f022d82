"""
Checking an engine against eager mode before it is reported as made: an fp32 engine must give
the eager model's detections (as sets) on real images, alone and in batches; an fp16, bf16 or int8
engine is scored by COCOEvaluator on images not used for its calibration, beside the eager
model on the same images, and refused when it loses more than an allowed AP.
"""
import hashlib
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.evaluation import COCOEvaluator, inference_on_dataset

from ..data.mapper import CheckedDatasetMapper
from ..utils.detection_sets import detection_differences

__all__ = [
    "mapped_test_images",
    "calibration_batches",
    "compare_with_eager",
    "held_out_subset",
    "evaluate_ap",
]


def mapped_test_images(cfg, dataset_name: str, first: int = 0, count: Optional[int] = None) -> List[Dict]:
    """
    Images ``first`` .. ``first + count`` of a registered dataset as the test loader gives them:
    dicts with "image" (C, H, W) after the config's test-time resize, "height", "width",
    "file_name".
    """
    dicts = DatasetCatalog.get(dataset_name)[first: None if count is None else first + count]
    mapper = CheckedDatasetMapper(cfg, False)
    return [mapper(d) for d in dicts]


@torch.no_grad()
def calibration_batches(model: nn.Module, cfg, dataset_name: str, num_images: int) -> Tuple[List[Tensor], List[Dict]]:
    """
    The first ``num_images`` images of ``dataset_name``, each normalized and padded as the
    model feeds its backbone: batches (1, 3, H, W), and which images they are
    (``{"file_name", "image_id"}`` each).
    """
    inputs = mapped_test_images(cfg, dataset_name, 0, num_images)
    if not inputs:
        raise ValueError(f"calibration dataset {dataset_name!r} has no images")
    batches = [model.preprocess_image([x]).tensor.cpu() for x in inputs]
    return batches, [{"file_name": x["file_name"], "image_id": x.get("image_id")} for x in inputs]


@torch.no_grad()
def compare_with_eager(eager: nn.Module, engine_model: nn.Module, inputs: Sequence[Dict],
                       batch_size: int = 2) -> List[Tuple[str, int, List[str]]]:
    """
    Run both models on ``inputs`` one at a time and in batches of ``batch_size``. Returns per
    image and batching (description, eager detections, differences as sets).
    """
    report = []
    for size in (1, batch_size):
        for start in range(0, len(inputs), size):
            batch = list(inputs[start: start + size])
            for x, a, b in zip(batch, eager(batch), engine_model(batch)):
                h, w = x["image"].shape[1:]
                what = f"{os.path.basename(x.get('file_name', '?'))} {h}x{w}, batch {len(batch)}"
                report.append((what, len(a["instances"]), detection_differences(a["instances"], b["instances"])))
    return report


def held_out_subset(dataset_name: str, exclude_files: Sequence[str], output_dir: str,
                    max_images: Optional[int] = None) -> str:
    """
    Register (once) and return a dataset of the images of ``dataset_name`` not in
    ``exclude_files``, with its metadata and its ground truth as a COCO json in ``output_dir``,
    for scoring on images calibration never saw.
    """
    excluded = set(exclude_files)
    key = json.dumps([os.path.abspath(output_dir), sorted(excluded), max_images])
    name = f"{dataset_name}_held_out_{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    if name not in DatasetCatalog.list():
        def load():
            kept = [d for d in DatasetCatalog.get(dataset_name) if d["file_name"] not in excluded]
            if not kept:
                raise ValueError(f"every image of {dataset_name!r} was used for calibration: "
                                 "nothing is left to score the engine on")
            return kept[:max_images] if max_images else kept

        DatasetCatalog.register(name, load)
        metadata = MetadataCatalog.get(dataset_name).as_dict()
        for key in ("name", "json_file"):
            metadata.pop(key, None)
        MetadataCatalog.get(name).set(**metadata)
        # The subset's own ground truth, where every evaluation of it finds it.
        os.makedirs(output_dir, exist_ok=True)
        json_file = os.path.join(output_dir, f"{name}_coco_format.json")
        convert_to_coco_json(name, json_file, allow_cached=False)
        MetadataCatalog.get(name).set(json_file=json_file)
    return name


def evaluate_ap(model: nn.Module, cfg, dataset_name: str, output_dir: str) -> Dict[str, float]:
    """
    COCOEvaluator's box metrics (AP, AP50, ...) of ``model`` on ``dataset_name``; its
    detections go to ``output_dir``.
    """
    loader = build_detection_test_loader(cfg, dataset_name, mapper=CheckedDatasetMapper(cfg, False))
    evaluator = COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_dir)
    results = inference_on_dataset(model, loader, evaluator)
    return {k: float(v) for k, v in results.get("bbox", {}).items()}
