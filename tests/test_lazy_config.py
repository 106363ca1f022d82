"""
The LazyConfig configs build the same models as their yaml counterparts, and train with
detectron2's lazy-config training loop.
"""
import json

import pytest
import torch

from detectron2.config import instantiate

from retina_plugin.data.register import register_coco_json
from retina_plugin.data.shapes import generate_shapes_split
from retina_plugin.config import build_any_model, load_config
from retina_plugin.training.lazy_training import do_train

from .conftest import CONFIGS, load_cfg


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["retina_R50", "demo_R18_cpu"])
def test_lazy_config_builds_the_yaml_model(name):
    lazy_model = build_any_model(load_config(str(CONFIGS / f"{name}.py")))
    yaml_model = build_any_model(load_cfg(CONFIGS / f"{name}.yaml"))
    assert _shapes(lazy_model) == _shapes(yaml_model)
    assert type(lazy_model.head) is type(yaml_model.head)
    for attr in ("num_classes", "test_score_thresh", "test_topk_candidates", "test_nms_thresh",
                 "max_detections_per_image", "loss_normalizer", "input_format"):
        assert getattr(lazy_model, attr) == getattr(yaml_model, attr), attr
    assert repr(lazy_model.classification_loss) == repr(yaml_model.classification_loss)


@torch.no_grad()
def test_lazy_demo_model_predicts_like_the_yaml_one():
    # Same weights: same detections, so anchors, normalization and thresholds agree too.
    yaml_model = build_any_model(load_cfg(CONFIGS / "demo_R18_cpu.yaml")).eval()
    with torch.no_grad():
        yaml_model.head.cls_score.weight.normal_(0, 0.1)
        yaml_model.head.cls_score.bias.zero_()
    lazy_model = build_any_model(load_config(str(CONFIGS / "demo_R18_cpu.py"))).eval()
    lazy_model.load_state_dict(yaml_model.state_dict())
    image = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0)) * 255
    expected = yaml_model([{"image": image}])[0]["instances"]
    actual = lazy_model([{"image": image}])[0]["instances"]
    assert len(expected) > 0
    torch.testing.assert_close(actual.pred_boxes.tensor, expected.pred_boxes.tensor)
    torch.testing.assert_close(actual.scores, expected.scores)


def test_box_coding_weights_are_defined_once():
    cfg = load_config(str(CONFIGS / "retina_R50.py"), ["model.box2box_transform.weights=[2.0,2.0,1.0,1.0]"])
    model = instantiate(cfg.model)
    assert tuple(model.box2box_transform.weights) == (2.0, 2.0, 1.0, 1.0)
    assert tuple(model.box_loss.box2box_transform.weights) == (2.0, 2.0, 1.0, 1.0)


def test_bad_config_file_name():
    with pytest.raises(ValueError, match="expected a .yaml or .py"):
        load_config("configs/retina_R50.json")


@pytest.mark.slow
def test_lazy_demo_config_trains_with_the_lazy_loop(tmp_path):
    json_file = generate_shapes_split(str(tmp_path / "data"), 4, seed=3, image_size=128)
    register_coco_json("lazy_tiny", json_file, str(tmp_path / "data"))
    cfg = load_config(str(CONFIGS / "demo_R18_cpu.py"), [
        "dataloader.train.dataset.names=lazy_tiny", "dataloader.test.dataset.names=lazy_tiny",
        "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0", "train.max_iter=3", "train.log_period=1",
        f"train.output_dir={tmp_path / 'out'}",
    ])
    trainer = do_train(cfg)
    assert trainer.iter == 3  # detectron2 counts the iteration after the last
    assert (tmp_path / "out" / "model_final.pth").is_file()
    with open(tmp_path / "out" / "metrics.json") as f:
        records = [json.loads(line) for line in f if line.strip()]
    losses = [r["total_loss"] for r in records if "total_loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert any("bbox/AP" in r for r in records)  # the final evaluation ran
