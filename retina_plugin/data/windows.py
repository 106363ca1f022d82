"""
Windows over a large image, and boxes seen through a window: the one tiler of the project,
shared by sliced prediction (:mod:`retina_plugin.slicing.inference`), dataset slicing
(:mod:`retina_plugin.data.tiled_dataset`) and the reef builder.

A window is ``(x0, y0, x1, y1)`` in image pixels, end-exclusive. Windows of one grid all have
the requested size (the last one of a row or column is shifted to end at the image border),
so a batch of them needs no padding.
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = [
    "Window",
    "ClipRule",
    "SliceGridError",
    "window_starts",
    "window_stride",
    "slice_windows",
    "area_split_windows",
    "boxes_overlapping",
    "clip_boxes_to_window",
]

Window = Tuple[int, int, int, int]


class SliceGridError(ValueError):
    """A window size or overlap that cannot cut the image; the message names both."""


@dataclass(frozen=True)
class ClipRule:
    """
    When a box cut by a window edge still counts as an object of that window.
    A box is kept if at least ``min_visible_fraction`` of its area is inside, or if its visible
    part spans ``min_window_span`` of the window in both directions (an object larger than the
    window); never if a visible side is shorter than ``min_side`` pixels.
    """

    min_visible_fraction: float = 0.4
    min_window_span: float = 0.5
    min_side: float = 4.0


def window_starts(length: int, window: int, stride: int) -> List[int]:
    """
    Starts of windows of size ``window`` every ``stride`` pixels covering [0, length); the last
    one ends at ``length``. One window at 0 when ``length <= window``.
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def window_stride(size: int, overlap: float) -> int:
    """Pixels between the starts of neighbouring windows of ``size`` overlapping by ``overlap``."""
    return max(1, int(round(size * (1.0 - overlap))))


def slice_windows(height: int, width: int, size: Sequence[int], overlap: float) -> List[Window]:
    """
    The windows of ``size`` = (h, w) pixels, neighbours overlapping by the fraction ``overlap``
    of a window (rounded to whole pixels), that cover every pixel of a ``height`` x ``width``
    image, row by row. Raises :class:`SliceGridError` when a window is larger than the image
    (predict it whole instead) or ``overlap`` is outside [0, 1).
    """
    window_height, window_width = (int(s) for s in size)
    if not 0 <= overlap < 1:
        raise SliceGridError(f"overlap {overlap} is outside [0, 1): it is the fraction of a window "
                             "that its neighbour also covers")
    if window_height < 1 or window_width < 1:
        raise SliceGridError(f"window size {window_height} x {window_width} must be positive")
    if window_height > height or window_width > width:
        raise SliceGridError(
            f"a {window_height} x {window_width} window (h x w) is larger than the {height} x {width} "
            "image: predict it whole, or choose a smaller window"
        )
    return [(x, y, x + window_width, y + window_height)
            for y in window_starts(height, window_height, window_stride(window_height, overlap))
            for x in window_starts(width, window_width, window_stride(window_width, overlap))]


def area_split_windows(height: int, width: int, size: int, train_stride: int,
                       val_rows: int) -> Dict[str, List[Window]]:
    """
    Square windows of ``size`` split by area, so that no validation window overlaps a training
    window. "val": ``val_rows`` rows of non-overlapping windows at the bottom (columns
    left-aligned; a strip narrower than a window at the right is unused); "train": windows every
    ``train_stride`` pixels over the area above.
    """
    val_top = height - val_rows * size
    if val_rows < 1 or val_top < size or width < size:
        raise SliceGridError(
            f"A {width} x {height} image is too small for {val_rows} validation row(s) and one "
            f"training row of {size}-px windows"
        )
    val = [(x, y, x + size, y + size)
           for y in range(val_top, height - size + 1, size)
           for x in range(0, width - size + 1, size)]
    train = [(x, y, x + size, y + size)
             for y in window_starts(val_top, size, train_stride)
             for x in window_starts(width, size, train_stride)]
    return {"train": train, "val": val}


def boxes_overlapping(boxes: np.ndarray, window: Sequence[int]) -> np.ndarray:
    """(N,) bool: which boxes (N, 4) XYXY share some area with ``window``."""
    x0, y0, x1, y1 = window
    return (boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0)


def clip_boxes_to_window(
    boxes: np.ndarray, window: Sequence[int], rule: ClipRule = ClipRule()
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    The boxes (N, 4) XYXY that ``window`` shows under ``rule``, clipped and in window
    coordinates. Returns kept indices (M,) into ``boxes``, their boxes (M, 4) in window pixels,
    and which of them were clipped (M,) bool; the others are dropped.
    """
    x0, y0, x1, y1 = window
    clipped = np.stack([np.clip(boxes[:, 0], x0, x1), np.clip(boxes[:, 1], y0, y1),
                        np.clip(boxes[:, 2], x0, x1), np.clip(boxes[:, 3], y0, y1)], axis=1)
    visible_w = clipped[:, 2] - clipped[:, 0]
    visible_h = clipped[:, 3] - clipped[:, 1]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    visible_fraction = visible_w * visible_h / np.maximum(area, 1e-9)
    spans_window = ((visible_w >= rule.min_window_span * (x1 - x0))
                    & (visible_h >= rule.min_window_span * (y1 - y0)))
    keep = ((visible_fraction >= rule.min_visible_fraction) | spans_window) & (
        np.minimum(visible_w, visible_h) >= rule.min_side
    )
    kept = np.nonzero(keep)[0]
    was_clipped = np.any(clipped[kept] != boxes[kept], axis=1)
    return kept, clipped[kept] - np.array([x0, y0, x0, y0], dtype=clipped.dtype), was_clipped
