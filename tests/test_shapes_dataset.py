"""
The built-in "retina_shapes" dataset: deterministic, sane annotations, registered lazily.
"""
import json
import os
from collections import Counter

import cv2
import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from retina_plugin.data.shapes import (
    SHAPES_CLASS_NAMES,
    SHAPES_OBJECT_SIZE,
    SHAPES_OBJECTS_PER_IMAGE,
    SHAPES_SPLITS,
    ensure_shapes_split,
    generate_shapes_split,
)

from .conftest import CONFIGS


def read_split(folder):
    with open(os.path.join(folder, "annotations.json")) as f:
        data = json.load(f)
    images = [cv2.imread(os.path.join(folder, im["file_name"])) for im in data["images"]]
    return data, images


def test_same_seed_same_dataset_other_seed_other_dataset(tmp_path):
    generate_shapes_split(str(tmp_path / "a"), 4, seed=7, image_size=128)
    generate_shapes_split(str(tmp_path / "b"), 4, seed=7, image_size=128)
    generate_shapes_split(str(tmp_path / "c"), 4, seed=8, image_size=128)
    (a, images_a), (b, images_b), (c, images_c) = (read_split(tmp_path / x) for x in "abc")
    assert a == b
    assert all(np.array_equal(x, y) for x, y in zip(images_a, images_b))
    assert a["annotations"] != c["annotations"]
    assert not any(np.array_equal(x, y) for x, y in zip(images_a, images_c))


@pytest.fixture(scope="module")
def sample_split(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes") / "sample"
    generate_shapes_split(str(folder), 60, seed=0)
    return read_split(folder)


def test_annotations_are_sane(sample_split):
    data, images = sample_split
    assert [c["name"] for c in data["categories"]] == list(SHAPES_CLASS_NAMES)
    per_image = Counter(a["image_id"] for a in data["annotations"])
    boxes_by_image = {}
    for ann in data["annotations"]:
        image = data["images"][ann["image_id"] - 1]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"]
        assert SHAPES_OBJECT_SIZE[0] * 0.5 <= max(w, h) <= SHAPES_OBJECT_SIZE[1] + 1
        assert ann["area"] == pytest.approx(w * h)
        assert ann["category_id"] in range(1, len(SHAPES_CLASS_NAMES) + 1)
        boxes_by_image.setdefault(ann["image_id"], []).append([x, y, x + w, y + h])
    # "Many small objects per image".
    assert min(per_image.values()) >= SHAPES_OBJECTS_PER_IMAGE[0] - 2
    assert max(per_image.values()) <= SHAPES_OBJECTS_PER_IMAGE[1]
    for image_id, boxes in boxes_by_image.items():
        boxes = np.array(boxes)
        # Objects cover a minority of the pixels: most anchors are (easy) background.
        covered = np.zeros((data["images"][0]["height"], data["images"][0]["width"]), bool)
        for x0, y0, x1, y1 in boxes.astype(int):
            covered[y0:y1, x0:x1] = True
        assert covered.mean() < 0.4
        # The drawn object is visible: the box's center pixel differs from the corners' mean.
        image = images[image_id - 1].astype(float)
        for x0, y0, x1, y1 in boxes.astype(int):
            center = image[(y0 + y1) // 2, (x0 + x1) // 2]
            corners = image[[y0, y0, y1 - 1, y1 - 1], [x0, x1 - 1, x0, x1 - 1]].mean(0)
            assert np.abs(center - corners).max() > 10


def test_classes_have_unequal_frequencies(sample_split):
    data, _ = sample_split
    counts = Counter(a["category_id"] for a in data["annotations"])
    ordered = [counts[i] for i in range(1, len(SHAPES_CLASS_NAMES) + 1)]
    assert ordered == sorted(ordered, reverse=True)
    assert ordered[0] > 3 * ordered[-1]


def test_registered_splits_are_drawn_on_first_use():
    name = "retina_shapes_test"
    split, num_images, _ = SHAPES_SPLITS[name]
    root = os.path.join(os.environ["DETECTRON2_DATASETS"], "retina_shapes")
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == num_images
    assert all(d["file_name"].startswith(os.path.join(root, split)) for d in dicts)
    assert all(os.path.isfile(d["file_name"]) and d["annotations"] for d in dicts)
    assert MetadataCatalog.get(name).thing_classes == list(SHAPES_CLASS_NAMES)
    assert {a["category_id"] for d in dicts for a in d["annotations"]} <= set(range(4))


def test_split_made_with_other_settings_is_redrawn(tmp_path):
    json_file = ensure_shapes_split(str(tmp_path), "val", 3, seed=1)
    assert len(json.load(open(json_file))["images"]) == 3
    assert ensure_shapes_split(str(tmp_path), "val", 3, seed=1) == json_file  # reused
    ensure_shapes_split(str(tmp_path), "val", 5, seed=1)
    assert len(json.load(open(json_file))["images"]) == 5
    assert len([f for f in os.listdir(tmp_path / "val") if f.endswith(".png")]) == 5
    assert os.listdir(tmp_path) == ["val"]  # no temporary folders left behind


def _aspects(data):
    """Long side / short side and whether the box lies along x, per box."""
    sides = np.array([a["bbox"][2:] for a in data["annotations"]])
    return sides.max(1) / sides.min(1), sides[:, 0] > sides[:, 1]


def test_elongated_shapes_are_thin_both_ways_and_plain_ones_are_not(tmp_path, sample_split):
    generate_shapes_split(str(tmp_path / "thin"), 30, seed=0, object_size=(24, 64), elongation=(4, 8))
    data, images = read_split(tmp_path / "thin")
    assert data["info"]["elongation"] == [4, 8] and len(data["annotations"]) > 100
    aspects, along_x = _aspects(data)
    # A squeezed shape's box keeps its drawn ratio up to the shape's own outline (a triangle is
    # not as wide as it is tall): between 3 and 10 here, 1:2 anchors fit none.
    assert aspects.min() > 3 and aspects.max() < 10 and 4 < np.median(aspects) < 8
    assert 0.3 < along_x.mean() < 0.7  # lying along x and along y
    plain_aspects, _ = _aspects(sample_split[0])
    assert plain_aspects.max() < 1.6 and "elongation" not in sample_split[0]["info"]
    # The default draws what retina_shapes always drew: elongation (1, 1) takes no extra random draws.
    generate_shapes_split(str(tmp_path / "plain"), 3, seed=0, elongation=(1, 1))
    generate_shapes_split(str(tmp_path / "default"), 3, seed=0)
    (plain, plain_images), (default, default_images) = read_split(tmp_path / "plain"), read_split(tmp_path / "default")
    assert plain == default and all(np.array_equal(x, y) for x, y in zip(plain_images, default_images))
    with pytest.raises(ValueError, match=r"elongation \(0.5, 2\)"):
        generate_shapes_split(str(tmp_path / "bad"), 1, seed=0, elongation=(0.5, 2))


def test_dense_scenes_hold_the_asked_number_of_objects(tmp_path, sample_split):
    generate_shapes_split(str(tmp_path / "dense"), 6, seed=0, object_size=(12, 32), objects_per_image=(25, 40))
    data, _ = read_split(tmp_path / "dense")
    per_image = np.bincount([a["image_id"] for a in data["annotations"]], minlength=7)[1:]
    assert data["info"]["objects_per_image"] == [25, 40] and per_image.min() >= 25 and per_image.max() <= 40
    # retina_shapes' own count (6-16) is left out of info, so its splits are not redrawn.
    assert "objects_per_image" not in sample_split[0]["info"]
    assert np.bincount([a["image_id"] for a in sample_split[0]["annotations"]])[1:].max() <= 16
    with pytest.raises(ValueError, match=r"objects_per_image \(5, 2\)"):
        generate_shapes_split(str(tmp_path / "bad"), 1, seed=0, objects_per_image=(5, 2))


def test_out_of_anchor_shapes_are_drawn_once_redrawn_when_their_settings_change_and_registered(
        tmp_path, monkeypatch):
    from retina_plugin.config import load_config
    from retina_plugin.data import register_datasets_from_config
    from retina_plugin.experiments import fitted_anchors

    monkeypatch.setattr(fitted_anchors, "SHAPES_VARIANT_SPLITS", {"train": (4, 1), "val": (2, 2)})
    root = str(tmp_path / "thin")
    opts = fitted_anchors.shapes_variant_opts(root, "test_thin_shapes", (24, 64), (4, 8))
    train_json = os.path.join(root, "train", "annotations.json")
    drawn_at = os.path.getmtime(train_json)
    assert fitted_anchors.shapes_variant_opts(root, "test_thin_shapes", (24, 64), (4, 8)) == opts
    assert os.path.getmtime(train_json) == drawn_at  # the same settings: kept
    cfg = load_config(str(CONFIGS / "demo_R18_cpu.yaml"), opts)
    register_datasets_from_config(cfg)
    assert cfg.DATASETS.TRAIN == ("test_thin_shapes_train",) and cfg.DATASETS.TEST == ("test_thin_shapes_val",)
    assert [len(DatasetCatalog.get(f"test_thin_shapes_{s}")) for s in ("train", "val")] == [4, 2]
    assert min(_aspects(json.load(open(train_json)))[0]) > 3
    fitted_anchors.shapes_variant_opts(root, "test_thin_shapes", (24, 64), (2, 3))  # other settings: redrawn
    redrawn = json.load(open(train_json))
    assert redrawn["info"]["elongation"] == [2, 3] and max(_aspects(redrawn)[0]) < 4
    # As one class: the same images and boxes, every object a "shape", and a one-class head.
    one_class = fitted_anchors.shapes_variant_opts(root, "test_one_class", (24, 64), (2, 3), one_class=True)
    assert one_class[-2:] == ["MODEL.RETINANET.NUM_CLASSES", "1"]
    cfg = load_config(str(CONFIGS / "demo_R18_cpu.yaml"), one_class)
    register_datasets_from_config(cfg)
    records = DatasetCatalog.get("test_one_class_train")
    assert MetadataCatalog.get("test_one_class_train").thing_classes == ["shape"]
    assert [[a["bbox"] for a in r["annotations"]] for r in records] == \
        [[a["bbox"] for a in r["annotations"]] for r in DatasetCatalog.get("test_thin_shapes_train")]
    assert {a["category_id"] for r in records for a in r["annotations"]} == {0}
    assert json.load(open(train_json))["categories"][3]["name"] == "star"  # the four-class json is kept
