"""
The learning-rate schedule check: a warm-up that runs past the first lr step never reaches
SOLVER.BASE_LR, and training says so in log.txt before the first iteration.
"""
import logging
import math

import pytest

from retina_plugin.data import register_coco_json
from retina_plugin.data.shapes import generate_shapes_split
from retina_plugin.training.schedule import learning_rate_factors, schedule_warnings
from retina_plugin.training.trainer import Trainer

from .conftest import load_cfg

# detectron2's defaults for the warm-up (WARMUP_ITERS 1000, linear from WARMUP_FACTOR 0.001) in
# a 1000-iteration schedule with lr steps at 770 and 930, as in configs/reef_small_R18_cpu.yaml.
SMALL_REGIME = ["SOLVER.MAX_ITER", "1000", "SOLVER.STEPS", "(770, 930)", "SOLVER.BASE_LR", "0.001"]


def test_a_warmup_past_the_first_step_ramps_to_the_decayed_rate_and_is_named():
    cfg = load_cfg(opts=SMALL_REGIME + ["SOLVER.WARMUP_ITERS", "1000"])
    factors = learning_rate_factors(cfg, 1000)
    # By hand: linear from 0.001 to the schedule's value at the warm-up's end (two steps of 0.1).
    assert factors[99] == pytest.approx(0.001 + (0.01 - 0.001) * 99 / 1000)
    assert max(factors) < 0.0101
    (warning,) = schedule_warnings(cfg)
    assert "SOLVER.WARMUP_ITERS = 1000" in warning and "(770, 930)" in warning
    assert "0.00999 x SOLVER.BASE_LR" in warning and "below 770" in warning


@pytest.mark.parametrize("opts", [
    ["SOLVER.WARMUP_ITERS", "100"],  # the CPU configs' warm-up
    ["SOLVER.WARMUP_ITERS", "1000", "SOLVER.STEPS", "(2000,)"],  # the whole run warms up, to BASE_LR
    ["SOLVER.WARMUP_ITERS", "0"],
])
def test_a_warmup_that_reaches_base_lr_is_not_warned(opts):
    cfg = load_cfg(opts=SMALL_REGIME + opts)
    factors = learning_rate_factors(cfg, 1000)
    assert max(factors) == pytest.approx(1.0, abs=0.002)
    assert schedule_warnings(cfg) == []


def test_a_cosine_schedule_is_warned_only_when_the_warmup_reaches_into_its_decay():
    cosine = SMALL_REGIME + ["SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR"]
    assert schedule_warnings(load_cfg(opts=cosine + ["SOLVER.WARMUP_ITERS", "100"])) == []
    cfg = load_cfg(opts=cosine + ["SOLVER.WARMUP_ITERS", "500"])
    # By hand: the warm-up ends at the cosine's value half way, (1 + cos(pi / 2)) / 2 = 0.5.
    assert max(learning_rate_factors(cfg, 501)) == pytest.approx((1 + math.cos(math.pi / 2)) / 2, abs=0.002)
    (warning,) = schedule_warnings(cfg)
    assert "WarmupCosineLR's decay" in warning and "shorter" in warning


def test_training_warns_in_the_log_before_the_first_iteration(tmp_path, caplog):
    json_file = generate_shapes_split(str(tmp_path / "data"), 2, seed=5, image_size=96)
    register_coco_json("schedule_check_train", json_file, str(tmp_path / "data"))
    opts = ["DATASETS.TRAIN", "('schedule_check_train',)", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "10",
            "SOLVER.STEPS", "(5,)", "OUTPUT_DIR", str(tmp_path / "output")]
    with caplog.at_level(logging.WARNING):
        Trainer(load_cfg(opts=opts + ["SOLVER.WARMUP_ITERS", "8"]))
    assert [r for r in caplog.records if "SOLVER.WARMUP_ITERS = 8" in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        Trainer(load_cfg(opts=opts + ["SOLVER.WARMUP_ITERS", "4"]))
    assert not [r for r in caplog.records if "SOLVER.WARMUP_ITERS" in r.getMessage()]
