"""
How tools/predict.py keeps its results safe: each rank writes every finished batch as its own
chunk file (a temporary file renamed into place), then records the chunk in its manifest
(one JSON line appended). A kill loses at most the batches in flight; a chunk written but not
yet in the manifest is deleted on resume, so no image is ever recorded twice. The writes are
not fsynced (a kill of the process keeps what the kernel has; fsyncs cost a tenth of the
throughput): after a power loss, a chunk the manifest names but the disk lost is dropped from
the manifest on resume and its images are predicted again. Rank 0 merges every rank's chunks
into one COCO results json and one JSON line per image.

Layout under the output folder:
    shards/rank<r>-<n>.jsonl     a chunk: one JSON line per image
    shards/manifest-rank<r>.jsonl the chunks of rank r and the keys they hold, a line each
    predictions.jsonl            merged, one line per image, in input order
    coco_results.json            merged COCO detection results (image_id, category_id, bbox, score)
    images.json                  the COCO "images" entries (id, file_name, width, height)
    summary.json                 counts, unreadable inputs, time
"""
import glob
import json
import os
import re
from typing import Dict, Iterable, List, Sequence, Set, Tuple

import torch

from ..utils.files import INCOMPLETE_SUFFIX, atomic_write, atomic_write_json

__all__ = ["ShardWriter", "finished_keys", "remove_orphan_chunks", "merge_shards", "detection_record"]

SHARDS = "shards"
_CHUNK = re.compile(r"rank(\d+)-(\d+)\.jsonl$")


def _write_json_lines(path: str, records: Iterable[Dict], durable: bool = True) -> None:
    """One JSON line per record, written atomically."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(path, lambda f: f.write(text), mode="w", durable=durable)


def _chunk_is_whole(folder: str, chunk: Dict) -> bool:
    """Whether a chunk file holds the records of exactly the keys its manifest lists."""
    try:
        with open(os.path.join(folder, chunk["file"])) as f:
            keys = [json.loads(line)["key"] for line in f]
    except (OSError, ValueError, KeyError):
        return False
    return keys == chunk["keys"]


def _read_manifest(path: str) -> Tuple[List[Dict], bool]:
    """
    A manifest's chunks ({"file", "keys"}, one JSON line each, appended as chunks finish) and
    whether it is whole: a line cut short by a kill ends the readable part.
    """
    chunks = []
    with open(path) as f:
        for line in f:
            try:
                chunk = json.loads(line)
            except ValueError:
                return chunks, False
            if not line.endswith("\n"):
                return chunks, False
            chunks.append(chunk)
    return chunks, True


def _manifest_paths(output_dir: str) -> List[str]:
    return sorted(glob.glob(os.path.join(output_dir, SHARDS, "manifest-rank*.jsonl")))


def _all_chunks(output_dir: str) -> List[Dict]:
    return [chunk for path in _manifest_paths(output_dir) for chunk in _read_manifest(path)[0]]


def finished_keys(output_dir: str) -> Set[str]:
    """The keys of every image any rank has recorded (in a manifest) under ``output_dir``."""
    return {key for chunk in _all_chunks(output_dir) for key in chunk["keys"]}


def remove_orphan_chunks(output_dir: str) -> List[str]:
    """
    Drop from the manifests the chunks that are missing or cut short (a power loss) and a
    manifest line cut short, then delete chunk files no manifest names (written just before a
    kill) and stray temporary files; returns what was dropped or deleted. Call it before any
    rank starts writing.
    """
    folder = os.path.join(output_dir, SHARDS)
    removed = []
    for path in _manifest_paths(output_dir):
        chunks, manifest_whole = _read_manifest(path)
        whole = [c for c in chunks if _chunk_is_whole(folder, c)]
        if len(whole) != len(chunks) or not manifest_whole:
            removed += [c["file"] for c in chunks if c not in whole]
            _write_json_lines(path, whole)
    named = {chunk["file"] for chunk in _all_chunks(output_dir)}
    for path in glob.glob(os.path.join(folder, "*")):
        name = os.path.basename(path)
        if name.endswith(INCOMPLETE_SUFFIX) or (_CHUNK.match(name) and name not in named):
            os.remove(path)
            if name not in removed:
                removed.append(name)
    return removed


class ShardWriter:
    """
    One rank's chunks and manifest. The manifest is appended to, one line per chunk, so that
    recording a chunk costs the same at the millionth image as at the first.
    """

    def __init__(self, output_dir: str, rank: int):
        self.folder = os.path.join(output_dir, SHARDS)
        os.makedirs(self.folder, exist_ok=True)
        self.rank = rank
        self.manifest_path = os.path.join(self.folder, f"manifest-rank{rank}.jsonl")
        chunks = _read_manifest(self.manifest_path)[0] if os.path.isfile(self.manifest_path) else []
        self.next_index = 1 + max((int(_CHUNK.match(c["file"]).group(2)) for c in chunks), default=-1)

    def write(self, records: Sequence[Dict]) -> str:
        """Write one chunk of per-image records (each with a "key"), then record it."""
        if not records:
            return ""
        name = f"rank{self.rank}-{self.next_index:06d}.jsonl"
        _write_json_lines(os.path.join(self.folder, name), records, durable=False)
        # One write of one line; a kill inside it leaves a line without its newline, which
        # readers ignore and remove_orphan_chunks cuts off (with the chunk it named).
        with open(self.manifest_path, "a") as f:
            f.write(json.dumps({"file": name, "keys": [r["key"] for r in records]}) + "\n")
        self.next_index += 1
        return name


def _chunk_records(output_dir: str) -> Iterable[Dict]:
    folder = os.path.join(output_dir, SHARDS)
    for chunk in _all_chunks(output_dir):
        with open(os.path.join(folder, chunk["file"])) as f:
            for line in f:
                yield json.loads(line)


def _rounded(values: torch.Tensor, decimals: int) -> List:
    scale = 10.0**decimals
    return (values * scale).round().div(scale).tolist()


def detection_record(item: Dict, instances, class_names: Sequence[str]) -> Dict:
    """
    One image's JSON record: its key, id, file (and frame), original size, and detections as
    XYXY and COCO XYWH boxes, scores, class ids and class names.
    """
    # Rounded as tensors (in float64, so that 12.34 prints as 12.34): per-value round() took a
    # tenth of the batch predictor's time.
    boxes = instances.pred_boxes.tensor.double()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
    classes = instances.pred_classes.tolist()
    record = {k: item[k] for k in ("key", "image_id", "file_name", "frame") if k in item}
    record.update(
        height=item["height"], width=item["width"],
        boxes_xyxy=_rounded(boxes, 2),
        boxes_xywh=_rounded(xywh, 2),
        scores=_rounded(instances.scores.double(), 5),
        classes=classes,
        class_names=[class_names[c] if c < len(class_names) else str(c) for c in classes],
    )
    return record


def merge_shards(output_dir: str, items: Sequence[Dict], category_ids: Sequence[int]) -> Tuple[int, List[Dict]]:
    """
    Merge every recorded chunk into predictions.jsonl, coco_results.json and images.json, in
    the order of ``items``; each key once. ``category_ids[c]``: the COCO category id of
    class c. Returns (images with predictions, records of unreadable inputs).
    """
    by_key: Dict[str, Dict] = {}
    for record in _chunk_records(output_dir):
        by_key.setdefault(record["key"], record)
    ordered = [by_key[item["key"]] for item in items if item["key"] in by_key]
    predicted = [r for r in ordered if "error" not in r]
    unreadable = [r for r in ordered if "error" in r]
    _write_json_lines(os.path.join(output_dir, "predictions.jsonl"), ordered)
    results = [
        {"image_id": r["image_id"], "category_id": category_ids[c], "bbox": box, "score": score}
        for r in predicted for box, score, c in zip(r["boxes_xywh"], r["scores"], r["classes"])
    ]
    atomic_write_json(os.path.join(output_dir, "coco_results.json"), results)
    images = [{k: r[k] for k in ("image_id", "file_name", "frame", "width", "height") if k in r} for r in predicted]
    atomic_write_json(os.path.join(output_dir, "images.json"), [dict(i, id=i.pop("image_id")) for i in images])
    return len(predicted), unreadable
