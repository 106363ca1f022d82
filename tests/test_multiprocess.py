"""
Multi-process CPU training (gloo, ``--num-gpus 2``): the same losses as one process with the
same total batch and seed; a crash in one worker ends the run with its error, not a hang
(issue 9).
"""
import json
import os
import subprocess
import sys

import pytest

from retina_plugin.data.shapes import generate_shapes_split

from .conftest import REPO_ROOT, TINY_CONFIG

# Group norm instead of batch statistics (per-process BN would differ), no random flips and
# no data loader workers: both runs see the same images and compute the same function.
DETERMINISTIC = [
    "MODEL.RESNETS.NORM", "GN", "INPUT.RANDOM_FLIP", "none", "DATALOADER.NUM_WORKERS", "0",
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96", "SOLVER.IMS_PER_BATCH", "4",
    "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "0", "TEST.EVAL_PERIOD", "0", "SEED", "7",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp_data")
    json_file = generate_shapes_split(str(root), 8, seed=21, image_size=96)
    return json_file, str(root)


def train(data, output_dir, num_gpus, *opts, timeout=300):
    json_file, root = data
    return subprocess.run(
        [sys.executable, "train_net.py", "--config-file", str(TINY_CONFIG), "--num-gpus", str(num_gpus),
         "--register-coco", "mp_train", json_file, root, "DATASETS.TRAIN", "('mp_train',)",
         "DATASETS.TEST", "()", *DETERMINISTIC, "OUTPUT_DIR", str(output_dir), *opts],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def last_losses(output_dir):
    with open(output_dir / "metrics.json") as f:
        records = [json.loads(line) for line in f if line.strip()]
    last = [r for r in records if "total_loss" in r][-1]
    return last["iteration"], {k: last[k] for k in ("total_loss", "loss_cls", "loss_box_reg")}


@pytest.mark.slow
def test_two_processes_give_the_losses_of_one(data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for output_dir, num_gpus in ((one, 1), (two, 2)):
        proc = train(data, output_dir, num_gpus)
        assert proc.returncode == 0, proc.stderr[-3000:]
    it_one, losses_one = last_losses(one)
    it_two, losses_two = last_losses(two)
    assert it_one == it_two == 2
    # After two updates: same data, same normalizer (foreground anchors of the whole batch).
    for key, value in losses_one.items():
        assert losses_two[key] == pytest.approx(value, rel=1e-4), (key, losses_one, losses_two)


@pytest.mark.slow
def test_a_crash_in_one_worker_ends_the_run_with_its_error(data, tmp_path):
    json_file, root = data
    broken = os.path.join(root, "000003.png")
    with open(broken, "rb") as f:
        content = f.read()
    with open(broken, "wb") as f:
        f.write(content[:200])
    try:
        proc = train(data, tmp_path, 2, "SOLVER.IMS_PER_BATCH", "8", timeout=240)
    finally:
        with open(broken, "wb") as f:
            f.write(content)
    assert proc.returncode != 0
    assert "000003.png: cannot read image" in proc.stderr
    assert "ProcessRaisedException" in proc.stderr or "process 0 terminated" in proc.stderr \
        or "process 1 terminated" in proc.stderr
