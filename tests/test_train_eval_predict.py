"""
End to end on a tiny generated dataset: train_net.py trains (loss goes down) and evaluates
(COCOEvaluator AP table), --eval-only reloads, DefaultPredictor and demo.py predict, and
tools/plot_metrics.py draws the curves.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor

from retina_plugin.data.shapes import generate_shapes_split

from .conftest import REPO_ROOT, TINY_CONFIG, load_cfg

def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# COCOEvaluator's summary table; column widths follow the values.
AP_TABLE_HEADER = re.compile(r"\|\s+AP\s+\|\s+AP50\s+\|\s+AP75\s+\|\s+APs\s+\|\s+APm\s+\|\s+APl\s+\|")


def run(args, env=None, check=True):
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})},
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_data")
    train = generate_shapes_split(str(root / "train"), 16, seed=11, image_size=128)
    # One box partly outside its image: registration warns (clipped), and the run's log.txt
    # must hold that warning.
    with open(train) as f:
        data = json.load(f)
    data["annotations"][0]["bbox"] = [120.0, 120.0, 20.0, 20.0]
    with open(train, "w") as f:
        json.dump(data, f)
    val = generate_shapes_split(str(root / "val"), 6, seed=12, image_size=128)
    return {"train": (train, str(root / "train")), "val": (val, str(root / "val"))}


def data_args(tiny_data):
    return [
        "--register-coco", "tiny_train", tiny_data["train"][0], tiny_data["train"][1],
        "--register-coco", "tiny_val", tiny_data["val"][0], tiny_data["val"][1],
    ]


DATA_OPTS = ["DATASETS.TRAIN", "('tiny_train',)", "DATASETS.TEST", "('tiny_val',)"]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("train_output")
    proc = run(
        ["train_net.py", "--config-file", str(TINY_CONFIG), *data_args(tiny_data), *DATA_OPTS,
         "SOLVER.MAX_ITER", "40", "OUTPUT_DIR", str(output_dir)]
    )
    return output_dir, proc


def read_metrics(output_dir):
    with open(output_dir / "metrics.json") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
def test_training_lowers_the_loss_and_evaluates(trained):
    output_dir, proc = trained
    assert (output_dir / "model_final.pth").is_file()
    losses = [r["total_loss"] for r in read_metrics(output_dir) if "total_loss" in r]
    assert len(losses) >= 2 and all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses
    # The final evaluation: COCOEvaluator's table, in the log and in metrics.json.
    assert AP_TABLE_HEADER.search(proc.stdout)
    assert any("bbox/AP50" in r for r in read_metrics(output_dir))
    # Every warning of the run is in its log.txt, with its level.
    log = (output_dir / "log.txt").read_text()
    assert re.search(r"WARNING.*Dataset 'tiny_train' .*1 box\(es\) clipped to their image", log), log[-3000:]


@pytest.mark.slow
def test_eval_only_prints_the_ap_table(trained, tiny_data, tmp_path):
    output_dir, _ = trained
    proc = run(
        ["train_net.py", "--config-file", str(TINY_CONFIG), "--eval-only", *data_args(tiny_data),
         *DATA_OPTS, "MODEL.WEIGHTS", str(output_dir / "model_final.pth"), "OUTPUT_DIR", str(tmp_path)]
    )
    assert "Evaluation results for bbox" in proc.stdout
    assert AP_TABLE_HEADER.search(proc.stdout)
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in proc.stdout
    assert (tmp_path / "inference" / "tiny_val" / "coco_instances_results.json").is_file()


@pytest.mark.slow
def test_num_classes_mismatch_stops_before_training(tiny_data, tmp_path):
    proc = run(
        ["train_net.py", "--config-file", str(TINY_CONFIG), *data_args(tiny_data), *DATA_OPTS,
         "MODEL.RETINANET.NUM_CLASSES", "3", "OUTPUT_DIR", str(tmp_path)],
        check=False,
    )
    assert proc.returncode != 0
    assert "NUM_CLASSES is 3, but dataset 'tiny_train' has 4 classes" in proc.stderr
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
def test_two_process_cpu_training(tiny_data, tmp_path):
    # --num-gpus 2 on a machine without GPUs: two gloo processes, DDP on CPU.
    proc = run(
        ["train_net.py", "--config-file", str(TINY_CONFIG), "--num-gpus", "2",
         *data_args(tiny_data), *DATA_OPTS, "SOLVER.MAX_ITER", "6", "TEST.EVAL_PERIOD", "0",
         "OUTPUT_DIR", str(tmp_path)],
        env={"OMP_NUM_THREADS": "1"},
    )
    assert "World size: 2" in proc.stdout + proc.stderr
    assert (tmp_path / "model_final.pth").is_file()
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in proc.stdout  # evaluated across both


@pytest.mark.slow
def test_default_predictor_in_downstream_code(trained, tiny_data):
    output_dir, _ = trained
    cfg = load_cfg(opts=["MODEL.WEIGHTS", str(output_dir / "model_final.pth")])
    predictor = DefaultPredictor(cfg)
    # A non-square image of another size: outputs are in the input image's coordinates.
    image = read_image(os.path.join(tiny_data["val"][1], "000001.png"), format="BGR")
    image = cv2.resize(image, (200, 150))
    with torch.no_grad():
        predictor.model.head.cls_score.bias.fill_(0.0)  # p ~ 0.5: plenty of detections
    instances = predictor(image)["instances"]
    assert {"pred_boxes", "scores", "pred_classes"} <= set(instances.get_fields())
    assert 0 < len(instances) <= cfg.TEST.DETECTIONS_PER_IMAGE
    assert instances.image_size == (150, 200)
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 200).all() and (boxes[:, 3] <= 150).all()
    assert (instances.scores > cfg.MODEL.RETINANET.SCORE_THRESH_TEST).all()
    assert instances.scores.tolist() == sorted(instances.scores.tolist(), reverse=True)
    assert set(instances.pred_classes.tolist()) <= set(range(cfg.MODEL.RETINANET.NUM_CLASSES))


@pytest.mark.slow
def test_demo_writes_pictures(trained, tiny_data, tmp_path):
    import demo

    output_dir, _ = trained
    written = demo.main(
        ["--config-file", str(TINY_CONFIG), "--input", tiny_data["val"][1], "--output",
         str(tmp_path / "pictures"), "--confidence-threshold", "0.01", "--scale", "2", "--opts",
         "MODEL.WEIGHTS", str(output_dir / "model_final.pth")]
    )
    assert len(written) == 6
    for path in written:
        assert path.endswith(".png")
        picture = cv2.imread(path)
        assert picture.shape == (256, 256, 3)  # 128-px inputs drawn at scale 2
    # A single file, to an explicit file name.
    single = tmp_path / "one.png"
    demo.main(["--config-file", str(TINY_CONFIG), "--input",
               os.path.join(tiny_data["val"][1], "000002.png"), "--output", str(single)])
    assert cv2.imread(str(single)).shape == (128, 128, 3)
    with pytest.raises(FileNotFoundError, match="no image files at"):
        demo.main(["--config-file", str(TINY_CONFIG), "--input", str(tmp_path / "nothing*.jpg")])


@pytest.mark.slow
def test_demo_on_a_video(trained, tiny_data, tmp_path):
    import demo

    output_dir, _ = trained
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (128, 128))
    for i in range(1, 4):
        writer.write(cv2.imread(os.path.join(tiny_data["val"][1], f"{i:06d}.png")))
    writer.release()
    (written,) = demo.main(
        ["--config-file", str(TINY_CONFIG), "--video-input", str(video), "--output",
         str(tmp_path / "out"), "--opts", "MODEL.WEIGHTS", str(output_dir / "model_final.pth")]
    )
    assert written == str(tmp_path / "out" / "clip.mp4")
    result = cv2.VideoCapture(written)
    assert result.get(cv2.CAP_PROP_FRAME_COUNT) == 3
    assert (result.get(cv2.CAP_PROP_FRAME_WIDTH), result.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (128, 128)
    with pytest.raises(FileNotFoundError, match="OpenCV cannot open"):
        demo.main(["--config-file", str(TINY_CONFIG), "--video-input", str(tmp_path / "none.mp4")])


@pytest.mark.slow
def test_plot_metrics_draws_a_png(trained, tmp_path):
    output_dir, _ = trained
    proc = run(["tools/plot_metrics.py", str(output_dir / "metrics.json"), "--output",
                str(tmp_path / "curves.png")])
    assert "Last evaluation (iteration 40): AP" in proc.stdout
    picture = cv2.imread(str(tmp_path / "curves.png"))
    assert picture is not None and picture.shape[1] > picture.shape[0] > 100
    assert picture.std() > 10  # something was drawn


def test_plot_metrics_errors(tmp_path):
    plot_metrics = load_tool("plot_metrics")

    with pytest.raises(FileNotFoundError, match="no such metrics file"):
        plot_metrics.read_metrics(str(tmp_path / "absent.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"iteration": 1, "total_loss": 1.0}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad\.json:2: not a JSON object"):
        plot_metrics.read_metrics(str(bad))
    no_losses = tmp_path / "no_losses.json"
    no_losses.write_text('{"iteration": 1, "lr": 0.1}\n')
    with pytest.raises(ValueError, match="no training losses"):
        plot_metrics.read_metrics(str(no_losses))
    assert plot_metrics.main([str(bad)]) == 2


def test_plot_metrics_small_file(tmp_path):
    plot_metrics = load_tool("plot_metrics")

    metrics = tmp_path / "metrics.json"
    lines = [{"iteration": i, "total_loss": 2.0 / (i + 1), "loss_cls": 1.0 / (i + 1),
              "loss_box_reg": 1.0 / (i + 1), "lr": 0.01} for i in range(0, 100, 10)]
    lines.append({"iteration": 100, "bbox/AP": 12.5, "bbox/AP50": 30.0, "bbox/AP75": float("nan")})
    metrics.write_text("\n".join(json.dumps(x) for x in lines))
    assert plot_metrics.main([str(metrics)]) == 0
    picture = cv2.imread(str(tmp_path / "metrics.png"))
    assert picture.shape == (400, 1500, 3)  # three panels: losses, lr, AP
    losses, lr, ap = plot_metrics.plot_metrics(plot_metrics.read_metrics(str(metrics)), str(tmp_path / "again.png")).axes
    assert [line.get_label() for line in losses.get_lines()] == list(plot_metrics.LOSS_KEYS)
    total = losses.get_lines()[list(plot_metrics.LOSS_KEYS).index("total_loss")]
    assert list(total.get_xdata()) == list(range(0, 100, 10))
    assert list(total.get_ydata()) == [2.0 / (i + 1) for i in range(0, 100, 10)]
    assert list(lr.get_lines()[0].get_ydata()) == [0.01] * 10
    # AP75 is NaN everywhere: it is not drawn; AP and AP50 are, at iteration 100.
    assert {line.get_label(): list(line.get_ydata()) for line in ap.get_lines()} == {"bbox/AP": [12.5], "bbox/AP50": [30.0]}
