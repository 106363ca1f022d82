"""
Test-time augmentation: each augmented version's detections are mapped back to the image
correctly, versions are merged before one NMS, and train_net's Trainer evaluates with it.
"""
import numpy as np
import pytest
import torch

from detectron2.data.transforms import HFlipTransform
from detectron2.modeling import build_model
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA

from retina_plugin.data.register import register_coco_json
from retina_plugin.data.shapes import generate_shapes_split
from retina_plugin.modeling import FocalRetinaNetWithTTA
from retina_plugin.training.trainer import Trainer

from .conftest import load_cfg

SIZE = 128


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_model(load_cfg()).eval()
    with torch.no_grad():  # spread the untrained logits so that there are detections
        model.head.cls_score.weight.normal_(0, 0.1)
        model.head.cls_score.bias.zero_()
    return model


def _input(height=SIZE, width=160, seed=0):
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed)) * 255
    return {"image": image.round(), "height": height, "width": width}


def _detections(instances):
    return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def _only(version_index, **mapper_args):
    mapper = DatasetMapperTTA(**mapper_args)
    return lambda d: [mapper(d)[version_index]]


@torch.no_grad()  # as in evaluation: model and TTA both take the inference fast path
def test_one_unchanged_version_is_the_model_itself(model):
    tta = FocalRetinaNetWithTTA(None, model, tta_mapper=DatasetMapperTTA([SIZE], 1000, False))
    inputs = [_input()]
    expected = _detections(model(inputs)[0]["instances"])
    actual = _detections(tta(inputs)[0]["instances"])
    assert len(expected[1]) > 0
    for e, a in zip(expected, actual):
        torch.testing.assert_close(a, e)


@torch.no_grad()
def test_flipped_version_maps_back_to_the_image(model):
    inputs = _input()
    tta = FocalRetinaNetWithTTA(None, model, tta_mapper=_only(1, min_sizes=[SIZE], max_size=1000, flip=True))
    boxes, scores, classes = _detections(tta([inputs])[0]["instances"])
    flipped = dict(inputs, image=inputs["image"].flip(-1))
    expected_boxes, expected_scores, expected_classes = _detections(model([flipped])[0]["instances"])
    expected_boxes = torch.as_tensor(HFlipTransform(inputs["width"]).apply_box(expected_boxes.detach().numpy()))
    assert len(scores) > 0
    torch.testing.assert_close(boxes, expected_boxes)
    torch.testing.assert_close(scores, expected_scores)
    assert torch.equal(classes, expected_classes)


@torch.no_grad()
def test_rescaled_version_maps_back_to_the_image(model):
    inputs = _input()
    tta = FocalRetinaNetWithTTA(None, model, tta_mapper=_only(0, min_sizes=[2 * SIZE], max_size=1000, flip=False))
    boxes, scores, _ = _detections(tta([inputs])[0]["instances"])
    larger = DatasetMapperTTA([2 * SIZE], 1000, False)(inputs)[0]
    expected = model([dict(larger, height=inputs["height"], width=inputs["width"])])[0]["instances"]
    assert len(scores) > 0
    torch.testing.assert_close(boxes, expected.pred_boxes.tensor, atol=1e-3, rtol=0)
    torch.testing.assert_close(scores, expected.scores)


def test_versions_are_merged_before_one_nms(model):
    inputs = [_input(seed=1)]
    single = FocalRetinaNetWithTTA(None, model, tta_mapper=DatasetMapperTTA([SIZE], 1000, False))
    merged = FocalRetinaNetWithTTA(None, model, tta_mapper=DatasetMapperTTA([96, SIZE, 160], 1000, True))
    result = merged(inputs)[0]["instances"]
    assert result.image_size == (SIZE, 160)
    assert 0 < len(result) <= model.max_detections_per_image
    boxes = result.pred_boxes.tensor
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 160).all() and (boxes[:, 3] <= SIZE).all()
    # Sorted by score after the joint NMS, and not simply the unaugmented detections.
    assert torch.all(result.scores[:-1] >= result.scores[1:])
    assert not torch.equal(boxes, single(inputs)[0]["instances"].pred_boxes.tensor)


def test_rejects_other_models():
    with pytest.raises(TypeError, match="FocalRetinaNet"):
        FocalRetinaNetWithTTA(None, torch.nn.Linear(2, 2), tta_mapper=lambda d: [d])


def test_trainer_evaluates_with_tta(model, tmp_path):
    root = tmp_path / "val"
    json_file = generate_shapes_split(str(root), 3, seed=5, image_size=SIZE)
    register_coco_json("tta_tiny_val", json_file, str(root))
    cfg = load_cfg(opts=[
        "DATASETS.TEST", "('tta_tiny_val',)", "TEST.AUG.ENABLED", "True",
        "TEST.AUG.MIN_SIZES", "(96, 128)", "OUTPUT_DIR", str(tmp_path / "out"),
    ])
    results = Trainer.test_with_TTA(cfg, model)
    # detectron2's convention: one test set gives its metrics directly, keys suffixed "_TTA".
    assert list(results) == ["bbox_TTA"]
    assert np.isfinite(results["bbox_TTA"]["AP50"])
    assert (tmp_path / "out" / "inference_TTA" / "tta_tiny_val" / "coco_instances_results.json").is_file()
