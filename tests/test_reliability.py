"""
Bad inputs and crashes (issue 9): each gets an error naming the file / entry / key and value,
or a counted WARNING where detectron2 users expect tolerance; checkpoints survive a kill
mid-save; metrics.json has no repeated iterations after a resume.
"""
import json
import logging
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from retina_plugin.training.checkpoint import AtomicDetectionCheckpointer
from retina_plugin.utils.files import INCOMPLETE_SUFFIX
from retina_plugin.config_checks import check_config
from retina_plugin.data import register_coco_json
from retina_plugin.data.mapper import CheckedDatasetMapper, UnreadableImageError, read_image_checked
from retina_plugin.data.shapes import generate_shapes_split
from retina_plugin.training.metrics_json import drop_records_from, latest_records
from retina_plugin.modeling.losses import SigmoidFocalLoss

from .conftest import load_cfg
from .test_dataset_registration import rewrite, write_voc


# ----------------------------------------------------------------------------- config domains
@pytest.mark.parametrize(
    "key, value",
    [
        ("MODEL.RETINANET.FOCAL_LOSS_GAMMA", -0.5),
        ("MODEL.RETINANET.FOCAL_LOSS_ALPHA", 1.5),
        ("MODEL.RETINANET.SCORE_THRESH_TEST", 1.2),
        ("MODEL.RETINANET.NMS_THRESH_TEST", -0.1),
        ("MODEL.RETINANET.PRIOR_PROB", 0.0),
        ("MODEL.RETINANET.IOU_THRESHOLDS", [0.5, 0.4]),
        ("MODEL.RETINANET.NUM_CLASSES", 0),
        ("MODEL.ANCHOR_GENERATOR.SIZES", [[32, -64]]),
        ("TEST.DETECTIONS_PER_IMAGE", 0),
        ("MODEL.FOCAL_RETINANET.LOSS_NORMALIZER_MOMENTUM", 1.0),
        ("SOLVER.BASE_LR", 0.0),
        ("SOLVER.IMS_PER_BATCH", 0),
        ("INPUT.MIN_SIZE_TRAIN", (0,)),
        ("DATASETS.ON_UNREADABLE_IMAGE", "ignore"),
    ],
)
def test_values_outside_their_domain_name_the_key(key, value):
    cfg = load_cfg()
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError, match=re.escape(f"{key} = {value!r}: expected")):
        check_config(cfg)


def test_alpha_below_zero_disables_weighting_and_is_accepted():
    cfg = load_cfg(opts=["MODEL.RETINANET.FOCAL_LOSS_ALPHA", "-1.0"])
    check_config(cfg)
    loss = build_model(cfg).classification_loss
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    labels = torch.tensor([0, 2])  # a positive of class 0, a background anchor
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    unweighted = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = torch.where(targets == 1, logits.sigmoid(), 1 - logits.sigmoid())
    # No alpha_t factor: positives and negatives weigh the same.
    torch.testing.assert_close(loss(logits, labels), (unweighted * (1 - p_t) ** 2).sum())


def test_build_model_checks_the_domain_too():
    # Python users who never go through train_net.py.
    cfg = load_cfg(opts=["MODEL.RETINANET.FOCAL_LOSS_GAMMA", "-1.0"])
    with pytest.raises(ValueError, match="MODEL.RETINANET.FOCAL_LOSS_GAMMA = -1.0"):
        build_model(cfg)
    with pytest.raises(ValueError, match=re.escape("MODEL.RETINANET.FOCAL_LOSS_ALPHA = 2: expected alpha in [0, 1]")):
        SigmoidFocalLoss(alpha=2, gamma=2.0)


# ----------------------------------------------------------------------------- boxes in json
@pytest.fixture
def coco(tmp_path):
    root = tmp_path / "coco"
    json_file = generate_shapes_split(str(root), 3, seed=7, image_size=64)
    with open(json_file) as f:
        return json_file, str(root), json.load(f)


def _name(tmp_path, tag):
    return f"rel_{tag}_{abs(hash(str(tmp_path)))}"


@pytest.mark.parametrize(
    "bbox, message",
    [
        (["1", 2, 3, 4], "coordinates must be numbers"),
        ([1, 2, float("nan"), 4], "finite"),
        ([1, 2, 3], "4 numbers"),
        ([1, 2, -3, 4], "width and height must be >= 0"),
        (None, "4 numbers"),
    ],
)
def test_invalid_boxes_stop_registration_naming_file_and_annotation(coco, tmp_path, bbox, message):
    json_file, root, data = coco
    data["annotations"][2]["bbox"] = bbox
    rewrite(json_file, data)
    ann_id = data["annotations"][2]["id"]
    with pytest.raises(ValueError, match=f"annotations.json: annotation {ann_id} has bbox .*{message}"):
        register_coco_json(_name(tmp_path, "bad"), json_file, root)


def test_image_without_size_is_named(coco, tmp_path):
    json_file, root, data = coco
    del data["images"][1]["width"]
    rewrite(json_file, data)
    with pytest.raises(ValueError, match=r"annotations.json: images\[1\] lacks \['width'\]"):
        register_coco_json(_name(tmp_path, "nosize"), json_file, root)


def test_degenerate_boxes_are_dropped_or_clipped_with_one_counted_warning(coco, tmp_path, caplog):
    json_file, root, data = coco
    anns = data["annotations"]
    anns[0]["bbox"] = [10, 10, 0, 5]          # zero width: dropped
    anns[1]["bbox"] = [100, 100, 5, 5]        # wholly outside the 64 px image: dropped
    anns[2]["bbox"] = [60, 60, 10, 10]        # partly outside: kept, clipped by detectron2
    rewrite(json_file, data)
    name = _name(tmp_path, "degenerate")
    with caplog.at_level(logging.WARNING):
        register_coco_json(name, json_file, root)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    text = warnings[0]
    assert json_file in text and name in text
    assert f"1 box(es) dropped (zero width or height): annotation {anns[0]['id']}" in text
    assert f"1 box(es) dropped (wholly outside their image): annotation {anns[1]['id']}" in text
    assert f"1 box(es) clipped to their image (partly outside): annotation {anns[2]['id']}" in text
    dicts = DatasetCatalog.get(name)
    boxes = [a["bbox"] for d in dicts for a in d["annotations"]]
    assert len(boxes) == len(anns) - 2
    assert [10, 10, 0, 5] not in boxes and [100, 100, 5, 5] not in boxes and [60, 60, 10, 10] in boxes


def test_clean_dataset_registers_without_warning(coco, tmp_path, caplog):
    json_file, root, _ = coco
    with caplog.at_level(logging.WARNING):
        register_coco_json(_name(tmp_path, "clean"), json_file, root)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ----------------------------------------------------------------------------- image files
def _truncate(path, keep=0.4):
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(content[: int(len(content) * keep)])


def test_truncated_and_non_image_files_are_named(tmp_path):
    image = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    _truncate(image)
    with pytest.raises(UnreadableImageError, match="cut.png: cannot read image"):
        read_image_checked(str(image))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(UnreadableImageError, match="notes.jpg: cannot read image"):
        read_image_checked(str(text))
    with pytest.raises(UnreadableImageError, match="absent.png"):
        read_image_checked(str(tmp_path / "absent.png"))


def test_16_bit_grayscale_png_keeps_its_contrast(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "depth16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16")
    image = read_image_checked(str(path), format="BGR")
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    np.testing.assert_allclose(image[..., 0], np.round(ramp / 257.0), atol=1)
    # detectron2's reader clips: most of this ramp would be 255.
    assert (image == 255).mean() < 0.01


def test_mapper_errors_or_skips_unreadable_images(coco, tmp_path, caplog):
    json_file, root, data = coco
    name = _name(tmp_path, "mapper")
    register_coco_json(name, json_file, root)
    record = DatasetCatalog.get(name)[0]
    _truncate(record["file_name"])
    cfg = load_cfg()
    with pytest.raises(UnreadableImageError, match=os.path.basename(record["file_name"]) + ".*ON_UNREADABLE_IMAGE skip"):
        CheckedDatasetMapper(cfg, True)(record)
    cfg.DATASETS.ON_UNREADABLE_IMAGE = "skip"
    with caplog.at_level(logging.WARNING):
        assert CheckedDatasetMapper(cfg, True)(record) is None
    assert any(record["file_name"] in r.getMessage() for r in caplog.records)
    # Nothing readable at all: "skip" stops after MAX_CONSECUTIVE_UNREADABLE in a row, naming
    # the files, instead of drawing for ever.
    mapper = CheckedDatasetMapper(cfg, True)
    for _ in range(mapper.MAX_CONSECUTIVE_UNREADABLE - 1):
        assert mapper(record) is None
    with pytest.raises(UnreadableImageError, match="20 images in a row could not be read.*" + os.path.basename(record["file_name"])):
        mapper(record)
    # A readable image in between resets the count.
    mapper = CheckedDatasetMapper(cfg, True)
    for _ in range(mapper.MAX_CONSECUTIVE_UNREADABLE - 1):
        mapper(record)
    assert mapper(DatasetCatalog.get(name)[1]) is not None
    assert mapper(record) is None
    # Evaluation never skips: a missing image would change the metric.
    with pytest.raises(UnreadableImageError):
        CheckedDatasetMapper(cfg, False)(record)
    # A readable image maps as detectron2's DatasetMapper would.
    good = DatasetCatalog.get(name)[1]
    out = CheckedDatasetMapper(load_cfg(opts=["INPUT.RANDOM_FLIP", "none"]), True)(good)
    assert out["image"].shape[0] == 3 and len(out["instances"]) == len(good["annotations"])


# ----------------------------------------------------------------------------- checkpoints
def _checkpointer(tmp_path):
    model = torch.nn.Linear(3, 2)
    return model, AtomicDetectionCheckpointer(model, str(tmp_path), save_to_disk=True)


def test_kill_mid_save_keeps_previous_checkpoint_and_tag(tmp_path, monkeypatch):
    model, checkpointer = _checkpointer(tmp_path)
    checkpointer.save("model_final", iteration=9)
    good_weight = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)

    real_save = torch.save

    def save_half_then_die(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_final", iteration=19)  # a finished run extended with --resume
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000029", iteration=29)  # a periodic save
    monkeypatch.setattr(torch, "save", real_save)

    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    fresh, resumer = _checkpointer(tmp_path)
    extra = resumer.resume_or_load("", resume=True)
    assert extra["iteration"] == 9
    torch.testing.assert_close(fresh.weight, good_weight)


def test_stale_incomplete_files_are_removed_and_corrupt_checkpoints_named(tmp_path):
    (tmp_path / ("model_0000099.pth" + INCOMPLETE_SUFFIX)).write_bytes(b"partial")
    _, checkpointer = _checkpointer(tmp_path)
    assert not list(tmp_path.glob("*" + INCOMPLETE_SUFFIX))
    checkpointer.save("model_0000009")
    # A checkpoint truncated by an older, non-atomic writer.
    (tmp_path / "model_final.pth").write_bytes(b"PK\x03\x04 truncated")
    checkpointer.tag_last_checkpoint("model_final.pth")
    with pytest.raises(RuntimeError, match=r"model_final.pth .*truncated or corrupt.*model_0000009.pth"):
        checkpointer.resume_or_load("", resume=True)


# ----------------------------------------------------------------------------- metrics.json
def _write_lines(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_resume_drops_the_iterations_logged_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.json"
    records = [{"iteration": i, "total_loss": 1.0 / (i + 1)} for i in range(10)]
    records.insert(5, {"iteration": 4, "bbox/AP": 10.0})
    _write_lines(path, records, tail='{"iteration": 10, "total_lo')  # killed mid-line
    with open(path, "a") as writer:  # detectron2's JSONWriter opened it before the resume
        assert drop_records_from(str(path), 5) == 6
        writer.write(json.dumps({"iteration": 5, "total_loss": 0.5}) + "\n")
    iterations = [json.loads(line)["iteration"] for line in path.read_text().splitlines()]
    assert iterations == [0, 1, 2, 3, 4, 4, 5]


def test_old_duplicated_metrics_keep_the_latest_run():
    first = [{"iteration": i, "loss": "first"} for i in range(0, 8)]
    second = [{"iteration": i, "loss": "second"} for i in range(5, 10)]
    eval_line = {"iteration": 9, "bbox/AP": 1.0}
    kept = latest_records(first + second + [eval_line])
    assert [r["iteration"] for r in kept] == list(range(10)) + [9]
    assert [r["loss"] for r in kept[:10]] == ["first"] * 5 + ["second"] * 5


def test_voc_degenerate_boxes_warn_and_inverted_boxes_stop(tmp_path, caplog):
    from retina_plugin.data import register_voc_folder

    root = tmp_path / "voc"
    # 60 x 40 images; VOC coordinates are 1-based and inclusive.
    write_voc(root, {"v1": [("nut", (11, 6, 30, 20)), ("nut", (5, 5, 4, 9)), ("bolt", (70, 50, 80, 60))]})
    name = _name(tmp_path, "voc_degenerate")
    register_voc_folder(name, str(root), "train", ["bolt", "nut"])
    with caplog.at_level(logging.WARNING):
        dicts = DatasetCatalog.get(name)
    text = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "1 box(es) dropped (zero width or height): v1.xml object 'nut'" in text
    assert "1 box(es) dropped (wholly outside their image): v1.xml object 'bolt'" in text
    assert [a["bbox"] for a in dicts[0]["annotations"]] == [[10.0, 5.0, 30.0, 20.0]]

    inverted = tmp_path / "voc_inverted"
    write_voc(inverted, {"v2": [("nut", (30, 6, 11, 20))]})
    name = _name(tmp_path, "voc_inverted")
    register_voc_folder(name, str(inverted), "train", ["bolt", "nut"])
    with pytest.raises(ValueError, match=r"v2.xml: object 'nut' has bndbox xmin=30.0.*xmax >= xmin - 1"):
        DatasetCatalog.get(name)


def test_plot_tool_draws_restarted_and_cut_off_metrics(tmp_path):
    import importlib.util

    from .conftest import REPO_ROOT

    spec = importlib.util.spec_from_file_location("plot_metrics", REPO_ROOT / "tools" / "plot_metrics.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    path = tmp_path / "metrics.json"
    first = [{"iteration": i, "total_loss": 2.0, "lr": 0.1} for i in range(0, 40, 10)]
    second = [{"iteration": i, "total_loss": 1.0, "lr": 0.1} for i in range(20, 60, 10)]
    _write_lines(path, first + second, tail='{"iteration": 60, "tot')
    records = tool.read_metrics(str(path))
    assert [r["iteration"] for r in records] == [0, 10, 20, 30, 40, 50]
    assert tool.series(records, "total_loss")[1] == [2.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    assert tool.main([str(path), "--output", str(tmp_path / "m.png")]) == 0
    assert (tmp_path / "m.png").stat().st_size > 0


KILLED_SAVER = """
import sys, torch
from retina_plugin.training.checkpoint import AtomicDetectionCheckpointer
model = torch.nn.Linear(1000, 1000)  # ~4 MB: each save takes a while
checkpointer = AtomicDetectionCheckpointer(model, sys.argv[1], save_to_disk=True)
step = 0
while True:
    with torch.no_grad():
        model.bias.fill_(step)
    checkpointer.save("model_final", step=step)
    step += 1
    print(step, flush=True)
"""


@pytest.mark.slow
def test_real_kill_during_saves_leaves_a_loadable_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from .conftest import REPO_ROOT

    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVER, str(tmp_path)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for _ in range(3):  # a few complete saves, then kill -9 in the middle of the next ones
            assert proc.stdout.readline(), "the saver died"
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    data = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert data["step"] >= 2 and float(data["model"]["bias"][0]) == data["step"]
    model = torch.nn.Linear(1000, 1000)
    AtomicDetectionCheckpointer(model, str(tmp_path), save_to_disk=True).resume_or_load("", resume=True)
    assert not list(tmp_path.glob("*" + INCOMPLETE_SUFFIX))  # the leftover is cleaned up


def test_voc_size_that_is_not_a_number_is_named(tmp_path):
    from retina_plugin.data import register_voc_folder

    root = tmp_path / "voc_bad_size"
    write_voc(root, {"s1": [("nut", (11, 6, 30, 20))]})
    xml = root / "Annotations" / "s1.xml"
    xml.write_text(xml.read_text().replace("<width>60</width>", "<width>sixty</width>"))
    name = _name(tmp_path, "voc_bad_size")
    register_voc_folder(name, str(root), "train", ["bolt", "nut"])
    with pytest.raises(ValueError, match=r"s1.xml: <size> width 'sixty'.*not numbers"):
        DatasetCatalog.get(name)


def test_float_image_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "float32.tif"
    Image.fromarray(np.random.rand(16, 16).astype(np.float32), mode="F").save(path)
    assert Image.open(path).mode == "F"
    with pytest.raises(UnreadableImageError, match=r"float32.tif: floating-point image"):
        read_image_checked(str(path), format="BGR")
