"""
What tools/predict.py reads: the items of its ``--input`` (image files from folders and globs,
the frames of a video, or a registered dataset), and the torch datasets that decode and resize
them in DataLoader workers, overlapped with the model's computation.
"""
import os
from typing import Dict, Iterator, List, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.utils.file_io import PathManager

from ..data.mapper import UnreadableImageError, read_image_checked
from ..visualization import expand_image_inputs

__all__ = [
    "VIDEO_EXTENSIONS",
    "PredictionSource",
    "resolve_source",
    "input_root",
    "ImageFiles",
    "VideoFrames",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg")


class PredictionSource:
    """
    The items to predict, in a fixed order: ``items[i]`` is a dict with a unique "key", an
    integer "image_id" (the COCO results' id) and "file_name" (and "frame" for a video).
    ``kind`` is "images", "dataset" or "video". For images, ``root`` is the folder the keys
    are relative to (absolute), so that keys do not depend on the working directory.
    """

    def __init__(self, kind: str, items: List[Dict], video: str = "", root: str = ""):
        self.kind = kind
        self.items = items
        self.video = video
        self.root = root

    def __len__(self):
        return len(self.items)


def _video_frames(path: str) -> int:
    video = cv2.VideoCapture(path)
    if not video.isOpened():
        raise FileNotFoundError(f"--input: OpenCV cannot open the video {path!r}")
    count = 0
    # CAP_PROP_FRAME_COUNT is an estimate for some containers: count what decodes.
    while video.grab():
        count += 1
    video.release()
    if count == 0:
        raise ValueError(f"--input: the video {path!r} has no readable frames")
    return count


def resolve_source(inputs: Sequence[str]) -> PredictionSource:
    """
    ``--input``: one registered dataset name, one video file, or image files, folders and
    glob patterns (any number). Raises naming the input that matches nothing.
    """
    inputs = list(inputs)
    if len(inputs) == 1 and inputs[0] in DatasetCatalog.list():
        name = inputs[0]
        records = DatasetCatalog.get(name)
        items = [{"key": f"{name}/{r['image_id']}", "image_id": r["image_id"], "file_name": r["file_name"]}
                 for r in records]
        if len({i["key"] for i in items}) != len(items):
            raise ValueError(f"--input {name}: its image ids are not unique")
        return PredictionSource("dataset", items)
    if len(inputs) == 1 and inputs[0].lower().endswith(VIDEO_EXTENSIONS) and os.path.isfile(inputs[0]):
        path = inputs[0]
        stem = os.path.basename(path)
        items = [{"key": f"{stem}#{frame:06d}", "image_id": frame, "file_name": path, "frame": frame}
                 for frame in range(_video_frames(path))]
        return PredictionSource("video", items, video=path)
    files = expand_image_inputs(inputs)
    root = input_root(inputs, files)
    # Keys: paths relative to the input root, the same from any working directory (resume).
    items = [{"key": os.path.relpath(os.path.abspath(f), root), "image_id": i + 1, "file_name": f}
             for i, f in enumerate(files)]
    if len({i["key"] for i in items}) != len(items):
        seen, doubles = set(), []
        for item in items:
            doubles += [item["key"]] if item["key"] in seen else []
            seen.add(item["key"])
        raise ValueError(f"--input names these files more than once: {sorted(set(doubles))[:10]}")
    return PredictionSource("images", items, root=root)


def input_root(inputs: Sequence[str], files: Sequence[str]) -> str:
    """
    The deepest folder holding every file and every folder given (absolute): a folder given
    stays the root when files are added under it, whatever its subfolders.
    """
    folders = [os.path.abspath(i) for i in inputs if os.path.isdir(i)]
    folders += [os.path.dirname(os.path.abspath(f)) for f in files]
    return os.path.commonpath(folders)


def _prepared(image: np.ndarray, item: Dict, resize: T.ResizeShortestEdge) -> Dict:
    height, width = image.shape[:2]
    resized = resize.get_transform(image).apply_image(image)
    return dict(item, image=torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32")),
                height=height, width=width)


class ImageFiles(Dataset):
    """
    Items with image files, decoded (in ``image_format``) and resized as DefaultPredictor does.
    An unreadable file gives its item with an "error" instead of an "image".
    """

    def __init__(self, items: Sequence[Dict], resize: T.ResizeShortestEdge, image_format: str):
        self.items = list(items)
        self.resize = resize
        self.image_format = image_format

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index: int) -> Dict:
        item = self.items[index]
        try:
            image = read_image_checked(item["file_name"], format=self.image_format)
        except UnreadableImageError as e:
            return dict(item, error=str(e))
        return _prepared(image, item, self.resize)


class VideoFrames(IterableDataset):
    """
    The frames of one video whose indices are in ``frames`` (this rank's share), decoded in
    order, converted from OpenCV's BGR to ``image_format`` and resized.
    """

    def __init__(self, path: str, items: Sequence[Dict], resize: T.ResizeShortestEdge, image_format: str):
        self.path = path
        self.items = {item["frame"]: item for item in items}
        self.resize = resize
        self.image_format = image_format

    def __len__(self):
        return len(self.items)

    def __iter__(self) -> Iterator[Dict]:
        video = _video_at(PathManager.get_local_path(self.path), min(self.items, default=0))
        frame = min(self.items, default=0)
        last = max(self.items) if self.items else -1
        while frame <= last:
            ok, image = video.read()
            if not ok:
                break
            if frame in self.items:
                if self.image_format == "RGB":
                    image = image[:, :, ::-1]
                yield _prepared(image, self.items[frame], self.resize)
            frame += 1
        video.release()
        for missing in sorted(f for f in self.items if f >= frame):
            yield dict(self.items[missing], error=f"{self.path}: frame {missing} could not be decoded")


def _video_at(path: str, frame: int) -> cv2.VideoCapture:
    """
    The video opened so that the next read() decodes ``frame``: seeked, so that a process does
    not decode the frames before its share; decoded from the start where the container does
    not seek to the exact frame.
    """
    video = cv2.VideoCapture(path)
    if frame > 0 and not (video.set(cv2.CAP_PROP_POS_FRAMES, frame)
                          and int(video.get(cv2.CAP_PROP_POS_FRAMES)) == frame):
        video.release()
        video = cv2.VideoCapture(path)
        for _ in range(frame):
            video.grab()
    return video
