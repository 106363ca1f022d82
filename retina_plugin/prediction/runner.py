"""
Prediction over a collection, in each process that detectron2's ``launch`` starts: this
rank's share of the items, decoded and resized in DataLoader workers, run through the model
(eager fast path or an engine) in batches, each finished batch written as a chunk (see
:mod:`retina_plugin.prediction.shards`); rank 0 merges and summarizes.

Images are batched only with images of the same resized size: a batch pads its images to a
common size, and the padding would change the features near the right and bottom edges of
the smaller ones. So every image gets DefaultPredictor's detections (as sets), whatever the
batch size. Images of other shapes wait (:class:`ShapeBatches`), never more than a batch of
them, so memory does not grow with the collection or its mix of shapes.
"""
import logging
import os
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import torch
import tqdm
from torch.utils.data import DataLoader

from detectron2.data import MetadataCatalog
from detectron2.utils import comm

from ..config import test_resize
from ..data.mapper import read_image_checked
from ..visualization import draw_detections
from .output_folder import prepare_output_folder
from .shards import ShardWriter, detection_record, finished_keys, merge_shards
from .sources import ImageFiles, PredictionSource, VideoFrames

__all__ = ["shard_items", "class_info", "drawn_path", "draw_image", "predict_on_rank", "ShapeBatches", "finish", "draw_video"]

logger = logging.getLogger(__name__)


def shard_items(items: Sequence[Dict], rank: int, world_size: int) -> List[Dict]:
    """Rank ``rank``'s contiguous share of ``items`` (sizes differ by at most one)."""
    per_rank, extra = divmod(len(items), world_size)
    start = rank * per_rank + min(rank, extra)
    return list(items[start: start + per_rank + (1 if rank < extra else 0)])


def class_info(cfg):
    """(class names, COCO category id of each class) for the config's test (or train) dataset."""
    names = cfg.DATASETS.TEST or cfg.DATASETS.TRAIN
    metadata = MetadataCatalog.get(names[0]) if names else None
    classes = list(metadata.get("thing_classes", [])) if metadata else []
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    classes = classes if len(classes) == num_classes else [str(i) for i in range(num_classes)]
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None) if metadata else None
    if mapping and len(mapping) == num_classes:
        reverse = {v: k for k, v in mapping.items()}
        category_ids = [reverse[i] for i in range(num_classes)]
    else:
        category_ids = list(range(1, num_classes + 1))
    return classes, category_ids


def drawn_path(output_dir: str, item: Dict) -> str:
    """Where ``--draw`` writes an image's drawing."""
    stem = os.path.splitext(os.path.basename(item["file_name"]))[0]
    return os.path.join(output_dir, "drawn", f"{stem}_{item['image_id']}.png")


def predict_on_rank(model, cfg, source: PredictionSource, output_dir: str, batch_size: int = 8,
                    num_workers: int = 2, resume: bool = False, draw: bool = False,
                    draw_threshold: float = 0.0) -> Dict:
    """
    Predict this rank's share of ``source`` into ``output_dir``; returns this rank's counts.
    Collective: every rank calls it. Without ``resume`` the output folder must hold no earlier
    results; with it, the inputs are checked against the recorded list (see
    :mod:`retina_plugin.prediction.output_folder`), whose ids ``source.items`` then takes.
    At most ``batch_size`` decoded images wait in memory, whatever their shapes. ``draw``: also
    draw each image's detections scoring >= ``draw_threshold``.
    """
    rank, world_size = comm.get_rank(), comm.get_world_size()
    source.items = prepare_output_folder(output_dir, source, resume)
    done = finished_keys(output_dir) if resume else set()
    share = shard_items(source.items, rank, world_size)
    mine = [item for item in share if item["key"] not in done]
    resize = test_resize(cfg)
    if source.kind == "video":
        dataset = VideoFrames(source.video, mine, resize, cfg.INPUT.FORMAT)
        num_workers = min(num_workers, 1)  # one reader: frames come in order
    else:
        dataset = ImageFiles(mine, resize, cfg.INPUT.FORMAT)
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers,
                        prefetch_factor=2 * batch_size if num_workers else None)
    class_names, _ = class_info(cfg)
    writer = ShardWriter(output_dir, rank)
    waiting = ShapeBatches(batch_size)
    counts = {"images": 0, "unreadable": 0, "skipped_as_done": len(share) - len(mine)}
    bar = tqdm.tqdm(total=len(mine), unit="img", desc="predict", disable=rank != 0, smoothing=0.1)
    start = time.perf_counter()

    def run(batches: List[List[Dict]], unreadable: List[Dict]) -> None:
        records = list(unreadable)
        for batch in batches:
            with torch.no_grad():
                outputs = model(batch)
            for item, output in zip(batch, outputs):
                instances = output["instances"].to("cpu")
                records.append(detection_record(item, instances, class_names))
                if draw and source.kind != "video":
                    _draw(cfg, item, instances[instances.scores >= draw_threshold], output_dir)
            counts["images"] += len(batch)
        # One chunk for what was flushed together: results reach disk every batch_size inputs.
        writer.write(records)
        bar.update(len(records))

    for item in loader:
        if "error" in item:
            logger.warning(f"Skipped an unreadable input: {item['error']}")
            counts["unreadable"] += 1
        ready = waiting.add(item)
        if ready is not None:
            run(*ready)
    run(*waiting.flush())
    bar.close()
    counts["seconds"] = time.perf_counter() - start
    return counts


class ShapeBatches:
    """
    Images wait here until they make a batch: a batch holds images of one resized shape only
    (padding would change the detections near the edges of the smaller ones). Memory stays
    bounded: once ``batch_size`` inputs wait, whatever their shapes, all of them are handed out,
    each shape as its own (smaller) batch. Unreadable inputs wait and go out with them.
    """

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.groups: "OrderedDict[tuple, List[Dict]]" = OrderedDict()
        self.unreadable: List[Dict] = []

    def __len__(self) -> int:
        return sum(len(group) for group in self.groups.values()) + len(self.unreadable)

    def add(self, item: Dict) -> Optional[Tuple[List[List[Dict]], List[Dict]]]:
        """Add one decoded item (or an unreadable one); returns what to run now, if anything."""
        if "error" in item:
            self.unreadable.append({k: item[k] for k in ("key", "image_id", "file_name", "error")})
        else:
            shape = tuple(item["image"].shape)
            self.groups.setdefault(shape, []).append(item)
            if len(self.groups[shape]) == self.batch_size:
                unreadable, self.unreadable = self.unreadable, []
                return [self.groups.pop(shape)], unreadable
        return self.flush() if len(self) >= self.batch_size else None

    def flush(self) -> Tuple[List[List[Dict]], List[Dict]]:
        """Everything waiting: (batches, one per shape, in order of arrival; unreadable records)."""
        batches = list(self.groups.values())
        self.groups.clear()
        unreadable, self.unreadable = self.unreadable, []
        return batches, unreadable


def _draw(cfg, item: Dict, instances, output_dir: str) -> None:
    draw_image(cfg, item, read_image_checked(item["file_name"], format="BGR"), instances, output_dir)


def draw_image(cfg, item: Dict, image, instances, output_dir: str) -> None:
    """Write ``instances`` drawn over ``image`` (H, W, 3) BGR to :func:`drawn_path`."""
    path = drawn_path(output_dir, item)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, draw_detections(image, instances, MetadataCatalog.get((cfg.DATASETS.TEST or ["__unused"])[0])))


def draw_video(output_dir: str, source: PredictionSource, metadata, as_frames: bool = False) -> str:
    """Draw the merged predictions over the video's frames: an mp4, or PNG frames."""
    import json

    with open(os.path.join(output_dir, "predictions.jsonl")) as f:
        by_frame = {r["frame"]: r for r in map(json.loads, f) if "error" not in r}
    from detectron2.structures import Boxes, Instances

    video = cv2.VideoCapture(source.video)
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    stem = os.path.splitext(os.path.basename(source.video))[0]
    folder = os.path.join(output_dir, "drawn")
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, stem if as_frames else f"{stem}.mp4")
    writer, frame = None, 0
    while True:
        ok, image = video.read()
        if not ok:
            break
        record = by_frame.get(frame)
        instances = Instances(image.shape[:2])
        if record:
            instances.pred_boxes = Boxes(torch.tensor(record["boxes_xyxy"], dtype=torch.float32).reshape(-1, 4))
            instances.scores = torch.tensor(record["scores"], dtype=torch.float32)
            instances.pred_classes = torch.tensor(record["classes"], dtype=torch.int64)
        else:
            instances.pred_boxes = Boxes(torch.zeros(0, 4))
            instances.scores = torch.zeros(0)
            instances.pred_classes = torch.zeros(0, dtype=torch.int64)
        drawn = draw_detections(image, instances, metadata)
        if as_frames:
            os.makedirs(target, exist_ok=True)
            cv2.imwrite(os.path.join(target, f"{frame:06d}.png"), drawn)
        else:
            if writer is None:
                writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*"mp4v"), fps, (drawn.shape[1], drawn.shape[0]))
            writer.write(drawn)
        frame += 1
    video.release()
    if writer is not None:
        writer.release()
    return target


def finish(cfg, source: PredictionSource, output_dir: str, counts: Sequence[Dict], wall_seconds: float,
           draw: bool = False, video_as_frames: bool = False) -> Dict:
    """Rank 0, after every rank is done: merge, write summary.json, draw the video."""
    import json

    from ..utils.files import atomic_write

    _, category_ids = class_info(cfg)
    predicted, unreadable = merge_shards(output_dir, source.items, category_ids)
    summary = {
        "inputs": len(source.items),
        "predicted": predicted,
        "unreadable": [{"file_name": r["file_name"], "error": r["error"]} for r in unreadable],
        "this_run": {"images": sum(c["images"] for c in counts), "seconds": wall_seconds,
                     "images_per_second": sum(c["images"] for c in counts) / max(wall_seconds, 1e-9),
                     "ranks": len(counts), "skipped_as_done": sum(c["skipped_as_done"] for c in counts)},
    }
    atomic_write(os.path.join(output_dir, "summary.json"), lambda f: json.dump(summary, f, indent=1), mode="w")
    if draw and source.kind == "video":
        summary["drawn"] = draw_video(output_dir, source, MetadataCatalog.get((cfg.DATASETS.TEST or ["__unused"])[0]),
                                      video_as_frames)
    return summary
