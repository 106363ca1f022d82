"""
COCO-json and Pascal VOC datasets registered from the config, and their error messages.
"""
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from retina_plugin.data import check_num_classes, register_datasets_from_config
from retina_plugin.data.shapes import generate_shapes_split

from .conftest import load_cfg


@pytest.fixture
def coco_dataset(tmp_path):
    """
    A 3-image COCO dataset; returns (json path, image root, parsed json).
    """
    root = tmp_path / "coco"
    json_file = generate_shapes_split(str(root), 3, seed=5, image_size=64)
    with open(json_file) as f:
        return json_file, str(root), json.load(f)


def rewrite(json_file, data):
    with open(json_file, "w") as f:
        json.dump(data, f)


def register(coco=(), voc=(), voc_classes=()):
    cfg = load_cfg()
    cfg.DATASETS.REGISTER.COCO = [list(x) for x in coco]
    cfg.DATASETS.REGISTER.VOC = [list(x) for x in voc]
    cfg.DATASETS.REGISTER.VOC_CLASS_NAMES = list(voc_classes)
    register_datasets_from_config(cfg)
    return cfg


def unique(name, tmp_path):
    # DatasetCatalog is global: one name per test.
    return f"{name}_{abs(hash(str(tmp_path)))}"


def test_coco_json_registration(coco_dataset, tmp_path):
    json_file, image_root, data = coco_dataset
    name = unique("coco_ok", tmp_path)
    register(coco=[(name, json_file, image_root)])
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 3
    assert sum(len(d["annotations"]) for d in dicts) == len(data["annotations"])
    assert all(os.path.dirname(d["file_name"]) == image_root for d in dicts)
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == [c["name"] for c in data["categories"]]
    assert meta.evaluator_type == "coco" and meta.json_file == json_file
    # Registering the same thing again (e.g. setup() called twice) is fine ...
    register(coco=[(name, json_file, image_root)])
    # ... but the same name for other files is not.
    other = tmp_path / "other.json"
    shutil.copy(json_file, other)
    with pytest.raises(ValueError, match=f"{name}.*already registered"):
        register(coco=[(name, str(other), image_root)])


def test_num_classes_is_checked_against_the_categories(coco_dataset, tmp_path):
    json_file, image_root, _ = coco_dataset
    name = unique("coco_classes", tmp_path)
    cfg = register(coco=[(name, json_file, image_root)])
    cfg.DATASETS.TRAIN = (name,)
    cfg.MODEL.RETINANET.NUM_CLASSES = 4
    check_num_classes(cfg)
    cfg.MODEL.RETINANET.NUM_CLASSES = 80
    with pytest.raises(ValueError, match=rf"NUM_CLASSES is 80, but dataset '{name}' has 4 classes"):
        check_num_classes(cfg)


@pytest.mark.parametrize(
    "corrupt, error, message",
    [
        ("missing_json", FileNotFoundError, r"json_file '.*missing\.json' does not exist"),
        ("missing_root", FileNotFoundError, r"image_root '.*nowhere' is not a directory"),
        ("malformed", ValueError, r"annotations\.json: not valid json \(.*line 1"),
        ("dangling_image", ValueError, r"annotation 1 refers to image_id 99, which is not in 'images'"),
        ("unknown_category", ValueError, r"annotation 1 has category_id 7, which is not in 'categories'"),
        ("bad_bbox", ValueError, r"annotation 1 has bbox \[1, 2, -3, 4\]"),
        ("no_categories_key", ValueError, r"missing or non-list key 'categories'"),
    ],
)
def test_coco_json_errors_name_the_file(coco_dataset, tmp_path, corrupt, error, message):
    json_file, image_root, data = coco_dataset
    if corrupt == "missing_json":
        json_file = str(tmp_path / "missing.json")
    elif corrupt == "missing_root":
        image_root = str(tmp_path / "nowhere")
    elif corrupt == "malformed":
        with open(json_file, "w") as f:
            f.write('{"images": [')
    elif corrupt == "dangling_image":
        data["annotations"][0]["image_id"] = 99
    elif corrupt == "unknown_category":
        data["annotations"][0]["category_id"] = 7
    elif corrupt == "bad_bbox":
        data["annotations"][0]["bbox"] = [1, 2, -3, 4]
    elif corrupt == "no_categories_key":
        del data["categories"]
    if corrupt in ("dangling_image", "unknown_category", "bad_bbox", "no_categories_key"):
        rewrite(json_file, data)
    name = unique(f"coco_{corrupt}", tmp_path)
    with pytest.raises(error, match=message):
        register(coco=[(name, json_file, image_root)])
    assert name not in DatasetCatalog.list()


def test_images_missing_on_disk_are_reported_when_loading(coco_dataset, tmp_path):
    json_file, image_root, data = coco_dataset
    os.remove(os.path.join(image_root, data["images"][1]["file_name"]))
    name = unique("coco_missing_image", tmp_path)
    register(coco=[(name, json_file, image_root)])
    with pytest.raises(FileNotFoundError, match=rf"{name}.*1 images listed in .* missing on disk:\n.*000002\.png"):
        DatasetCatalog.get(name)


def test_malformed_config_entry(tmp_path):
    with pytest.raises(ValueError, match=r"DATASETS.REGISTER.COCO\[0\] = \['only_a_name'\]"):
        register(coco=[("only_a_name",)])


# ----------------------------------------------------------------------------- VOC
VOC_CLASSES = ["bolt", "nut"]


def write_voc(root, objects_by_id, with_size=True, extension=".jpg"):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(root / sub, exist_ok=True)
    for file_id, objects in objects_by_id.items():
        cv2.imwrite(str(root / "JPEGImages" / f"{file_id}{extension}"), np.zeros((40, 60, 3), np.uint8))
        objs = "".join(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
            f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for name, b in objects
        )
        size = "<size><width>60</width><height>40</height><depth>3</depth></size>" if with_size else ""
        (root / "Annotations" / f"{file_id}.xml").write_text(
            f"<annotation><filename>{file_id}{extension}</filename>{size}{objs}</annotation>"
        )
    (root / "ImageSets/Main/train.txt").write_text("\n".join(objects_by_id) + "\n")


def test_voc_registration(tmp_path):
    root = tmp_path / "voc"
    write_voc(root, {"a1": [("nut", (11, 6, 30, 20)), ("bolt", (2, 2, 9, 9))], "a2": []})
    name = unique("voc_ok", tmp_path)
    register(voc=[(name, str(root), "train")], voc_classes=VOC_CLASSES)
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == ["a1", "a2"]
    assert (dicts[0]["height"], dicts[0]["width"]) == (40, 60)
    anns = dicts[0]["annotations"]
    assert [a["category_id"] for a in anns] == [1, 0]
    assert anns[0]["bbox"] == [10.0, 5.0, 30.0, 20.0] and anns[0]["bbox_mode"] == BoxMode.XYXY_ABS
    assert dicts[1]["annotations"] == []
    assert MetadataCatalog.get(name).thing_classes == VOC_CLASSES


def test_voc_png_images_and_no_size_tag(tmp_path):
    root = tmp_path / "voc"
    write_voc(root, {"p1": [("bolt", (1, 1, 5, 5))]}, with_size=False, extension=".png")
    name = unique("voc_png", tmp_path)
    register(voc=[(name, str(root), "train")], voc_classes=VOC_CLASSES)
    (d,) = DatasetCatalog.get(name)
    assert d["file_name"].endswith("p1.png") and (d["height"], d["width"]) == (40, 60)


@pytest.mark.parametrize(
    "corrupt, error, message",
    [
        ("missing_folder", FileNotFoundError, r"VOC folder '.*absent' does not exist"),
        ("missing_split", FileNotFoundError, r"split file '.*ImageSets/Main/train\.txt' does not exist"),
        ("no_classes", ValueError, r"needs DATASETS.REGISTER.VOC_CLASS_NAMES"),
        ("unknown_class", ValueError, r"b1\.xml: object class 'washer' is not in .*\['bolt', 'nut'\]"),
        ("missing_image", FileNotFoundError, r"1 images missing on disk:\n.*JPEGImages/b1\.jpg"),
        ("missing_xml", FileNotFoundError, r"1 annotation files missing on disk:\n.*Annotations/b1\.xml"),
        ("malformed_xml", ValueError, r"b1\.xml: not valid XML"),
    ],
)
def test_voc_errors_name_the_file(tmp_path, corrupt, error, message):
    root = tmp_path / "voc"
    write_voc(root, {"b1": [("washer" if corrupt == "unknown_class" else "nut", (1, 1, 9, 9))]})
    classes, dirname = VOC_CLASSES, str(root)
    if corrupt == "missing_folder":
        dirname = str(tmp_path / "absent")
    elif corrupt == "missing_split":
        os.remove(root / "ImageSets/Main/train.txt")
    elif corrupt == "no_classes":
        classes = []
    elif corrupt == "missing_image":
        os.remove(root / "JPEGImages/b1.jpg")
    elif corrupt == "missing_xml":
        os.remove(root / "Annotations/b1.xml")
    elif corrupt == "malformed_xml":
        (root / "Annotations/b1.xml").write_text("<annotation><object>")
    name = unique(f"voc_{corrupt}", tmp_path)
    with pytest.raises(error, match=message):
        register(voc=[(name, dirname, "train")], voc_classes=classes)
        DatasetCatalog.get(name)  # the rest is found when loading
