"""
``tools/predict.py --slice H W``: each image of this rank's share predicted window by window
(:mod:`retina_plugin.slicing`), its merged detections written as one chunk
(:mod:`retina_plugin.prediction.shards`) as soon as it is done: resumable per image as the
plain runner is. An image with more windows than a batch is also resumable per window: each
finished batch of windows is appended to ``windows/<image id>.jsonl`` (a header line with the
image size and the slice settings, then a line per window), which a resumed run reads back
(a line cut by a kill is dropped, a header of other settings discards the file) and deletes
once the image is recorded.
"""
import json
import logging
import os
import time
from dataclasses import asdict
from typing import Dict, Optional, Set

import numpy as np
import tqdm

from detectron2.utils import comm

from ..config import test_resize
from ..data.mapper import UnreadableImageError
from ..data.windows import SliceGridError, slice_windows
from ..slicing.inference import SliceSettings, WindowDetections, detect_in_full_image, detect_in_windows, merge_views, read_large_image
from .output_folder import prepare_output_folder
from .runner import class_info, draw_image, shard_items
from .shards import ShardWriter, detection_record, finished_keys

__all__ = ["WINDOWS", "predict_sliced_on_rank", "read_window_progress"]

logger = logging.getLogger(__name__)

WINDOWS = "windows"


def _window_progress_path(output_dir: str, item: Dict) -> str:
    return os.path.join(output_dir, WINDOWS, f"{item['image_id']}.jsonl")


def _progress_header(image_size, settings: SliceSettings) -> Dict:
    return {"image_size": list(image_size), "settings": {k: list(v) if isinstance(v, tuple) else v
                                                          for k, v in asdict(settings).items()}}


def read_window_progress(path: str, header: Dict) -> Dict[tuple, WindowDetections]:
    """
    The windows recorded in ``path`` under ``header`` (window -> detections); empty when the
    file is absent or was written for another image size or other settings.
    """
    if not os.path.isfile(path):
        return {}
    done = {}
    with open(path) as f:
        lines = f.readlines()
    if not lines or not lines[0].endswith("\n") or json.loads(lines[0]) != header:
        logger.warning(f"{path}: written with other slice settings or for another image; predicting its windows again")
        return {}
    for line in lines[1:]:
        if not line.endswith("\n"):
            break  # cut by a kill
        detections = WindowDetections.from_record(json.loads(line))
        done[detections.window] = detections
    return done


def _predict_image(model, cfg, item: Dict, settings: SliceSettings, resize, output_dir: str,
                   resume: bool, draw_threshold: Optional[float]) -> Dict:
    """
    One image's merged detections as a record (or an "error" record naming the file); drawn
    (those scoring >= ``draw_threshold``) unless that is None.
    """
    try:
        image = read_large_image(item["file_name"])
        height, width = image.shape[:2]
        windows = slice_windows(height, width, settings.size, settings.overlap)
    except (UnreadableImageError, SliceGridError) as e:
        message = str(e) if str(e).startswith(item["file_name"]) else f"{item['file_name']}: {e}"
        return {k: item[k] for k in ("key", "image_id", "file_name")} | {"error": message}
    flip_channels = cfg.INPUT.FORMAT == "RGB"
    path = _window_progress_path(output_dir, item)
    header = _progress_header((height, width), settings)
    done = read_window_progress(path, header) if resume else {}
    todo = [w for w in windows if tuple(w) not in done]
    keep_progress = len(windows) > settings.batch_size
    if keep_progress:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not done:
            with open(path, "w") as f:
                f.write(json.dumps(header) + "\n")
    views = list(done.values())
    for batch in detect_in_windows(model, image, todo, settings, resize, flip_channels):
        views += batch
        if keep_progress:
            with open(path, "a") as f:
                f.write("".join(json.dumps(d.to_record()) + "\n" for d in batch))
    if settings.full_image:
        views.append(detect_in_full_image(model, image, resize, flip_channels))
    instances = merge_views(views, (height, width), settings)
    record = detection_record(dict(item, height=height, width=width), instances, class_info(cfg)[0])
    if draw_threshold is not None:
        draw_image(cfg, item, np.asarray(image), instances[instances.scores >= draw_threshold], output_dir)
    record["windows"] = len(windows)
    return record


def predict_sliced_on_rank(model, cfg, source, output_dir: str, resume: bool = False,
                           draw: bool = False, draw_threshold: float = 0.0) -> Dict:
    """
    :func:`~retina_plugin.prediction.runner.predict_on_rank` for large images: this rank's share
    of ``source`` (image files or a dataset) predicted window by window with ``cfg.TEST.SLICE``.
    Returns this rank's counts. Collective: every rank calls it.
    """
    if source.kind == "video":
        raise SystemExit("predict.py: --slice predicts large images; for a video's frames, predict them whole")
    settings = SliceSettings.from_config(cfg)
    rank, world_size = comm.get_rank(), comm.get_world_size()
    source.items = prepare_output_folder(output_dir, source, resume)
    done: Set[str] = finished_keys(output_dir) if resume else set()
    share = shard_items(source.items, rank, world_size)
    mine = [item for item in share if item["key"] not in done]
    resize = test_resize(cfg)
    writer = ShardWriter(output_dir, rank)
    counts = {"images": 0, "unreadable": 0, "windows": 0, "skipped_as_done": len(share) - len(mine)}
    start = time.perf_counter()
    for item in tqdm.tqdm(mine, unit="img", desc="predict (sliced)", disable=rank != 0):
        record = _predict_image(model, cfg, item, settings, resize, output_dir, resume,
                                draw_threshold if draw else None)
        if "error" in record:
            logger.warning(f"Skipped an input: {record['error']}")
            counts["unreadable"] += 1
        else:
            counts["images"] += 1
            counts["windows"] += record.pop("windows")
        writer.write([record])
        progress = _window_progress_path(output_dir, item)
        if os.path.exists(progress):
            os.remove(progress)
    counts["seconds"] = time.perf_counter() - start
    return counts
