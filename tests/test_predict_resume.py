"""
tools/predict.py with real folders: images of many shapes wait at most a batch and reach disk as
they come; resume keeps each known file's id and gives new files new ids, from any working
directory; an output folder with earlier or cut results is refused without --resume and repaired
with it; a refusal stops every rank; ranks that do not share the output folder are named; a
process seeks to its share of a video.
"""
import datetime
import json
import logging
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

from detectron2.engine import DefaultPredictor, launch
from detectron2.utils import comm

from retina_plugin.data.shapes import generate_shapes_split
from retina_plugin.prediction.command_line import main as predict_main
from retina_plugin.prediction.output_folder import (
    INPUTS_FILE,
    PredictionFolderError,
    check_shared_output_folder,
    prepare_output_folder,
    reconcile_inputs,
)
from retina_plugin.prediction.runner import ShapeBatches
from retina_plugin.prediction.sources import PredictionSource, VideoFrames, resolve_source
from retina_plugin.utils.detection_sets import detection_differences

from .conftest import TINY_CONFIG, TRAINED_TINY_OPTS
from .test_predict import _instances, _records


def _opts(trained_tiny):
    return [*TRAINED_TINY_OPTS, "MODEL.WEIGHTS", trained_tiny[1]]


def _predict(trained_tiny, inputs, output, *extra):
    return predict_main(["--config-file", str(TINY_CONFIG), "--input", *map(str, inputs), "--output", str(output),
                         "--batch-size", "4", "--num-workers", "0", *extra, *_opts(trained_tiny)])


@pytest.fixture
def folder(tmp_path):
    """Six shapes images in a folder of their own."""
    generate_shapes_split(str(tmp_path / "photos"), 6, seed=51, image_size=128)
    os.remove(tmp_path / "photos" / "annotations.json")
    return tmp_path / "photos"


def test_shape_batches_hold_at_most_a_batch():
    batches = ShapeBatches(batch_size=3)
    handed_out, most_waiting = [], 0
    items = [{"key": f"k{i}", "image": torch.zeros(3, 10, 10 + i % 4)} for i in range(10)]
    items.insert(4, {"key": "broken", "image_id": 0, "file_name": "broken.png", "error": "unreadable"})
    for item in items:
        ready = batches.add(item)
        most_waiting = max(most_waiting, len(batches))
        if ready:
            for batch in ready[0]:
                assert len({tuple(x["image"].shape) for x in batch}) == 1  # one shape per batch
                handed_out += [x["key"] for x in batch]
            handed_out += [x["key"] for x in ready[1]]
    for batch in batches.flush()[0]:
        handed_out += [x["key"] for x in batch]
    assert most_waiting < 3
    assert sorted(handed_out) == sorted(x["key"] for x in items)


def test_images_of_every_shape_reach_disk_every_batch_with_default_predictor_detections(trained_tiny, folder,
                                                                                        tmp_path):
    for i, name in enumerate(sorted(n for n in os.listdir(folder))):  # each its own aspect ratio
        image = cv2.imread(str(folder / name))
        cv2.imwrite(str(folder / name), cv2.resize(image, (128 + 24 * i, 128)))
    output = tmp_path / "out"
    assert _predict(trained_tiny, [folder], output) == 0
    chunks = [json.loads(line)["keys"] for line in (output / "shards" / "manifest-rank0.jsonl").read_text().splitlines()]
    assert [len(keys) for keys in chunks] == [4, 2]  # written every batch_size images, not at the end
    predictor = DefaultPredictor(trained_tiny[0])
    for record in _records(output):
        expected = predictor(cv2.imread(record["file_name"]))["instances"]
        assert detection_differences(expected, _instances(record), atol=0.02, rtol=1e-4) == []


def test_resume_keeps_known_ids_and_gives_new_files_new_ids(trained_tiny, folder, tmp_path):
    output = tmp_path / "out"
    assert _predict(trained_tiny, [folder], output) == 0
    first = {r["key"]: r["image_id"] for r in _records(output)}
    for name in sorted(os.listdir(folder))[:3]:  # new files whose names sort first
        shutil.copy(folder / name, folder / f"0_new_{name}")
    assert _predict(trained_tiny, [folder], output, "--resume") == 0
    records = _records(output)
    ids = {r["key"]: r["image_id"] for r in records}
    assert len(records) == 9 and len(set(ids.values())) == 9
    assert all(ids[key] == image_id for key, image_id in first.items())
    assert sorted(v for k, v in ids.items() if k not in first) == [7, 8, 9]
    images = json.loads((output / "images.json").read_text())
    assert sorted(i["id"] for i in images) == list(range(1, 10))
    summary = json.loads((output / "summary.json").read_text())
    assert summary["this_run"]["images"] == 3 and summary["this_run"]["skipped_as_done"] == 6


def test_resume_from_another_working_directory_predicts_nothing_again(trained_tiny, folder, tmp_path,
                                                                      monkeypatch):
    output = tmp_path / "out"
    assert _predict(trained_tiny, [folder], output) == 0
    monkeypatch.chdir(folder.parent)
    assert _predict(trained_tiny, ["photos"], output, "--resume") == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["this_run"]["images"] == 0 and summary["predicted"] == 6


def test_removed_files_are_counted_and_left_out_on_resume(trained_tiny, folder, tmp_path, caplog):
    output = tmp_path / "out"
    assert _predict(trained_tiny, [folder], output) == 0
    gone = sorted(os.listdir(folder))[0]
    os.remove(folder / gone)
    with caplog.at_level(logging.WARNING):
        assert _predict(trained_tiny, [folder], output, "--resume") == 0
    assert any("0 added" in m and "1 no longer found" in m and gone in m for m in caplog.messages)
    assert [r["key"] for r in _records(output)] == sorted(os.listdir(folder))


def test_a_cut_first_manifest_line_is_refused_without_resume_and_repaired_with_it(trained_tiny, folder, tmp_path):
    output = tmp_path / "out"
    assert _predict(trained_tiny, [folder], output) == 0
    manifest = output / "shards" / "manifest-rank0.jsonl"
    manifest.write_text(manifest.read_text().splitlines()[0][:-7])  # killed inside the first line
    (output / INPUTS_FILE).unlink()  # even without the input list, shards/ holds a run
    with pytest.raises(PredictionFolderError, match="give --resume"):
        _predict(trained_tiny, [folder], output)
    with pytest.raises(PredictionFolderError, match="no inputs.json"):
        _predict(trained_tiny, [folder], output, "--resume")
    # With the input list, resume cuts the line and predicts its images again.
    assert _predict(trained_tiny, [folder], tmp_path / "again") == 0
    manifest = tmp_path / "again" / "shards" / "manifest-rank0.jsonl"
    manifest.write_text(manifest.read_text().splitlines()[0][:-7])
    with pytest.raises(PredictionFolderError, match="give --resume"):
        _predict(trained_tiny, [folder], tmp_path / "again")
    assert _predict(trained_tiny, [folder], tmp_path / "again", "--resume") == 0
    assert len(_records(tmp_path / "again")) == 6
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["this_run"]["images"] == 6


def test_a_changed_dataset_or_kind_is_refused():
    recorded = {"kind": "video", "items": [{"key": "v#000001", "image_id": 1}, {"key": "v#000002", "image_id": 2}]}
    same = PredictionSource("video", [{"key": "v#000001", "image_id": 1}, {"key": "v#000002", "image_id": 2},
                                      {"key": "v#000003", "image_id": 3}])
    items, change = reconcile_inputs(recorded, same)
    assert [i["image_id"] for i in items] == [1, 2, 3] and "1 added" in change and "none removed" in change
    moved = PredictionSource("video", [{"key": "v#000001", "image_id": 5}])
    with pytest.raises(PredictionFolderError, match="1 inputs have other ids"):
        reconcile_inputs(recorded, moved)
    with pytest.raises(PredictionFolderError, match="predicted a video input, this one is a images"):
        reconcile_inputs(recorded, PredictionSource("images", []))


def test_keys_are_relative_to_the_input_root(folder, monkeypatch):
    absolute = resolve_source([str(folder)])
    monkeypatch.chdir(folder)
    relative = resolve_source(["."])
    assert [i["key"] for i in absolute.items] == [i["key"] for i in relative.items] == sorted(os.listdir(folder))
    assert absolute.root == relative.root == str(folder)


def test_a_process_seeks_to_its_share_of_a_video(tmp_path, monkeypatch):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(12)]
    for frame in frames:
        writer.write(frame)
    writer.release()
    decoded = []

    opened = cv2.VideoCapture

    class CountingCapture:
        """OpenCV's capture, counting the frames it decodes."""

        def __init__(self, *args):
            self.capture = opened(*args)

        def read(self):
            decoded.append(1)
            return self.capture.read()

        def grab(self):
            decoded.append(1)
            return self.capture.grab()

        def __getattr__(self, name):
            return getattr(self.capture, name)

    from detectron2.data import transforms as T

    resize = T.ResizeShortestEdge([48, 48], 1000)
    items = [{"key": f"clip#{f}", "image_id": f, "file_name": str(video), "frame": f} for f in range(12)]
    sequential = {x["frame"]: x["image"] for x in VideoFrames(str(video), items, resize, "BGR")}
    monkeypatch.setattr(cv2, "VideoCapture", CountingCapture)
    shared = {x["frame"]: x["image"] for x in VideoFrames(str(video), items[8:], resize, "BGR")}
    assert sorted(shared) == [8, 9, 10, 11]
    assert all(torch.equal(shared[f], sequential[f]) for f in shared)
    assert len(decoded) == 4  # its own frames only


def _refused_on_every_rank(output_dir, marker_dir):
    source = PredictionSource("images", [{"key": "a.png", "image_id": 1, "file_name": "a.png"}], root="/")
    try:
        prepare_output_folder(output_dir, source, resume=False)
    except PredictionFolderError as e:
        with open(os.path.join(marker_dir, f"refused-rank{comm.get_rank()}"), "w") as f:
            f.write(str(e))
        raise


def _check_folders(folders, marker_dir):
    try:
        check_shared_output_folder(folders[comm.get_rank()])
    except PredictionFolderError as e:
        with open(os.path.join(marker_dir, f"refused-rank{comm.get_rank()}"), "w") as f:
            f.write(str(e))
        raise


def _launch_two(function, *args):
    with pytest.raises(Exception):
        launch(function, 2, dist_url="auto", args=args, timeout=datetime.timedelta(seconds=60))


@pytest.mark.slow
def test_a_refusal_on_rank_0_stops_every_rank_at_once(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / INPUTS_FILE).write_text("{}")
    _launch_two(_refused_on_every_rank, str(output), str(tmp_path))
    for rank in (0, 1):  # rank 1 raised rank 0's refusal, not a timeout
        assert "give --resume" in (tmp_path / f"refused-rank{rank}").read_text()


@pytest.mark.slow
def test_ranks_that_do_not_share_the_output_folder_are_named(tmp_path):
    folders = [str(tmp_path / "machine0"), str(tmp_path / "machine1")]
    for f in folders:
        os.makedirs(f)
    _launch_two(_check_folders, folders, str(tmp_path))
    for rank in (0, 1):
        message = (tmp_path / f"refused-rank{rank}").read_text()
        assert "rank 1 on" in message and "rank 0 on" not in message and "all machines share" in message
