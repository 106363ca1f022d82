"""
Register datasets from the config (``cfg.DATASETS.REGISTER``), so custom data needs no Python:

    DATASETS:
      REGISTER:
        COCO: [["my_train", "data/train.json", "data/train_images"],
               ["my_val", "data/val.json", "data/val_images"]]
        VOC: [["parts_trainval", "data/VOCparts", "trainval"]]
        VOC_CLASS_NAMES: ["bolt", "nut"]
      TRAIN: ("my_train",)
      TEST: ("my_val",)

Everything that can be checked without reading images is checked at registration (missing
files, malformed json, dangling ids, boxes that are not 4 finite numbers or have a negative
size); images listed but missing on disk are reported when the dataset is loaded, i.e. before
training starts. Every error names the file and the entry. Boxes a detectron2 user expects to
be tolerated are dropped (zero width or height, wholly outside the image) or clipped (partly
outside) with one WARNING per dataset that counts them and names the file and annotation ids.
"""
import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from typing import Dict, List, Sequence

from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

logger = logging.getLogger(__name__)

__all__ = [
    "register_coco_json",
    "register_voc_folder",
    "register_datasets_from_config",
    "check_num_classes",
]

# name -> what it was registered with, so registering the same thing twice is a no-op.
_REGISTERED: Dict[str, tuple] = {}


def _needs_registration(name: str, spec: tuple, source: str) -> bool:
    """
    True if ``name`` is free; False if it is already registered with ``spec``.
    """
    if name not in DatasetCatalog.list():
        return True
    if _REGISTERED.get(name) == spec:
        return False
    raise ValueError(
        f"{source}: dataset name {name!r} is already registered (a built-in dataset or "
        "another entry with different files); choose another name"
    )


def _missing_files_error(dataset_name: str, what: str, missing: List[str]) -> FileNotFoundError:
    shown = "\n  ".join(missing[:10])
    more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
    return FileNotFoundError(
        f"Dataset {dataset_name!r}: {len(missing)} {what} missing on disk:\n  {shown}{more}"
    )


# ----------------------------------------------------------------------------- boxes
def _bbox_error(bbox) -> str:
    """
    Why ``bbox`` ([x, y, w, h]) is invalid, or "" if it is 4 finite numbers with w, h >= 0.
    """
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return "expected a list [x, y, width, height] of 4 numbers"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        return "coordinates must be numbers"
    if not all(math.isfinite(v) for v in bbox):
        return "coordinates must be finite (no NaN / inf)"
    if bbox[2] < 0 or bbox[3] < 0:
        return "width and height must be >= 0"
    return ""


# What happens to a valid box, by _box_fate: "keep", "zero-size", "outside" (both dropped),
# "clipped" (kept; detectron2 clips it to the image).
def _box_fate(bbox, width, height) -> str:
    x, y, w, h = bbox
    if w == 0 or h == 0:
        return "zero-size"
    if width is None or height is None:
        return "keep"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return "outside"
    if x < 0 or y < 0 or x + w > width or y + h > height:
        return "clipped"
    return "keep"


def _warn_box_fates(dataset_name: str, source_file: str, fates: Dict[str, List]) -> None:
    """
    One WARNING for the whole dataset: how many boxes are dropped / clipped and which.
    """
    what = {
        "zero-size": "dropped (zero width or height)",
        "outside": "dropped (wholly outside their image)",
        "clipped": "clipped to their image (partly outside)",
    }
    parts = []
    for fate, label in what.items():
        ids = fates.get(fate, [])
        if ids:
            shown = ", ".join(str(i) for i in ids[:10]) + (" ..." if len(ids) > 10 else "")
            parts.append(f"{len(ids)} box(es) {label}: {shown}")
    if parts:
        logger.warning(f"Dataset {dataset_name!r} ({source_file}): " + "; ".join(parts))


def _drop_bad_boxes(dicts: List[Dict]) -> None:
    """
    Remove, in place, the annotations (XYWH_ABS or XYXY_ABS boxes) that _box_fate drops.
    """
    for record in dicts:
        kept = []
        for ann in record.get("annotations", []):
            bbox = list(ann["bbox"])
            if ann.get("bbox_mode") == BoxMode.XYXY_ABS:
                bbox = [bbox[0], bbox[1], bbox[2] - bbox[0], bbox[3] - bbox[1]]
            if _box_fate(bbox, record.get("width"), record.get("height")) not in ("zero-size", "outside"):
                kept.append(ann)
        record["annotations"] = kept


# ----------------------------------------------------------------------------- COCO json
def _read_coco_categories(json_file: str, image_root: str, source: str, name: str = "") -> List[Dict]:
    """
    Check a COCO json's structure, cross references and boxes (warning once about the boxes
    that will be dropped or clipped); return its categories sorted by id.
    """
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"{source}: json_file {json_file!r} does not exist")
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"{source}: image_root {image_root!r} is not a directory")
    try:
        with open(json_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_file}: not valid json ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{json_file}: expected a COCO json object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{json_file}: missing or non-list key {key!r} (COCO format)")

    def ids(key: str, required: Sequence[str]) -> set:
        seen = set()
        for i, entry in enumerate(data[key]):
            absent = [k for k in required if k not in entry]
            if absent:
                raise ValueError(f"{json_file}: {key}[{i}] lacks {absent}: {entry}")
            if entry["id"] in seen:
                raise ValueError(f"{json_file}: {key} id {entry['id']} appears twice")
            seen.add(entry["id"])
        return seen

    category_ids = ids("categories", ("id", "name"))
    image_ids = ids("images", ("id", "file_name", "width", "height"))
    image_sizes = {}
    for img in data["images"]:
        w, h = img["width"], img["height"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (w, h)):
            raise ValueError(
                f"{json_file}: image {img['id']} ({img['file_name']}) has width {w!r}, height "
                f"{h!r}; expected positive numbers"
            )
        image_sizes[img["id"]] = (w, h)
    fates: Dict[str, List] = {}
    if not category_ids:
        raise ValueError(f"{json_file}: 'categories' is empty")
    for i, ann in enumerate(data["annotations"]):
        absent = [k for k in ("image_id", "category_id", "bbox") if k not in ann]
        if absent:
            raise ValueError(f"{json_file}: annotations[{i}] lacks {absent}")
        if ann["image_id"] not in image_ids:
            raise ValueError(
                f"{json_file}: annotation {ann.get('id', i)} refers to image_id "
                f"{ann['image_id']}, which is not in 'images'"
            )
        if ann["category_id"] not in category_ids:
            raise ValueError(
                f"{json_file}: annotation {ann.get('id', i)} has category_id "
                f"{ann['category_id']}, which is not in 'categories' (ids {sorted(category_ids)})"
            )
        bbox = ann["bbox"]
        problem = _bbox_error(bbox)
        if problem:
            raise ValueError(
                f"{json_file}: annotation {ann.get('id', i)} has bbox {bbox!r}: {problem} "
                f"(image_id {ann['image_id']})"
            )
        fate = _box_fate(bbox, *image_sizes[ann["image_id"]])
        if fate != "keep":
            fates.setdefault(fate, []).append(f"annotation {ann.get('id', i)}")
    _warn_box_fates(name or source, json_file, fates)
    return sorted(data["categories"], key=lambda c: c["id"])


def register_coco_json(name: str, json_file: str, image_root: str, source: str = "") -> None:
    """
    Register a COCO-format detection dataset, checked (see module docstring). Class names
    come from the json's categories, in id order.
    """
    source = source or f"dataset {name!r}"
    spec = ("coco", os.path.abspath(json_file), os.path.abspath(image_root))
    if not _needs_registration(name, spec, source):
        return
    categories = _read_coco_categories(json_file, image_root, source, name)

    def load():
        dicts = load_coco_json(json_file, image_root, name)
        missing = [d["file_name"] for d in dicts if not os.path.isfile(d["file_name"])]
        if missing:
            raise _missing_files_error(name, f"images listed in {json_file}", missing)
        _drop_bad_boxes(dicts)  # counted in the WARNING at registration
        return dicts

    DatasetCatalog.register(name, load)
    _REGISTERED[name] = spec
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        thing_classes=[c["name"] for c in categories],
        thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(categories)},
    )


# ----------------------------------------------------------------------------- Pascal VOC
def _load_voc(name: str, dirname: str, split: str, class_names: List[str]) -> List[Dict]:
    with open(os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")) as f:
        file_ids = [line.split()[0] for line in f if line.strip()]
    dicts, missing_xml, missing_images = [], [], []
    fates: Dict[str, List] = {}
    for file_id in file_ids:
        xml_file = os.path.join(dirname, "Annotations", f"{file_id}.xml")
        if not os.path.isfile(xml_file):
            missing_xml.append(xml_file)
            continue
        try:
            tree = ET.parse(xml_file)
        except ET.ParseError as e:
            raise ValueError(f"{xml_file}: not valid XML ({e})") from e
        file_name = tree.findtext("filename") or f"{file_id}.jpg"
        image_file = os.path.join(dirname, "JPEGImages", os.path.basename(file_name))
        if not os.path.isfile(image_file):
            missing_images.append(image_file)
            continue
        width, height = tree.findtext("size/width"), tree.findtext("size/height")
        if width and height:
            try:
                width, height = int(float(width)), int(float(height))
            except ValueError as e:
                raise ValueError(
                    f"{xml_file}: <size> width {width!r} / height {height!r} are not numbers"
                ) from e
        else:
            with Image.open(image_file) as image:
                width, height = image.size
        annotations = []
        for obj in tree.findall("object"):
            class_name = (obj.findtext("name") or "").strip()
            if class_name not in class_names:
                raise ValueError(
                    f"{xml_file}: object class {class_name!r} is not in "
                    f"DATASETS.REGISTER.VOC_CLASS_NAMES {class_names}"
                )
            try:
                xmin, ymin, xmax, ymax = (
                    float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")
                )
            except (TypeError, ValueError) as e:
                raise ValueError(f"{xml_file}: object {class_name!r} has no valid bndbox") from e
            # VOC pixel indexes are 1-based and inclusive: width = xmax - xmin + 1.
            bbox = [xmin - 1.0, ymin - 1.0, xmax - xmin + 1.0, ymax - ymin + 1.0]
            problem = _bbox_error(bbox)
            if problem:
                raise ValueError(
                    f"{xml_file}: object {class_name!r} has bndbox xmin={xmin}, ymin={ymin}, "
                    f"xmax={xmax}, ymax={ymax}: {problem.replace('width and height', 'xmax >= xmin - 1 and ymax >= ymin - 1')}"
                )
            fate = _box_fate(bbox, width, height)
            if fate != "keep":
                fates.setdefault(fate, []).append(f"{os.path.basename(xml_file)} object {class_name!r}")
            annotations.append(
                {
                    "category_id": class_names.index(class_name),
                    # VOC pixel indexes are 1-based.
                    "bbox": [xmin - 1.0, ymin - 1.0, xmax, ymax],
                    "bbox_mode": BoxMode.XYXY_ABS,
                }
            )
        dicts.append(
            {
                "file_name": image_file,
                "image_id": file_id,
                "height": height,
                "width": width,
                "annotations": annotations,
            }
        )
    if missing_xml:
        raise _missing_files_error(name, "annotation files", missing_xml)
    if missing_images:
        raise _missing_files_error(name, "images", missing_images)
    _warn_box_fates(name, os.path.join(dirname, "Annotations"), fates)
    _drop_bad_boxes(dicts)
    return dicts


def register_voc_folder(
    name: str, dirname: str, split: str, class_names: Sequence[str], source: str = ""
) -> None:
    """
    Register a Pascal VOC-style folder: ``Annotations/<id>.xml``, ``JPEGImages/<file>``
    (the XML's <filename>, else ``<id>.jpg``) and ``ImageSets/Main/<split>.txt``.
    """
    source = source or f"dataset {name!r}"
    class_names = list(class_names)
    spec = ("voc", os.path.abspath(dirname), split, tuple(class_names))
    if not class_names:
        raise ValueError(f"{source}: a VOC dataset needs DATASETS.REGISTER.VOC_CLASS_NAMES")
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"{source}: VOC_CLASS_NAMES has duplicates: {class_names}")
    split_file = os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isdir(dirname):
        raise FileNotFoundError(f"{source}: VOC folder {dirname!r} does not exist")
    if not os.path.isfile(split_file):
        raise FileNotFoundError(f"{source}: split file {split_file!r} does not exist")
    if not _needs_registration(name, spec, source):
        return
    DatasetCatalog.register(name, lambda: _load_voc(name, dirname, split, class_names))
    _REGISTERED[name] = spec
    MetadataCatalog.get(name).set(
        thing_classes=class_names, dirname=dirname, split=split, evaluator_type="coco"
    )


# ----------------------------------------------------------------------------- from config
def _entries(cfg_value, key: str, fields: str) -> List[List[str]]:
    entries = []
    for i, entry in enumerate(cfg_value):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
            raise ValueError(f"{key}[{i}] = {entry!r}: expected [{fields}]")
        entries.append([str(v) for v in entry])
    return entries


def register_datasets_from_config(cfg) -> None:
    """
    Register every dataset listed under ``cfg.DATASETS.REGISTER``.
    """
    for i, (name, json_file, image_root) in enumerate(
        _entries(cfg.DATASETS.REGISTER.COCO, "DATASETS.REGISTER.COCO", "name, json_file, image_root")
    ):
        register_coco_json(name, json_file, image_root, source=f"DATASETS.REGISTER.COCO[{i}]")
    for i, (name, dirname, split) in enumerate(
        _entries(cfg.DATASETS.REGISTER.VOC, "DATASETS.REGISTER.VOC", "name, dirname, split")
    ):
        register_voc_folder(
            name, dirname, split, cfg.DATASETS.REGISTER.VOC_CLASS_NAMES,
            source=f"DATASETS.REGISTER.VOC[{i}]",
        )


def check_num_classes(cfg) -> None:
    """
    Raise if MODEL.RETINANET.NUM_CLASSES differs from the classes of a train/test dataset.
    """
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        classes = MetadataCatalog.get(name).get("thing_classes")
        if classes is not None and len(classes) != num_classes:
            shown = classes if len(classes) <= 10 else classes[:10] + ["..."]
            raise ValueError(
                f"MODEL.RETINANET.NUM_CLASSES is {num_classes}, but dataset {name!r} has "
                f"{len(classes)} classes {shown}; set MODEL.RETINANET.NUM_CLASSES {len(classes)}"
            )
