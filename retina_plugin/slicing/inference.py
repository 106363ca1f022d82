"""
Sliced inference: a large image cut into overlapping windows (:func:`slice_windows`), each
resized by the config's test-time resize, as a tile of the training data was, and run in
batches through the model's one inference path (eager fast path, or an engine attached with
``build_engine_model``); the windows' boxes are mapped back to the image and merged
(:func:`~retina_plugin.slicing.merge.merge_window_detections`). Optionally the whole image,
resized, is one more view, for objects larger than a window.

Memory: the image is held once as uint8, or one band of its rows for ``.npy`` (see
:func:`read_large_image`); only a batch of windows is ever resized or turned into tensors.
"""
from dataclasses import dataclass
from typing import Dict, Iterator, List, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances

from ..config import test_resize
from ..data.mapper import UnreadableImageError
from .merge import merge_window_detections
from ..data.windows import Window, slice_windows

__all__ = [
    "SliceSettings",
    "ResizeByFactor",
    "WindowDetections",
    "MappedImage",
    "read_large_image",
    "inner_edge_boxes",
    "detect_in_windows",
    "detect_in_full_image",
    "merge_views",
    "sliced_inference",
    "SlicedInference",
]


@dataclass(frozen=True)
class SliceSettings:
    """The ``TEST.SLICE`` keys (documented in :mod:`retina_plugin.config`)."""

    size: Tuple[int, int] = (512, 512)
    scale: float = 0.0
    overlap: float = 0.25
    merge: str = "NMS"
    merge_iou_threshold: float = 0.5
    partial_threshold: float = 0.9
    edge_margin: float = 2.0
    full_image: bool = False
    batch_size: int = 4
    detections_per_image: int = 1000

    @classmethod
    def from_config(cls, cfg) -> "SliceSettings":
        node = cfg.TEST.SLICE
        return cls(tuple(int(s) for s in node.SIZE), float(node.SCALE), float(node.OVERLAP), node.MERGE,
                   float(node.MERGE_IOU_THRESH), float(node.PARTIAL_IOU_THRESH), float(node.EDGE_MARGIN),
                   bool(node.FULL_IMAGE), int(node.BATCH_SIZE), int(node.DETECTIONS_PER_IMAGE))


@dataclass
class WindowDetections:
    """One window's detections in image pixels: boxes (N, 4), scores (N,), classes (N,), partial (N,) bool."""

    window: Window
    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    partial: torch.Tensor

    def to_record(self) -> Dict:
        return {"window": list(self.window), "boxes": self.boxes.tolist(), "scores": self.scores.tolist(),
                "classes": self.classes.tolist(), "partial": self.partial.tolist()}

    @classmethod
    def from_record(cls, record: Dict) -> "WindowDetections":
        return cls(tuple(record["window"]), torch.tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4),
                   torch.tensor(record["scores"], dtype=torch.float32),
                   torch.tensor(record["classes"], dtype=torch.int64),
                   torch.tensor(record["partial"], dtype=torch.bool))


class MappedImage:
    """
    An (H, W, 3) uint8 BGR ``.npy`` file read one band of rows at a time: ``image[y0:y1, x0:x1]``
    maps the file, copies rows y0..y1 and unmaps it, so memory holds one band (the windows of
    a grid come row by row), not the image. ``np.asarray(image)`` reads it all.
    """

    def __init__(self, file_name: str):
        try:
            mapped = np.load(file_name, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise UnreadableImageError(f"{file_name}: cannot read array ({e})") from e
        if mapped.dtype != np.uint8 or mapped.ndim != 3 or mapped.shape[2] != 3:
            raise UnreadableImageError(f"{file_name}: expected an (H, W, 3) uint8 BGR array, "
                                       f"got {mapped.shape} {mapped.dtype}")
        self.file_name, self.shape, self.offset = file_name, mapped.shape, mapped.offset
        self._band_rows, self._band = None, None

    def __getitem__(self, key):
        rows, columns = key[0], key[1] if len(key) > 1 else slice(None)
        if (rows.start, rows.stop) != self._band_rows:
            mapped = np.memmap(self.file_name, np.uint8, "r", self.offset, self.shape)
            self._band = np.array(mapped[rows])
            del mapped
            self._band_rows = (rows.start, rows.stop)
        return self._band[:, columns]

    def __array__(self, dtype=None, copy=None):
        image = np.array(np.memmap(self.file_name, np.uint8, "r", self.offset, self.shape))
        return image if dtype is None else image.astype(dtype)


def read_large_image(file_name: str):
    """
    (H, W, 3) uint8 BGR: a :class:`MappedImage` for ``.npy`` (read a band of rows at a time),
    else the image decoded whole by OpenCV (EXIF orientation applied).
    """
    if file_name.endswith(".npy"):
        return MappedImage(file_name)
    image = cv2.imread(file_name, cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableImageError(f"{file_name}: cannot read image (OpenCV could not decode it)")
    return image


def inner_edge_boxes(boxes: torch.Tensor, window: Window, image_size: Tuple[int, int], margin: float) -> torch.Tensor:
    """
    (N,) bool: boxes (N, 4) in window pixels within ``margin`` pixels of an edge of ``window``
    that lies inside the ``image_size`` = (H, W) image (a window edge, not the image border).
    """
    x0, y0, x1, y1 = window
    height, width = image_size
    w, h = x1 - x0, y1 - y0
    partial = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    if x0 > 0:
        partial |= boxes[:, 0] <= margin
    if y0 > 0:
        partial |= boxes[:, 1] <= margin
    if x1 < width:
        partial |= boxes[:, 2] >= w - margin
    if y1 < height:
        partial |= boxes[:, 3] >= h - margin
    return partial


class ResizeByFactor(T.Augmentation):
    """Resize by a fixed ``factor`` (both sides rounded, at least 1 px)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def get_transform(self, image: np.ndarray) -> T.Transform:
        height, width = image.shape[:2]
        return T.ResizeTransform(height, width, max(1, round(height * self.factor)), max(1, round(width * self.factor)))


def _model_input(image: np.ndarray, resize: T.Augmentation, flip_channels: bool) -> Tuple[Dict, float]:
    height, width = image.shape[:2]
    image = np.asarray(image)
    if flip_channels:
        image = image[:, :, ::-1]
    resized = resize.get_transform(image).apply_image(np.ascontiguousarray(image))
    tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
    return {"image": tensor, "height": height, "width": width}, resized.shape[0] / height


def _instances_fields(instances: Instances):
    instances = instances.to("cpu")
    return instances.pred_boxes.tensor.float(), instances.scores.float(), instances.pred_classes.long()


def detect_in_windows(model: nn.Module, image: np.ndarray, windows: Sequence[Window], settings: SliceSettings,
                      resize: T.Augmentation, flip_channels: bool = False) -> Iterator[List[WindowDetections]]:
    """
    Run ``windows`` of ``image`` (H, W, C) through ``model`` ``settings.batch_size`` at a time;
    yields each batch's :class:`WindowDetections`, boxes in image pixels. Each window is resized
    by ``settings.scale``, or by ``resize`` (the test resize) when that is 0.
    ``flip_channels``: the image is BGR and the model wants RGB (or the reverse).
    """
    image_size = image.shape[:2]
    if settings.scale > 0:
        resize = ResizeByFactor(settings.scale)
    for start in range(0, len(windows), settings.batch_size):
        batch = list(windows[start:start + settings.batch_size])
        inputs, scales = zip(*(_model_input(image[y0:y1, x0:x1], resize, flip_channels) for x0, y0, x1, y1 in batch))
        with torch.no_grad():
            outputs = model(list(inputs))
        results = []
        for window, scale, output in zip(batch, scales, outputs):
            boxes, scores, classes = _instances_fields(output["instances"])
            # The margin is in the model's pixels, where its localization error lives.
            partial = inner_edge_boxes(boxes, window, image_size, settings.edge_margin / scale)
            offset = torch.tensor([window[0], window[1], window[0], window[1]], dtype=boxes.dtype)
            results.append(WindowDetections(tuple(window), boxes + offset, scores, classes, partial))
        yield results


def detect_in_full_image(model: nn.Module, image: np.ndarray, resize: T.Augmentation,
                         flip_channels: bool = False) -> WindowDetections:
    """The whole image, resized, as one more view (no inner edges: nothing in it is partial)."""
    inputs, _ = _model_input(image, resize, flip_channels)
    with torch.no_grad():
        boxes, scores, classes = _instances_fields(model([inputs])[0]["instances"])
    height, width = image.shape[:2]
    return WindowDetections((0, 0, width, height), boxes, scores, classes, torch.zeros(len(boxes), dtype=torch.bool))


def merge_views(views: Sequence[WindowDetections], image_size: Tuple[int, int], settings: SliceSettings) -> Instances:
    """One :class:`Instances` of ``image_size`` = (H, W) from every view's detections."""
    if views:
        boxes, scores, classes, partial = (torch.cat([getattr(v, f) for v in views])
                                           for f in ("boxes", "scores", "classes", "partial"))
        windows = torch.cat([torch.tensor([v.window], dtype=torch.float32).expand(len(v.boxes), 4) for v in views])
    else:
        boxes, scores, windows = torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 4)
        classes, partial = torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool)
    boxes, scores, classes = merge_window_detections(
        boxes, scores, classes, windows, partial, settings.merge, settings.merge_iou_threshold,
        settings.partial_threshold, settings.detections_per_image)
    return Instances(image_size, pred_boxes=Boxes(boxes), scores=scores, pred_classes=classes)


def sliced_inference(model: nn.Module, image: np.ndarray, settings: SliceSettings, resize: T.Augmentation,
                     flip_channels: bool = False) -> Instances:
    """
    Detections on ``image`` (H, W, C) uint8, in its pixels, from the windows of ``settings``
    (and the whole image when ``settings.full_image``). Raises
    :class:`~retina_plugin.data.windows.SliceGridError` for a window larger than the image.
    """
    height, width = image.shape[:2]
    windows = slice_windows(height, width, settings.size, settings.overlap)
    views = [d for batch in detect_in_windows(model, image, windows, settings, resize, flip_channels) for d in batch]
    if settings.full_image:
        views.append(detect_in_full_image(model, image, resize, flip_channels))
    return merge_views(views, (height, width), settings)


class SlicedInference(nn.Module):
    """
    Sliced inference with the model contract of detectron2 (``inference_on_dataset``,
    COCOEvaluator): called with dataset dicts whose "image" (C, H, W) is the image at its own
    size (no test-time resize: the windows are resized), returns ``[{"instances"}]`` in the
    "height" x "width" frame.
    """

    def __init__(self, model: nn.Module, settings: SliceSettings, resize: T.Augmentation):
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        self.model = model
        self.settings = settings
        self.resize = resize

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> "SlicedInference":
        resize = test_resize(cfg)
        return cls(model, SliceSettings.from_config(cfg), resize)

    def forward(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        outputs = []
        for x in batched_inputs:
            image = x["image"].permute(1, 2, 0).numpy()
            instances = sliced_inference(self.model, image, self.settings, self.resize)
            height, width = x.get("height", image.shape[0]), x.get("width", image.shape[1])
            if (height, width) != image.shape[:2]:
                scale = torch.tensor([width / image.shape[1], height / image.shape[0]] * 2)
                instances = Instances((height, width), pred_boxes=Boxes(instances.pred_boxes.tensor * scale),
                                      scores=instances.scores, pred_classes=instances.pred_classes)
            outputs.append({"instances": instances})
        return outputs
