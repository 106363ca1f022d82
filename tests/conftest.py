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
