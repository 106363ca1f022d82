"""
The built-in "retina_reef" dataset on a small stand-in for the source archive (same layout,
a random mosaic, known YOLO labels): tiling, the area split, the YOLO-to-COCO conversion and
the error paths (no download, a changed archive, malformed labels).
"""
import hashlib
import io
import json
import logging
import os
import tarfile

import cv2
import numpy as np
import pytest

from retina_plugin.data import reef
from retina_plugin.data.reef import (
    REEF_CLASS_NAMES,
    REEF_SOURCE,
    ReefSourceError,
    ReefTiling,
    crop_boxes_to_tile,
    ensure_reef_splits,
    reef_tile_windows,
    yolo_to_xyxy,
)
from retina_plugin.data.windows import window_starts

TILING = ReefTiling(tile=64, train_stride=32, val_rows=1)
HEIGHT, WIDTH = 200, 170
# class, cx, cy, w, h (normalized): inside the train area, cut by the train/val line, in val.
LABELS = [
    (0, 30 / WIDTH, 40 / HEIGHT, 20 / WIDTH, 16 / HEIGHT),
    (1, 100 / WIDTH, 60 / HEIGHT, 30 / WIDTH, 40 / HEIGHT),
    (2, 30 / WIDTH, 136 / HEIGHT, 24 / WIDTH, 20 / HEIGHT),   # y 126..146: crosses y = 136
    (3, 40 / WIDTH, 170 / HEIGHT, 30 / WIDTH, 24 / HEIGHT),
    (1, 110 / WIDTH, 180 / HEIGHT, 10 / WIDTH, 12 / HEIGHT),
]


def _archive(path, labels_text=None, names=REEF_CLASS_NAMES, image=None):
    """A tar.gz with the source's member names; returns a source dict pointing at it."""
    if image is None:
        image = np.random.RandomState(0).randint(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    if labels_text is None:
        labels_text = "\n".join(" ".join(str(v) for v in row) for row in LABELS) + "\n"
    members = {
        REEF_SOURCE["image"]: cv2.imencode(".png", image)[1].tobytes(),
        REEF_SOURCE["labels"]: labels_text.encode(),
        REEF_SOURCE["names"]: ("names:\n" + "".join(f"- {n}\n" for n in names) + f"nc: {len(names)}\n").encode(),
        REEF_SOURCE["license"]: b"MIT License\n",
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return dict(REEF_SOURCE, archive=os.path.basename(path), sha256=digest), image


def _no_download(requirement, target_dir):
    return "ERROR: Could not find a version that satisfies the requirement (no network)"


@pytest.fixture
def built(tmp_path):
    root = tmp_path / "retina_reef"
    source, image = _archive(str(root / "source" / "fake.tar.gz"))
    ensure_reef_splits(str(root), source, TILING, download=_no_download)
    splits = {}
    for split in ("train", "val", "val_full"):
        with open(root / split / "annotations.json") as f:
            splits[split] = json.load(f)
    return root, splits, image


def test_tile_starts_cover_the_length_and_end_at_it():
    assert window_starts(200, 64, 32) == [0, 32, 64, 96, 128, 136]
    assert window_starts(64, 64, 32) == [0]
    assert window_starts(50, 64, 32) == [0]


def test_area_split_no_val_tile_or_box_overlaps_a_train_tile(built):
    root, splits, _ = built
    windows = reef_tile_windows(HEIGHT, WIDTH, TILING)
    assert [im["window"] for im in splits["val"]["images"]] == [list(w) for w in windows["val"]]
    val_top = HEIGHT - TILING.val_rows * TILING.tile
    assert all(w[1] == val_top for w in windows["val"]) and len(windows["val"]) == WIDTH // TILING.tile
    assert max(w[3] for w in windows["train"]) == val_top
    train = np.array(windows["train"], dtype=float)
    for image in splits["val"]["images"]:
        x0, y0, _, _ = image["window"]
        for ann in (a for a in splits["val"]["annotations"] if a["image_id"] == image["id"]):
            bx, by, bw, bh = ann["bbox"]
            box = np.array([x0 + bx, y0 + by, x0 + bx + bw, y0 + by + bh])
            overlap_w = np.minimum(train[:, 2], box[2]) - np.maximum(train[:, 0], box[0])
            overlap_h = np.minimum(train[:, 3], box[3]) - np.maximum(train[:, 1], box[1])
            assert not ((overlap_w > 0) & (overlap_h > 0)).any(), ann


def test_tiles_are_the_mosaic_cut_out(built):
    root, splits, image = built
    for split in ("train", "val"):
        for entry in splits[split]["images"][:3]:
            x0, y0, x1, y1 = entry["window"]
            tile = cv2.imread(str(root / split / entry["file_name"]))
            assert np.array_equal(tile, image[y0:y1, x0:x1])
            assert (entry["width"], entry["height"]) == (x1 - x0, y1 - y0)


def test_yolo_to_coco_boxes_match_the_source_labels(built):
    root, splits, _ = built
    source_boxes, classes = yolo_to_xyxy(np.array(LABELS, dtype=float), WIDTH, HEIGHT)
    # Box 0 (x 20..40, y 32..48) lies whole inside the first train tile (0..64, 0..64).
    first = splits["train"]["images"][0]
    assert first["window"] == [0, 0, 64, 64]
    (ann,) = [a for a in splits["train"]["annotations"] if a["image_id"] == first["id"] and a["source_box"] == 0]
    np.testing.assert_allclose(ann["bbox"], [20, 32, 20, 16], atol=1e-6)
    assert ann["category_id"] == 1 and ann["area"] == pytest.approx(320)
    assert [c["name"] for c in splits["train"]["categories"]] == list(REEF_CLASS_NAMES)
    # Every kept box, moved back to mosaic pixels, lies inside its source box, same class.
    for split in ("train", "val"):
        windows = {im["id"]: im["window"] for im in splits[split]["images"]}
        for ann in splits[split]["annotations"]:
            x0, y0 = windows[ann["image_id"]][:2]
            bx, by, bw, bh = ann["bbox"]
            src = source_boxes[ann["source_box"]]
            assert src[0] - 1e-6 <= x0 + bx and x0 + bx + bw <= src[2] + 1e-6
            assert src[1] - 1e-6 <= y0 + by and y0 + by + bh <= src[3] + 1e-6
            assert ann["category_id"] == classes[ann["source_box"]] + 1


def test_the_whole_val_area_is_one_image_with_its_boxes_uncut_by_tiles(built):
    root, splits, image = built
    (full,) = splits["val_full"]["images"]
    val_windows = [im["window"] for im in splits["val"]["images"]]
    x0, y0, x1, y1 = full["window"]
    assert [x0, y0, x1, y1] == [min(w[0] for w in val_windows), min(w[1] for w in val_windows),
                                max(w[2] for w in val_windows), max(w[3] for w in val_windows)]
    assert np.array_equal(cv2.imread(str(root / "val_full" / full["file_name"])), image[y0:y1, x0:x1])
    source_boxes, _ = yolo_to_xyxy(np.array(LABELS, dtype=float), WIDTH, HEIGHT)
    by_source = {a["source_box"]: a["bbox"] for a in splits["val_full"]["annotations"]}
    # Box 2 crosses the split line (clipped to the area); 3 and 4 lie inside it, whole.
    assert sorted(by_source) == [2, 3, 4]
    for index in (3, 4):
        sx0, sy0, sx1, sy1 = source_boxes[index]
        np.testing.assert_allclose(by_source[index], [sx0 - x0, sy0 - y0, sx1 - sx0, sy1 - sy0], atol=1e-6)
    assert by_source[2][1] == 0
    # Each val tile's box is a part of its object's box in the whole area.
    tiles = {im["id"]: im["window"] for im in splits["val"]["images"]}
    for ann in splits["val"]["annotations"]:
        tx, ty = tiles[ann["image_id"]][:2]
        bx, by, bw, bh = by_source[ann["source_box"]]
        ax, ay, aw, ah = ann["bbox"]
        assert bx + x0 - 1e-6 <= ax + tx and ax + tx + aw <= bx + x0 + bw + 1e-6
        assert by + y0 - 1e-6 <= ay + ty and ay + ty + ah <= by + y0 + bh + 1e-6


def test_box_cut_by_the_split_line_is_clipped_on_both_sides(built):
    _, splits, _ = built
    val_top = HEIGHT - TILING.val_rows * TILING.tile
    in_val = [a for a in splits["val"]["annotations"] if a["source_box"] == 2]
    assert in_val and all(a["bbox"][1] == 0 for a in in_val)  # starts at the val tile's top
    in_train = [a for a in splits["train"]["annotations"] if a["source_box"] == 2]
    windows = {im["id"]: im["window"] for im in splits["train"]["images"]}
    assert in_train and all(windows[a["image_id"]][1] + a["bbox"][1] + a["bbox"][3] <= val_top for a in in_train)


def test_too_little_left_is_dropped_and_counted(tmp_path, caplog):
    boxes = np.array([[0, 0, 100, 10], [10, 10, 30, 30], [60, 0, 200, 10], [60, 20, 63, 30]], dtype=float)
    kept, tile_boxes, clipped = crop_boxes_to_tile(boxes, (0, 0, 64, 64), ReefTiling(tile=64))
    # 64 % inside (clipped); whole; 3 % inside (dropped); whole but 3 px wide (under min_side).
    assert kept.tolist() == [0, 1]
    np.testing.assert_allclose(tile_boxes, [[0, 0, 64, 10], [10, 10, 30, 30]])
    assert clipped.tolist() == [True, False]
    # A coral larger than the tile is kept although only a small fraction of it is inside.
    kept, _, _ = crop_boxes_to_tile(np.array([[-100.0, -100.0, 300.0, 300.0]]), (0, 0, 64, 64), ReefTiling(tile=64))
    assert kept.tolist() == [0]
    root = tmp_path / "retina_reef"
    source, _ = _archive(str(root / "source" / "fake.tar.gz"))
    with caplog.at_level(logging.WARNING, logger="retina_plugin.data.reef"):
        ensure_reef_splits(str(root), source, TILING, download=_no_download)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("retina_reef_train:") and "clipped" in m and "dropped" in m for m in messages)
    info = json.loads((root / "val" / "annotations.json").read_text())["info"]["counts"]
    assert info["boxes"] == len(json.loads((root / "val" / "annotations.json").read_text())["annotations"])


def test_built_splits_are_reused_and_rebuilt_when_the_tiling_changes(built, monkeypatch):
    root, _, _ = built
    source = dict(REEF_SOURCE, archive="fake.tar.gz",
                  sha256=json.loads((root / "val" / "annotations.json").read_text())["info"]["source_sha256"])
    monkeypatch.setattr(reef, "build_reef_splits", lambda *a, **k: pytest.fail("rebuilt"))
    ensure_reef_splits(str(root), source, TILING, download=_no_download)
    monkeypatch.undo()
    ensure_reef_splits(str(root), source, ReefTiling(tile=64, train_stride=64, val_rows=1), download=_no_download)
    assert json.loads((root / "train" / "annotations.json").read_text())["info"]["train_stride"] == 64


def test_no_registry_says_how_to_get_the_archive(tmp_path):
    with pytest.raises(ReefSourceError, match="pip download --no-deps --no-binary :all: yolo-tiling==0.0.31") as info:
        ensure_reef_splits(str(tmp_path / "retina_reef"), REEF_SOURCE, TILING, download=_no_download)
    assert "no network" in str(info.value)


def test_changed_archive_is_refused(tmp_path):
    root = tmp_path / "retina_reef"
    source, _ = _archive(str(root / "source" / "fake.tar.gz"))
    with open(root / "source" / "fake.tar.gz", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ReefSourceError, match="not the expected"):
        ensure_reef_splits(str(root), source, TILING, download=_no_download)
    assert not (root / "train").exists()


@pytest.mark.parametrize("labels, message", [
    ("0 0.5 0.5 0.1\n", "expected 'class cx cy w h'"),
    ("7 0.5 0.5 0.1 0.1\n", "class is not one of 0..3"),
    ("0 0.5 1.5 0.1 0.1\n", "normalized"),
    ("0 a 0.5 0.1 0.1\n", "not numbers"),
    ("\n", "has no boxes"),
])
def test_malformed_labels_name_the_line(tmp_path, labels, message):
    root = tmp_path / "retina_reef"
    source, _ = _archive(str(root / "source" / "fake.tar.gz"), labels_text=labels)
    with pytest.raises(ReefSourceError, match=message):
        ensure_reef_splits(str(root), source, TILING, download=_no_download)


def test_other_class_names_are_refused(tmp_path):
    root = tmp_path / "retina_reef"
    source, _ = _archive(str(root / "source" / "fake.tar.gz"), names=["a", "b", "c", "d"])
    with pytest.raises(ReefSourceError, match="class names"):
        ensure_reef_splits(str(root), source, TILING, download=_no_download)


def test_registered_with_the_source_class_names():
    from detectron2.data import MetadataCatalog

    for name in ("retina_reef_train", "retina_reef_val", "retina_reef_val_full", "retina_reef_train_third"):
        assert MetadataCatalog.get(name).thing_classes == list(REEF_CLASS_NAMES)


def test_the_small_data_split_is_every_third_training_tile(monkeypatch):
    from retina_plugin.data import reef

    tiles = [{"file_name": f"{i}.png", "image_id": i, "annotations": []} for i in range(10)]
    monkeypatch.setattr(reef, "_load_split", lambda name, split: tiles if split == "train" else [])
    assert [t["image_id"] for t in reef.every_third_tile("retina_reef_train_third")] == [0, 3, 6, 9]
