"""
Every yaml in configs/ assembles a FocalRetinaNet; the paper's schedule is where it belongs.
"""
import subprocess

import pytest

from detectron2.modeling import build_model

from retina_plugin import FocalRetinaNet

from .conftest import CONFIGS, REPO_ROOT, load_cfg

ALL_CONFIGS = sorted(p.name for p in CONFIGS.glob("*.yaml"))


def test_the_configs_users_depend_on_exist():
    assert {
        "Base-RetinaNet.yaml",
        "retina_R50.yaml",
        "retina_R50_3x.yaml",
        "retina_R101.yaml",
        "retina_X101_32x8d.yaml",
        "demo_R18_cpu.yaml",
    } <= set(ALL_CONFIGS)


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_config_builds_a_focal_retinanet(name):
    cfg = load_cfg(CONFIGS / name)
    model = build_model(cfg)
    assert isinstance(model, FocalRetinaNet)
    assert model.head_in_features == ["p3", "p4", "p5", "p6", "p7"]
    assert model.head.num_anchors == 9
    assert model.head.num_classes == cfg.MODEL.RETINANET.NUM_CLASSES
    # The paper's loss, or the quality focal loss of the v2 configs.
    expected_loss = "QualityFocalLoss" if name.endswith("_v2.yaml") else "SigmoidFocalLoss"
    assert type(model.classification_loss).__name__ == expected_loss
    assert (model.test_score_thresh, model.test_topk_candidates) == (0.05, 1000)
    assert (model.test_nms_thresh, model.max_detections_per_image) == (0.5, 100)
    assert model.loss_normalizer == "num_foreground"
    if cfg.MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER == "IoU":
        assert list(model.anchor_assigner.matcher.thresholds[1:-1]) == [0.4, 0.5]
        assert model.anchor_assigner.matcher.allow_low_quality_matches


@pytest.mark.parametrize("v2, v1", [("retina_R50_v2.yaml", "retina_R50.yaml"), ("demo_R18_cpu_v2.yaml", "demo_R18_cpu.yaml"),
                                    ("reef_R18_cpu_v2.yaml", "reef_R18_cpu.yaml")])
def test_v2_configs_change_only_the_accuracy_options(v2, v1):
    new, old = load_cfg(CONFIGS / v2), load_cfg(CONFIGS / v1)
    model = build_model(new)
    assert type(model.anchor_assigner).__name__ == "ATSSAssigner"
    assert new.MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE == "p5" and new.SOLVER.OPTIMIZER == "AdamW"
    assert new.MODEL.RETINANET.BBOX_REG_LOSS_TYPE == "giou"
    assert type(model.classification_loss).__name__ == "QualityFocalLoss"
    assert old.MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER == "IoU" and old.SOLVER.OPTIMIZER == "SGD"
    assert old.MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS == "SigmoidFocalLoss"
    # Same model size, data and schedule as the paper-setting config.
    for key in ("MODEL.RESNETS.DEPTH", "MODEL.FPN.OUT_CHANNELS", "SOLVER.MAX_ITER", "SOLVER.STEPS",
                "SOLVER.IMS_PER_BATCH", "INPUT.MIN_SIZE_TRAIN", "DATASETS.TRAIN"):
        node_new, node_old = new, old
        for part in key.split("."):
            node_new, node_old = node_new[part], node_old[part]
        assert node_new == node_old, key


# The overrides of the v2 variant measured in docs/accuracy.md on retina_shapes and retina_reef.
MEASURED_V2_OVERRIDES = [
    "MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER", "ATSS",
    "MODEL.BACKBONE.NAME", "build_focal_retinanet_resnet_fpn_backbone",
    "MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE", "p5",
    "SOLVER.OPTIMIZER", "AdamW", "SOLVER.BASE_LR", "0.001", "SOLVER.WEIGHT_DECAY", "0.05",
    "MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "giou",
    "MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS", "QualityFocalLoss",
]


@pytest.mark.parametrize("v2, v1", [("demo_R18_cpu_v2.yaml", "demo_R18_cpu.yaml"), ("reef_R18_cpu_v2.yaml", "reef_R18_cpu.yaml")])
def test_cpu_v2_configs_are_exactly_the_measured_setting(v2, v1):
    shipped = load_cfg(CONFIGS / v2)
    measured = load_cfg(CONFIGS / v1, MEASURED_V2_OVERRIDES)
    shipped.OUTPUT_DIR = measured.OUTPUT_DIR
    assert shipped.dump() == measured.dump()


@pytest.mark.slow
def test_setup_script_reuses_a_complete_venv():
    if not (REPO_ROOT / ".venv" / ".retina_plugin_setup_complete").is_file():
        pytest.skip("not running from the project's own .venv")
    proc = subprocess.run(["bash", "scripts/setup_env.sh"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # The fast path: nothing is installed again.
    assert ".venv is complete" in proc.stdout and "installing" not in proc.stdout, proc.stdout + proc.stderr
