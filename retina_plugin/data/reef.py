"""
"retina_reef": real imagery built in, a coral-reef survey annotated by people.

The source is an underwater orthomosaic of a coral reef (3175 x 3176 px, RGB) with 308 boxes
of 4 coral classes in YOLO format, shipped in the MIT-licensed sdist of the PyPI package
``yolo-tiling==0.0.31`` (``tests/detection/``). On first use it is downloaded with pip into
``$DETECTRON2_DATASETS/retina_reef/source/`` (or taken from there when put there by hand),
checked against its SHA-256, cut into tiles and cached as two COCO-format splits:

- ``retina_reef_val``: the bottom rows of non-overlapping tiles (``REEF_TILING``);
- ``retina_reef_val_full``: the same area as one image, its boxes clipped only to the area
  (sliced evaluation of a large image, :mod:`retina_plugin.slicing`);
- ``retina_reef_train``: overlapping tiles of the area above
  it. The split is by area: no training tile overlaps a validation tile, so no pixel of a
  validation object is ever trained on.

A box cut by a tile edge is clipped to the tile; it is dropped when too little of it is left
(see :func:`crop_boxes_to_tile`). Both counts are logged as one WARNING per split.
"""
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np
import yaml

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .tiled_dataset import TiledCocoWriter
from .windows import ClipRule, SliceGridError, area_split_windows, clip_boxes_to_window
from ..utils.files import file_sha256

__all__ = [
    "REEF_SOURCE",
    "REEF_CLASS_NAMES",
    "REEF_TILING",
    "ReefTiling",
    "REEF_SPLITS",
    "ReefSourceError",
    "reef_root",
    "fetch_reef_source",
    "read_reef_source",
    "yolo_to_xyxy",
    "reef_tile_windows",
    "crop_boxes_to_tile",
    "clip_rule",
    "build_reef_splits",
    "ensure_reef_splits",
    "register_reef_datasets",
]

logger = logging.getLogger(__name__)

# Where the imagery comes from: one sdist on PyPI, pinned by version and checksum.
REEF_SOURCE = {
    "requirement": "yolo-tiling==0.0.31",
    "archive": "yolo_tiling-0.0.31.tar.gz",
    "sha256": "d1681668491b770b903646e735c53ebdb0731063832288267d7562444db5263d",
    "image": "yolo_tiling-0.0.31/tests/detection/train/images/VOS_RGB.png",
    "labels": "yolo_tiling-0.0.31/tests/detection/train/labels/VOS_RGB.txt",
    "names": "yolo_tiling-0.0.31/tests/detection/data.yaml",
    "license": "yolo_tiling-0.0.31/LICENSE",
}


@dataclass(frozen=True)
class ReefTiling:
    """How the mosaic is cut into tiles (square, at the mosaic's own resolution)."""

    # Tile side in pixels; configs choose the input scale.
    tile: int = 512
    # Training tiles overlap by half: each object is seen in several contexts and crops.
    train_stride: int = 256
    # Validation: this many rows of tiles at the bottom (2 x 512 of 3176 px: 32 % of the area).
    val_rows: int = 2
    # A clipped box is kept when at least this fraction of its area is inside the tile ...
    min_visible_fraction: float = 0.4
    # ... or when what is inside spans this fraction of the tile in both directions (a coral
    # larger than the tile); never when a visible side is under min_side pixels.
    min_tile_span: float = 0.5
    min_side: float = 4.0


REEF_TILING = ReefTiling()
# The class names of the source's data.yaml (checked when the tiles are built).
REEF_CLASS_NAMES = ("Montipora_plate/flabellata", "Pocillopora", "Porite_massive", "Montipora_crust/patula")
# dataset name -> split
# "val_full": the validation area as one 3072 x 1024 image, its boxes uncut by tiles (sliced
# evaluation, docs/prediction.md "Large images").
REEF_SPLITS = {"retina_reef_train": "train", "retina_reef_val": "val", "retina_reef_val_full": "val_full"}


class ReefSourceError(RuntimeError):
    """
    The reef source archive is missing, cannot be downloaded, or is not the expected file.
    """


def reef_root() -> str:
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "retina_reef")


def pip_download(requirement: str, target_dir: str) -> str:
    """
    ``pip download`` of an sdist into ``target_dir``; returns "" on success, else pip's error.
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", requirement, "-d", target_dir]
    done = subprocess.run(command, capture_output=True, text=True)
    return "" if done.returncode == 0 else (done.stderr or done.stdout or "pip failed").strip()


def fetch_reef_source(source_dir: str, source: Dict = REEF_SOURCE,
                      download: Callable[[str, str], str] = pip_download) -> str:
    """
    Path of the source archive in ``source_dir``, downloaded (``download(requirement, dir)``,
    pip by default) if absent; its SHA-256 is checked either way. Raises
    :class:`ReefSourceError` saying what to do.
    """
    archive = os.path.join(source_dir, source["archive"])
    manual = (
        f"download it on a machine that reaches PyPI with\n"
        f"  pip download --no-deps --no-binary :all: {source['requirement']} -d {source_dir}"
    )
    if not os.path.isfile(archive):
        os.makedirs(source_dir, exist_ok=True)
        logger.info(f"Downloading {source['requirement']} (the reef imagery) into {source_dir}")
        error = download(source["requirement"], source_dir)
        if error or not os.path.isfile(archive):
            raise ReefSourceError(
                f"Could not download the reef imagery ({source['requirement']}):\n"
                f"{(error or 'the download did not write ' + archive)[-2000:]}\n"
                f"To build retina_reef, {manual}"
            )
    actual = file_sha256(archive)
    if actual != source["sha256"]:
        raise ReefSourceError(
            f"{archive} has SHA-256 {actual}, not the expected {source['sha256']}: it is not "
            f"the archive retina_reef is built from. Delete it and {manual}"
        )
    return archive


def read_reef_source(archive: str, source: Dict = REEF_SOURCE) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """
    The mosaic (H, W, 3) uint8 BGR, its YOLO labels (N, 5): class, cx, cy, w, h (normalized),
    and the class names, read from the archive. Every malformed entry is an error naming it.
    """
    with tarfile.open(archive) as tar:
        def member(key: str) -> bytes:
            try:
                return tar.extractfile(source[key]).read()
            except (KeyError, AttributeError) as e:
                raise ReefSourceError(f"{archive} lacks {source[key]}") from e

        image = cv2.imdecode(np.frombuffer(member("image"), np.uint8), cv2.IMREAD_COLOR)
        labels_text = member("labels").decode()
        names = yaml.safe_load(member("names")).get("names")
    if image is None:
        raise ReefSourceError(f"{archive}: {source['image']} is not a readable image")
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ReefSourceError(f"{archive}: {source['names']} has no list of class names")
    rows = []
    for line_number, line in enumerate(labels_text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{archive}: {source['labels']} line {line_number} ({line.strip()!r})"
        try:
            values = [float(v) for v in line.split()]
        except ValueError as e:
            raise ReefSourceError(f"{where}: not numbers") from e
        if len(values) != 5:
            raise ReefSourceError(f"{where}: expected 'class cx cy w h'")
        if values[0] != int(values[0]) or not 0 <= values[0] < len(names):
            raise ReefSourceError(f"{where}: class is not one of 0..{len(names) - 1}")
        if not all(0 <= v <= 1 for v in values[1:]) or values[3] <= 0 or values[4] <= 0:
            raise ReefSourceError(f"{where}: coordinates must be normalized to [0, 1], sizes > 0")
        rows.append(values)
    if not rows:
        raise ReefSourceError(f"{archive}: {source['labels']} has no boxes")
    return image, np.asarray(rows, dtype=np.float64), names


def yolo_to_xyxy(labels: np.ndarray, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """
    YOLO rows (N, 5) of class, normalized cx, cy, w, h -> boxes (N, 4) XYXY in pixels of a
    ``width`` x ``height`` image, clipped to it, and classes (N,) int64.
    """
    cx, cy, w, h = (labels[:, i] for i in range(1, 5))
    boxes = np.stack([(cx - w / 2) * width, (cy - h / 2) * height,
                      (cx + w / 2) * width, (cy + h / 2) * height], axis=1)
    boxes = np.clip(boxes, 0, [width, height, width, height])
    return boxes, labels[:, 0].astype(np.int64)


def clip_rule(tiling: ReefTiling = REEF_TILING) -> ClipRule:
    """The tiling's rule for boxes cut by a tile edge."""
    return ClipRule(tiling.min_visible_fraction, tiling.min_tile_span, tiling.min_side)


def reef_tile_windows(
    height: int, width: int, tiling: ReefTiling = REEF_TILING
) -> Dict[str, List[Tuple[int, int, int, int]]]:
    """
    Tile windows (x0, y0, x1, y1) per split. "val": ``tiling.val_rows`` rows of
    non-overlapping tiles at the bottom (columns left-aligned; a strip narrower than a tile at
    the right is unused); "train": tiles every ``tiling.train_stride`` pixels over the area
    above the validation rows. "val_full": the validation area as one window.
    """
    try:
        windows = area_split_windows(height, width, tiling.tile, tiling.train_stride, tiling.val_rows)
    except SliceGridError as e:
        raise ValueError(f"mosaic: {e}") from None
    val = windows["val"]
    windows["val_full"] = [(min(w[0] for w in val), min(w[1] for w in val),
                            max(w[2] for w in val), max(w[3] for w in val))]
    return windows


def crop_boxes_to_tile(
    boxes: np.ndarray, window: Sequence[int], tiling: ReefTiling = REEF_TILING
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    The boxes (N, 4) XYXY that a tile ``window`` (x0, y0, x1, y1) shows, clipped and in tile
    coordinates, under the tiling's :func:`clip_rule`. Returns kept indices (M,) into
    ``boxes``, their boxes (M, 4) in tile pixels, and which of them were clipped (M,) bool.
    """
    return clip_boxes_to_window(boxes, window, clip_rule(tiling))


def _tiling_info(source: Dict, tiling: ReefTiling) -> Dict:
    return {"source_sha256": source["sha256"], **asdict(tiling)}


def build_reef_splits(archive: str, output_dir: str, source: Dict = REEF_SOURCE,
                      tiling: ReefTiling = REEF_TILING) -> Dict[str, Dict]:
    """
    Tile the archive's mosaic into ``output_dir/{train,val,val_full}`` (PNG tiles + annotations.json,
    category ids 1..K with the source's class names). Logs one WARNING per split counting the
    clipped and dropped boxes. Returns the counts per split.
    """
    image, labels, names = read_reef_source(archive, source)
    if tuple(names) != REEF_CLASS_NAMES:
        raise ReefSourceError(
            f"{archive}: class names {names} are not the expected {list(REEF_CLASS_NAMES)}"
        )
    height, width = image.shape[:2]
    boxes, classes = yolo_to_xyxy(labels, width, height)
    info = _tiling_info(source, tiling)
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    counts = {}
    for split, windows in reef_tile_windows(height, width, tiling).items():
        writer = TiledCocoWriter(os.path.join(output_dir, split), clip_rule(tiling))
        writer.add_image(image, split, boxes, classes + 1, windows)
        counts[split] = c = writer.finish(categories, info)
        logger.warning(
            f"retina_reef_{split}: {c['tiles']} tile(s), {c['boxes']} boxes; "
            f"{c['clipped']} box(es) clipped at a tile edge, {c['dropped']} dropped (less than "
            f"{tiling.min_visible_fraction:.0%} of the box inside the tile)"
        )
    return counts


def _split_is_current(split_dir: str, info: Dict) -> bool:
    json_file = os.path.join(split_dir, "annotations.json")
    if not os.path.isfile(json_file):
        return False
    with open(json_file) as f:
        stored = json.load(f).get("info", {})
    stored.pop("counts", None)
    return stored == info


def ensure_reef_splits(root: str, source: Dict = REEF_SOURCE, tiling: ReefTiling = REEF_TILING,
                       download: Callable[[str, str], str] = pip_download) -> str:
    """
    Build ``root/{train,val,val_full}`` unless all hold this exact tiling of this source;
    returns ``root``. Several processes may call it at once: each builds in a private folder
    and the first to finish moves it into place.
    """
    info = _tiling_info(source, tiling)
    if all(_split_is_current(os.path.join(root, s), info) for s in REEF_SPLITS.values()):
        return root
    archive = fetch_reef_source(os.path.join(root, "source"), source, download)
    tmp_dir = tempfile.mkdtemp(prefix=".build-", dir=root)
    try:
        build_reef_splits(archive, tmp_dir, source, tiling)
        for split in REEF_SPLITS.values():
            target = os.path.join(root, split)
            if _split_is_current(target, info):
                continue  # another process was first
            shutil.rmtree(target, ignore_errors=True)
            os.rename(os.path.join(tmp_dir, split), target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return root


def _load_split(name: str, split: str) -> List[Dict]:
    root = ensure_reef_splits(reef_root())
    split_dir = os.path.join(root, split)
    dicts = load_coco_json(os.path.join(split_dir, "annotations.json"), split_dir, name)
    if not dicts or not any(d["annotations"] for d in dicts):
        raise ReefSourceError(f"{name}: {split_dir} holds no annotated tiles; delete it to rebuild")
    return dicts


def every_third_tile(name: str) -> List[Dict]:
    """``retina_reef_train_third``: every third training tile (32 of 96), the small-data regime."""
    return _load_split(name, "train")[::3]


def register_reef_datasets():
    """
    Register ``retina_reef_train`` / ``retina_reef_val``, and ``retina_reef_train_third`` (every
    third training tile: a small training set from the same area); the tiles are built on
    first load.
    """
    loaders = {name: (lambda name=name, split=split: _load_split(name, split)) for name, split in REEF_SPLITS.items()}
    loaders["retina_reef_train_third"] = lambda: every_third_tile("retina_reef_train_third")
    for name, load in loaders.items():
        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            thing_classes=list(REEF_CLASS_NAMES),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(REEF_CLASS_NAMES))},
            evaluator_type="coco",
        )
