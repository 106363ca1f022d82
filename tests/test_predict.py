"""
tools/predict.py: per image DefaultPredictor's detections (as sets) at any batch size, shards
that cover every input once, resume after a real kill -9 with the uninterrupted output and no
duplicate, two processes giving the same merged output as one, unreadable inputs named and
counted, video frames, and COCO results that score like COCOEvaluator.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultPredictor
from detectron2.structures import Boxes, Instances
import torch

from retina_plugin.data.shapes import generate_shapes_split
from retina_plugin.prediction.command_line import default_num_workers, main as predict_main
from retina_plugin.prediction.runner import shard_items
from retina_plugin.prediction.output_folder import PredictionFolderError
from retina_plugin.prediction.shards import ShardWriter, finished_keys, remove_orphan_chunks
from retina_plugin.utils.detection_sets import coco_results_by_image, detection_differences

from .conftest import REPO_ROOT, TINY_CONFIG, TRAINED_TINY_OPTS


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of 20 shapes images of three different sizes."""
    folder = tmp_path_factory.mktemp("collection")
    generate_shapes_split(str(folder / "a"), 12, seed=31, image_size=128)
    generate_shapes_split(str(folder / "b"), 8, seed=32, image_size=160)
    out = folder / "images"
    out.mkdir()
    for sub in ("a", "b"):
        for name in sorted(os.listdir(folder / sub)):
            if name.endswith(".png"):
                image = cv2.imread(str(folder / sub / name))
                if sub == "b" and int(name[:6]) % 2:
                    image = cv2.resize(image, (200, 120))  # not square, another size
                cv2.imwrite(str(out / f"{sub}_{name}"), image)
    return out


def _opts(trained_tiny):
    _, weights = trained_tiny
    return [*TRAINED_TINY_OPTS, "MODEL.WEIGHTS", weights]


def _records(output):
    with open(output / "predictions.jsonl") as f:
        return [json.loads(line) for line in f]


def _instances(record):
    return Instances((record["height"], record["width"]),
                     pred_boxes=Boxes(torch.tensor(record["boxes_xyxy"]).reshape(-1, 4)),
                     scores=torch.tensor(record["scores"]), pred_classes=torch.tensor(record["classes"]))


def test_shards_cover_every_item_once():
    items = list(range(23))
    for world in (1, 2, 3, 4):
        shards = [shard_items(items, r, world) for r in range(world)]
        assert sum(shards, []) == items
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_default_workers_leave_small_cpus_to_the_model():
    # Measured on 2 cores (docs/prediction.md): decoding in workers there slows prediction.
    assert default_num_workers("cpu", threads=2) == 0
    assert default_num_workers("cpu", threads=1) == 0
    assert default_num_workers("cpu", threads=8) == 2
    assert 1 <= default_num_workers("cuda", threads=1, processes_per_machine=64) <= 8


def test_batched_prediction_equals_default_predictor(trained_tiny, images, tmp_path):
    cfg, _ = trained_tiny
    output = tmp_path / "out"
    assert predict_main(["--config-file", str(TINY_CONFIG), "--input", str(images), "--output", str(output),
                         "--batch-size", "4", "--num-workers", "1", *_opts(trained_tiny)]) == 0
    records = _records(output)
    assert [r["file_name"] for r in records] == [str(images / n) for n in sorted(os.listdir(images))]
    predictor = DefaultPredictor(cfg)
    total = 0
    for record in records:
        expected = predictor(cv2.imread(record["file_name"]))["instances"]
        assert (record["height"], record["width"]) == expected.image_size
        # The records round boxes to 0.01 px and scores to 1e-5.
        assert detection_differences(expected, _instances(record), atol=0.02, rtol=1e-4) == []
        total += len(expected)
        xyxy = np.array(record["boxes_xyxy"]).reshape(-1, 4)
        np.testing.assert_allclose(np.array(record["boxes_xywh"]).reshape(-1, 4),
                                   np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1), atol=0.011)
    assert total > 0
    assert set(records[0]["class_names"]) <= {"circle", "square", "triangle", "star"}
    summary = json.loads((output / "summary.json").read_text())
    assert summary["predicted"] == summary["inputs"] == 20 and summary["unreadable"] == []
    results = json.loads((output / "coco_results.json").read_text())
    assert len(results) == total and {r["category_id"] for r in results} <= {1, 2, 3, 4}
    # A second run into the same folder without --resume would mix runs: refused.
    with pytest.raises(PredictionFolderError, match="give --resume"):
        predict_main(["--config-file", str(TINY_CONFIG), "--input", str(images), "--output", str(output),
                      *_opts(trained_tiny)])


def test_dataset_input_gives_coco_results_that_score_like_coco_evaluator(trained_tiny, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from retina_plugin.deploy.verification import evaluate_ap
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model
    from detectron2.data import MetadataCatalog

    cfg, weights = trained_tiny
    output = tmp_path / "dataset"
    predict_main(["--config-file", str(TINY_CONFIG), "--input", "tiny_shapes_val", "--output", str(output),
                  "--num-workers", "0", *_opts(trained_tiny)])
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(weights)
    expected = evaluate_ap(model, cfg, "tiny_shapes_val", str(tmp_path / "eval"))["AP"]
    # The same detections as COCOEvaluator's, image by image (boxes rounded to 0.01 px in the file).
    # predict.py runs images in batches, the evaluator one by one: near-tied scores may rank in
    # another order, so the AP agrees only to within a small margin.
    predicted = coco_results_by_image(str(output / "coco_results.json"))
    evaluated = coco_results_by_image(str(tmp_path / "eval" / "coco_instances_results.json"))
    assert predicted.keys() == evaluated.keys() and len(predicted) > 0
    for image_id, detections in evaluated.items():
        assert detection_differences(detections, predicted[image_id], atol=0.01) == [], image_id
    gt = COCO(MetadataCatalog.get("tiny_shapes_val").json_file)
    evaluation = COCOeval(gt, gt.loadRes(str(output / "coco_results.json")), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] * 100 == pytest.approx(expected, abs=0.3)
    ids = [r["image_id"] for r in _records(output)]
    assert ids == [d["image_id"] for d in DatasetCatalog.get("tiny_shapes_val")]


def test_unreadable_inputs_are_named_counted_and_fail_the_exit_status(trained_tiny, images, tmp_path, capsys):
    folder = tmp_path / "some_bad"
    shutil.copytree(images, folder)
    names = sorted(os.listdir(folder))
    with open(folder / names[3], "r+b") as f:
        f.truncate(100)
    (folder / "notes.jpg").write_text("not an image")
    output = tmp_path / "out"
    code = predict_main(["--config-file", str(TINY_CONFIG), "--input", str(folder), "--output", str(output),
                         "--batch-size", "3", *_opts(trained_tiny)])
    assert code == 1
    summary = json.loads((output / "summary.json").read_text())
    assert summary["predicted"] == 20 - 1 and summary["inputs"] == 21
    bad = {os.path.basename(e["file_name"]) for e in summary["unreadable"]}
    assert bad == {names[3], "notes.jpg"}
    err = capsys.readouterr().err
    assert "2 input(s) could not be read" in err and names[3] in err


def test_video_frames_and_drawn_video(trained_tiny, images, tmp_path):
    video = tmp_path / "clip.mp4"
    frames = [cv2.imread(str(images / n)) for n in sorted(os.listdir(images))[:6]]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (128, 128))
    for frame in frames:
        writer.write(frame)
    writer.release()
    output = tmp_path / "video_out"
    assert predict_main(["--config-file", str(TINY_CONFIG), "--input", str(video), "--output", str(output),
                         "--batch-size", "4", "--draw", *_opts(trained_tiny)]) == 0
    records = _records(output)
    assert [r["frame"] for r in records] == list(range(6)) and all(r["key"].startswith("clip.mp4#") for r in records)
    assert sum(len(r["scores"]) for r in records) > 0
    drawn = cv2.VideoCapture(str(output / "drawn" / "clip.mp4"))
    count = 0
    while drawn.read()[0]:
        count += 1
    assert count == 6


def test_orphan_chunks_are_removed_and_keys_counted_once(tmp_path):
    writer = ShardWriter(str(tmp_path), 0)
    writer.write([{"key": "a"}, {"key": "b"}])
    # A chunk renamed into place but killed before the manifest was updated.
    (tmp_path / "shards" / "rank0-000001.jsonl").write_text('{"key": "c"}\n')
    (tmp_path / "shards" / "rank0-000002.jsonl.incomplete").write_text("{")
    assert finished_keys(str(tmp_path)) == {"a", "b"}
    assert sorted(remove_orphan_chunks(str(tmp_path))) == ["rank0-000001.jsonl", "rank0-000002.jsonl.incomplete"]
    writer = ShardWriter(str(tmp_path), 0)
    assert writer.write([{"key": "c"}]) == "rank0-000001.jsonl"


def _run_tool(args, **kwargs):
    return subprocess.Popen([sys.executable, "tools/predict.py", *args], cwd=REPO_ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True, **kwargs)


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("many")
    generate_shapes_split(str(folder), 120, seed=41, image_size=128)
    os.remove(folder / "annotations.json")
    return folder


@pytest.mark.slow
def test_kill_then_resume_gives_the_uninterrupted_output(trained_tiny, many_images, tmp_path):
    common = ["--config-file", str(TINY_CONFIG), "--input", str(many_images), "--batch-size", "2",
              "--num-workers", "1", *_opts(trained_tiny)]
    reference = tmp_path / "reference"
    assert _run_tool(common[:4] + ["--output", str(reference)] + common[4:]).wait(timeout=600) == 0
    killed = tmp_path / "killed"
    proc = _run_tool(common[:4] + ["--output", str(killed)] + common[4:],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = killed / "shards" / "manifest-rank0.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if manifest.is_file() and manifest.read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = finished_keys(str(killed))
    assert 10 <= len(done) < 120, len(done)  # killed mid-run
    assert _run_tool(common[:4] + ["--output", str(killed), "--resume"] + common[4:]).wait(timeout=600) == 0
    ours, theirs = _records(killed), _records(reference)
    assert [r["key"] for r in ours] == [r["key"] for r in theirs]
    assert len({r["key"] for r in ours}) == 120
    for a, b in zip(ours, theirs):
        assert detection_differences(_instances(b), _instances(a), atol=0.02, rtol=1e-4) == []
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["this_run"]["skipped_as_done"] == len(done)


@pytest.mark.slow
def test_two_processes_merge_to_the_output_of_one(trained_tiny, images, tmp_path):
    common = ["--config-file", str(TINY_CONFIG), "--input", str(images), "--batch-size", "4", "--num-workers", "0"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert _run_tool(common + ["--output", str(one), *_opts(trained_tiny)]).wait(timeout=600) == 0
    assert _run_tool(common + ["--output", str(two), "--num-gpus", "2", *_opts(trained_tiny)]).wait(timeout=600) == 0
    assert {n for n in os.listdir(two / "shards") if n.startswith("manifest")} == {
        "manifest-rank0.jsonl", "manifest-rank1.jsonl"}
    a, b = _records(one), _records(two)
    assert [r["key"] for r in a] == [r["key"] for r in b]
    for x, y in zip(a, b):
        assert detection_differences(_instances(x), _instances(y), atol=0.02, rtol=1e-4) == []
    assert json.loads((two / "summary.json").read_text())["this_run"]["ranks"] == 2


def test_a_chunk_lost_or_cut_short_is_dropped_from_the_manifest(tmp_path):
    writer = ShardWriter(str(tmp_path), 0)
    writer.write([{"key": "a"}, {"key": "b"}])
    writer.write([{"key": "c"}])
    writer.write([{"key": "d"}])
    (tmp_path / "shards" / "rank0-000001.jsonl").write_text("")   # a power loss: never reached the disk
    os.remove(tmp_path / "shards" / "rank0-000002.jsonl")
    assert sorted(remove_orphan_chunks(str(tmp_path))) == ["rank0-000001.jsonl", "rank0-000002.jsonl"]
    assert finished_keys(str(tmp_path)) == {"a", "b"}
    # The next chunk gets a new name: the lost ones' images are predicted again.
    assert ShardWriter(str(tmp_path), 0).write([{"key": "c"}]) == "rank0-000001.jsonl"


def test_a_manifest_line_cut_short_drops_its_chunk(tmp_path):
    writer = ShardWriter(str(tmp_path), 0)
    writer.write([{"key": "a"}])
    writer.write([{"key": "b"}])
    manifest = tmp_path / "shards" / "manifest-rank0.jsonl"
    text = manifest.read_text()
    manifest.write_text(text[:-5])  # killed inside the second line's write
    assert finished_keys(str(tmp_path)) == {"a"}
    assert remove_orphan_chunks(str(tmp_path)) == ["rank0-000001.jsonl"]
    assert manifest.read_text() == text.splitlines(keepends=True)[0]
    assert ShardWriter(str(tmp_path), 0).write([{"key": "b"}]) == "rank0-000001.jsonl"
    assert finished_keys(str(tmp_path)) == {"a", "b"}
