import os
from pathlib import Path

import pytest
import torch

from detectron2.config import get_cfg

import retina_plugin  # noqa: F401  (registers everything)
from retina_plugin import add_retina_config

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
TINY_CONFIG = Path(__file__).resolve().parent / "configs" / "tiny.yaml"


def two_image_training_batch():
    """Two 128-px noise images with one box each (classes 0 and 1), as training inputs."""
    from detectron2.structures import Boxes, Instances

    inputs = []
    for i in range(2):
        instances = Instances((128, 128))
        instances.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 40.0, 50.0]]) + 30 * i)
        instances.gt_classes = torch.tensor([i])
        inputs.append({"image": torch.rand(3, 128, 128) * 255, "instances": instances})
    return inputs


def load_cfg(config_file=TINY_CONFIG, opts=()):
    cfg = get_cfg()
    add_retina_config(cfg)
    cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.fixture(autouse=True, scope="session")
def _datasets_in_tmp(tmp_path_factory):
    """
    Built-in datasets are drawn under $DETECTRON2_DATASETS: keep tests out of the repo.
    """
    old = os.environ.get("DETECTRON2_DATASETS")
    os.environ["DETECTRON2_DATASETS"] = str(tmp_path_factory.mktemp("datasets"))
    yield
    if old is None:
        os.environ.pop("DETECTRON2_DATASETS")
    else:
        os.environ["DETECTRON2_DATASETS"] = old


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# A tiny model trained for real (a few hundred images seen), shared by the deployment and
# batch-prediction tests: AP is well above zero, so an AP drop is measurable.
TRAINED_TINY_OPTS = [
    "SOLVER.OPTIMIZER", "AdamW", "SOLVER.BASE_LR", "0.002", "SOLVER.WEIGHT_DECAY", "0.05",
    "SOLVER.MAX_ITER", "120", "SOLVER.STEPS", "(100,)", "SOLVER.WARMUP_ITERS", "20",
    "SOLVER.IMS_PER_BATCH", "4", "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "100000",
    "MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64], [128], [256]]",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[1.0]]",
    "DATASETS.TRAIN", "('tiny_shapes_train',)", "DATASETS.TEST", "('tiny_shapes_val',)",
]


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """(cfg, weights path): the tiny config trained on 48 shapes images, validated on 24."""
    from retina_plugin.data import register_coco_json
    from retina_plugin.data.shapes import generate_shapes_split
    from retina_plugin.training.trainer import Trainer

    root = tmp_path_factory.mktemp("tiny_shapes")
    for split, count, seed in (("train", 48, 21), ("val", 24, 22)):
        json_file = generate_shapes_split(str(root / split), count, seed=seed, image_size=128)
        register_coco_json(f"tiny_shapes_{split}", json_file, str(root / split))
    output = root / "output"
    cfg = load_cfg(opts=[*TRAINED_TINY_OPTS, "OUTPUT_DIR", str(output)])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    cfg.MODEL.WEIGHTS = str(output / "model_final.pth")
    return cfg, cfg.MODEL.WEIGHTS
