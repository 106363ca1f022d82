"""
Tiled COCO datasets: windows cut out of large images, written as PNG tiles with a COCO json
whose boxes are the source boxes clipped to each tile (:class:`~retina_plugin.data.windows.ClipRule`).
The reef builder (:mod:`retina_plugin.data.reef`) and ``tools/slice_dataset.py``
(:func:`slice_registered_dataset`, any registered dataset) both write through
:class:`TiledCocoWriter`.
"""
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .windows import ClipRule, SliceGridError, area_split_windows, boxes_overlapping, clip_boxes_to_window, slice_windows, window_stride

__all__ = ["TiledCocoWriter", "dataset_categories", "slice_registered_dataset"]

logger = logging.getLogger(__name__)


class TiledCocoWriter:
    """
    Collects the tiles of one split: :meth:`add_image` cuts windows out of an image and writes
    them into ``output_dir``; :meth:`finish` writes ``annotations.json`` and returns the counts
    (tiles, boxes kept, clipped, dropped: a box that overlaps a tile but fails the clip rule).
    """

    def __init__(self, output_dir: str, rule: ClipRule = ClipRule()):
        self.output_dir = output_dir
        self.rule = rule
        self.images: List[Dict] = []
        self.annotations: List[Dict] = []
        self.counts = {"tiles": 0, "boxes": 0, "clipped": 0, "dropped": 0}
        os.makedirs(output_dir, exist_ok=True)

    def add_image(self, image: np.ndarray, name: str, boxes: np.ndarray, category_ids: np.ndarray,
                  windows: Sequence[Sequence[int]], source: Optional[Dict] = None) -> None:
        """
        Args:
            image: (H, W, C) uint8, as cv2 writes it.
            name: file name prefix of its tiles: ``{name}_x{x0:04d}_y{y0:04d}.png``.
            boxes: (N, 4) XYXY in the image's pixels; category_ids: (N,) the json's ids.
            windows: (x0, y0, x1, y1) per tile.
            source: extra fields for each tile's json entry (e.g. the source file name).
        """
        for window in windows:
            x0, y0, x1, y1 = (int(v) for v in window)
            file_name = f"{name}_x{x0:04d}_y{y0:04d}.png"
            path = os.path.join(self.output_dir, file_name)
            if not cv2.imwrite(path, image[y0:y1, x0:x1]):
                raise OSError(f"Could not write {path}")
            image_id = len(self.images) + 1
            self.images.append({"id": image_id, "file_name": file_name, "width": x1 - x0,
                                "height": y1 - y0, "window": [x0, y0, x1, y1], **(source or {})})
            overlapping = np.nonzero(boxes_overlapping(boxes, (x0, y0, x1, y1)))[0]
            kept, tile_boxes, was_clipped = clip_boxes_to_window(boxes[overlapping], (x0, y0, x1, y1), self.rule)
            self.counts["dropped"] += len(overlapping) - len(kept)
            self.counts["clipped"] += int(was_clipped.sum())
            for source_index, (bx0, by0, bx1, by1) in zip(overlapping[kept], tile_boxes):
                self.annotations.append({
                    "id": len(self.annotations) + 1, "image_id": image_id,
                    "category_id": int(category_ids[source_index]),
                    "bbox": [float(bx0), float(by0), float(bx1 - bx0), float(by1 - by0)],
                    "area": float((bx1 - bx0) * (by1 - by0)), "iscrowd": 0,
                    "source_box": int(source_index),
                })
        self.counts["tiles"] = len(self.images)

    def finish(self, categories: List[Dict], info: Dict) -> Dict[str, int]:
        """Write ``annotations.json`` (``info`` gains the counts); returns the counts."""
        self.counts["boxes"] = len(self.annotations)
        with open(os.path.join(self.output_dir, "annotations.json"), "w") as f:
            json.dump({"info": dict(info, counts=self.counts), "images": self.images,
                       "annotations": self.annotations, "categories": categories}, f)
        return dict(self.counts)


def dataset_categories(metadata) -> List[Dict]:
    """COCO categories of a registered dataset: its dataset ids (or 1..K) and class names."""
    names = list(metadata.get("thing_classes", []))
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None)
    reverse = {v: k for k, v in mapping.items()} if mapping else {i: i + 1 for i in range(len(names))}
    return [{"id": int(reverse[i]), "name": n} for i, n in enumerate(names)]


def _boxes_of(record: Dict, categories: List[Dict]):
    annotations = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations],
                     dtype=np.float64).reshape(-1, 4)
    category_ids = np.array([categories[a["category_id"]]["id"] for a in annotations], dtype=np.int64)
    return boxes, category_ids


def slice_registered_dataset(dataset_name: str, output_dir: str, size: int, overlap: float,
                             rule: ClipRule = ClipRule(), val_rows: int = 0) -> Dict[str, Dict[str, int]]:
    """
    Tile every image of a registered dataset into ``output_dir`` (square windows of ``size``
    px overlapping by ``overlap``; an image smaller than a window is one tile of its own size).
    Without ``val_rows``: one split, ``output_dir/annotations.json``. With it: split by area,
    ``output_dir/{train,val}/``; the bottom ``val_rows`` rows of non-overlapping windows of each
    image are "val" and the windows above it are "train", so no val window overlaps a train
    window. Returns the counts per split ("all", or "train" and "val").
    """
    records = DatasetCatalog.get(dataset_name)
    categories = dataset_categories(MetadataCatalog.get(dataset_name))
    splits = ("train", "val") if val_rows else ("all",)
    writers = {s: TiledCocoWriter(output_dir if s == "all" else os.path.join(output_dir, s), rule) for s in splits}
    stride = window_stride(size, overlap)
    for index, record in enumerate(records):
        image = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"{dataset_name}: cannot read image {record['file_name']}")
        height, width = image.shape[:2]
        if val_rows:
            try:
                windows = area_split_windows(height, width, size, stride, val_rows)
            except SliceGridError as e:
                raise SliceGridError(f"{record['file_name']}: {e}") from None
        else:
            windows = {"all": slice_windows(height, width, (min(size, height), min(size, width)), overlap)}
        boxes, category_ids = _boxes_of(record, categories)
        stem = f"{index:06d}_{os.path.splitext(os.path.basename(record['file_name']))[0]}"
        for split, split_windows in windows.items():
            writers[split].add_image(image, stem, boxes, category_ids, split_windows,
                                     {"source_file": record["file_name"]})
    info = {"source_dataset": dataset_name, "size": size, "overlap": overlap, "val_rows": val_rows,
            "min_visible_fraction": rule.min_visible_fraction, "min_window_span": rule.min_window_span,
            "min_side": rule.min_side}
    counts = {split: writer.finish(categories, info) for split, writer in writers.items()}
    for split, c in counts.items():
        logger.info(f"{dataset_name} -> {split}: {c['tiles']} tiles, {c['boxes']} boxes, "
                    f"{c['clipped']} clipped, {c['dropped']} dropped")
    return counts


def main(argv=None) -> int:
    """``tools/slice_dataset.py``: tile a registered dataset into a COCO dataset."""
    import argparse

    from .register import register_coco_json

    parser = argparse.ArgumentParser(
        description="Tile a registered detection dataset (COCO json, VOC, built-in) into windows: PNG tiles "
                    "and a COCO json whose boxes are clipped to each tile")
    parser.add_argument("--dataset", required=True, help="a registered dataset name")
    parser.add_argument("--register-coco", nargs=3, action="append", metavar=("NAME", "JSON_FILE", "IMAGE_ROOT"),
                        help="register a COCO json dataset first (repeatable), as train_net.py does")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--size", type=int, default=512, help="window side in pixels (default 512)")
    parser.add_argument("--overlap", type=float, default=0.25, help="fraction of a window its neighbour also covers")
    parser.add_argument("--min-visible", type=float, default=ClipRule.min_visible_fraction,
                        help="keep a cut box when at least this fraction of it is inside the tile")
    parser.add_argument("--min-side", type=float, default=ClipRule.min_side,
                        help="never keep a cut box whose visible side is shorter than this (pixels)")
    parser.add_argument("--val-rows", type=int, default=0,
                        help="split by area: the bottom N rows of non-overlapping windows of each image are "
                             "OUTPUT/val, the windows above them OUTPUT/train (default: no split)")
    args = parser.parse_args(argv)
    if not (args.size >= 1 and 0 <= args.overlap < 1 and 0 <= args.min_visible <= 1 and args.val_rows >= 0):
        parser.exit(2, "slice_dataset.py: error: need --size >= 1, --overlap in [0, 1), --min-visible in [0, 1], "
                       "--val-rows >= 0\n")
    for name, json_file, image_root in args.register_coco or ():
        register_coco_json(name, json_file, image_root, source="--register-coco")
    if args.dataset not in DatasetCatalog.list():
        parser.exit(2, f"slice_dataset.py: error: dataset {args.dataset!r} is not registered; give "
                       "--register-coco NAME JSON_FILE IMAGE_ROOT\n")
    rule = ClipRule(args.min_visible, ClipRule.min_window_span, args.min_side)
    try:
        counts = slice_registered_dataset(args.dataset, args.output, args.size, args.overlap, rule, args.val_rows)
    except (SliceGridError, OSError) as e:
        parser.exit(2, f"slice_dataset.py: error: {e}\n")
    for split, c in counts.items():
        folder = args.output if split == "all" else os.path.join(args.output, split)
        print(f"{split}: {c['tiles']} tiles, {c['boxes']} boxes ({c['clipped']} clipped at a tile edge, "
              f"{c['dropped']} dropped) in {folder}\n  train_net.py --register-coco "
              f"{args.dataset}_tiles{'' if split == 'all' else '_' + split} {folder}/annotations.json {folder}")
    return 0
