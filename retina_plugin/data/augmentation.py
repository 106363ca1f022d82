"""
Training augmentations beyond detectron2's resize and flip, chosen by name in
``INPUT.EXTRA_AUGMENTATIONS`` and applied after them (see :func:`build_extra_augmentations`):

- "VerticalFlip": flip upside down with probability 1/2 (detectron2's RandomFlip);
- "Rotate90": rotate by 0, 90, 180 or 270 degrees, uniformly (exact: no interpolation);
- "ColorJitter": brightness, contrast and saturation each scaled by a factor in [0.8, 1.2].

Nadir imagery (aerial, underwater surveys, microscopy) has no up or down: flips and quarter
turns give new training images for free.
"""
from typing import List

import numpy as np

from detectron2.data import transforms as T
from fvcore.transforms.transform import Transform

from ..config_domains import EXTRA_AUGMENTATION_NAMES, check_value

__all__ = ["EXTRA_AUGMENTATIONS", "Rotate90Transform", "RandomRotate90", "build_extra_augmentations"]


class Rotate90Transform(Transform):
    """
    Rotate an (H, W, ...) image by ``k`` quarter turns counterclockwise (``np.rot90``); the
    coordinates of boxes and points follow exactly.
    """

    def __init__(self, k: int, height: int, width: int):
        super().__init__()
        self._set_attributes(locals())
        self.k = k % 4

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(img, self.k))

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """coords (N, 2) of x, y in pixels of the input image."""
        height, width = self.height, self.width
        coords = np.asarray(coords, dtype=np.float64).copy()
        for _ in range(self.k):
            # One counterclockwise quarter turn: (x, y) -> (y, W - x); the image becomes W x H.
            coords = np.stack([coords[:, 1], width - coords[:, 0]], axis=1)
            height, width = width, height
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation)

    def inverse(self) -> Transform:
        height, width = (self.width, self.height) if self.k % 2 else (self.height, self.width)
        return Rotate90Transform(4 - self.k, height, width)


class RandomRotate90(T.Augmentation):
    """A uniformly random number (0-3) of quarter turns."""

    def get_transform(self, image):
        k = int(np.random.randint(4))
        if k == 0:
            return T.NoOpTransform()
        return Rotate90Transform(k, image.shape[0], image.shape[1])


def _color_jitter() -> List[T.Augmentation]:
    return [T.RandomBrightness(0.8, 1.2), T.RandomContrast(0.8, 1.2), T.RandomSaturation(0.8, 1.2)]


# name -> () -> augmentations; the names are the config's domain (config_domains).
EXTRA_AUGMENTATIONS = {
    "VerticalFlip": lambda: [T.RandomFlip(horizontal=False, vertical=True)],
    "Rotate90": lambda: [RandomRotate90()],
    "ColorJitter": _color_jitter,
}
assert tuple(EXTRA_AUGMENTATIONS) == EXTRA_AUGMENTATION_NAMES


def build_extra_augmentations(cfg) -> List[T.Augmentation]:
    """The augmentations ``cfg.INPUT.EXTRA_AUGMENTATIONS`` names, in its order."""
    check_value("INPUT.EXTRA_AUGMENTATIONS", cfg.INPUT.EXTRA_AUGMENTATIONS)
    return [a for name in cfg.INPUT.EXTRA_AUGMENTATIONS for a in EXTRA_AUGMENTATIONS[name]()]
