"""
--resume after a kill: metrics.json loses the iterations logged after the checkpoint;
--eval-only refuses to evaluate an untrained model; demo.py goes on past unreadable inputs
(issue 9).
"""
import importlib.util
import json

import pytest
from PIL import Image

from retina_plugin.data import register_coco_json
from retina_plugin.data.shapes import generate_shapes_split
from retina_plugin.training.trainer import Trainer

from .conftest import REPO_ROOT, TINY_CONFIG, load_cfg


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_data")
    json_file = generate_shapes_split(str(root), 2, seed=4, image_size=64)
    register_coco_json("resume_train", json_file, str(root))
    return "resume_train", json_file, str(root)


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resume_removes_metrics_logged_after_the_checkpoint(dataset, tmp_path):
    cfg = load_cfg(opts=["DATASETS.TRAIN", "('resume_train',)", "DATASETS.TEST", "()",
                         "OUTPUT_DIR", str(tmp_path)])
    killed = Trainer(cfg)
    killed.iter = 9
    killed.checkpointer.save("model_0000009")
    # The killed run had logged up to iteration 14 (and started a line it never finished).
    lines = [json.dumps({"iteration": i, "total_loss": 1.0}) for i in range(0, 15)]
    (tmp_path / "metrics.json").write_text("\n".join(lines) + '\n{"iterat')
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 10
    logged = [json.loads(x)["iteration"] for x in (tmp_path / "metrics.json").read_text().splitlines()]
    assert logged == list(range(10))


def test_eval_only_without_weights_is_refused(dataset, tmp_path):
    train_net = load_script("train_net")
    args = train_net.argument_parser().parse_args(
        ["--config-file", str(TINY_CONFIG), "--eval-only", "DATASETS.TEST", "('resume_train',)",
         "MODEL.WEIGHTS", "", "OUTPUT_DIR", str(tmp_path)]
    )
    with pytest.raises(ValueError, match="--eval-only with MODEL.WEIGHTS empty"):
        train_net.main(args)


def test_train_net_checks_domains_before_building(dataset, tmp_path):
    train_net = load_script("train_net")
    args = train_net.argument_parser().parse_args(
        ["--config-file", str(TINY_CONFIG), "MODEL.RETINANET.FOCAL_LOSS_ALPHA", "2.0",
         "OUTPUT_DIR", str(tmp_path)]
    )
    with pytest.raises(ValueError, match=r"MODEL.RETINANET.FOCAL_LOSS_ALPHA = 2.0: expected"):
        train_net.setup(args)


def test_demo_goes_on_past_an_unreadable_image(dataset, tmp_path, capsys):
    demo = load_script("demo")
    _, _, root = dataset
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("a.png", "c.png"):
        Image.open(f"{root}/000001.png").save(inputs / name)
    (inputs / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(SystemExit, match=r"1 input\(s\) could not be read: .*b.png"):
        demo.main(["--config-file", str(TINY_CONFIG), "--input", str(inputs),
                   "--output", str(tmp_path / "out"), "--opts", "MODEL.DEVICE", "cpu"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    assert "b.png: cannot read image" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value", [("--confidence-threshold", "1.5"), ("--scale", "0")])
def test_demo_rejects_values_outside_their_domain(flag, value, capsys):
    demo = load_script("demo")
    with pytest.raises(SystemExit):
        demo.main(["--config-file", str(TINY_CONFIG), "--input", "x.png", flag, value])
    assert f"{flag} {float(value)}" in capsys.readouterr().err
