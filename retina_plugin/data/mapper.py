"""
Image reading for training, evaluation and demo.py that names the file when it fails and reads
16-bit images correctly.

detectron2's ``read_image`` lets PIL's ``OSError`` ("image file is truncated", "cannot identify
image file") through without the file name, and converts 16-bit grayscale PNGs with
``convert("RGB")``, which clips every value above 255 (the image comes out almost white).
Checks happen lazily, when an image is read, so registration stays fast on COCO-size data.
"""
import copy
import logging
from typing import List

import numpy as np
import torch
from PIL import Image

from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils.file_io import PathManager

from ..config_domains import check_value
from .augmentation import build_extra_augmentations

__all__ = ["UnreadableImageError", "read_image_checked", "CheckedDatasetMapper"]

# PIL modes of 16-bit (and 32-bit integer) single-channel images.
_WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

logger = logging.getLogger(__name__)


class UnreadableImageError(OSError):
    """
    An image file that cannot be decoded (missing, truncated, corrupt, unsupported mode).
    """


def _to_8bit(image: Image.Image, file_name: str) -> Image.Image:
    """
    16-bit (I;16*) and 32-bit integer (I) grayscale to 8-bit "L", mapping 0..65535 to 0..255
    (value / 257) instead of clipping at 255. Float images ("F") are refused.
    """
    if image.mode == "F":
        raise UnreadableImageError(
            f"{file_name}: floating-point image (PIL mode 'F'); convert it to 8-bit first"
        )
    if image.mode not in _WIDE_INTEGER_MODES:
        return image
    values = np.asarray(image).astype(np.float64)
    if values.min() < 0 or values.max() > 65535:
        raise UnreadableImageError(
            f"{file_name}: {image.mode} image with values in [{values.min()}, {values.max()}], "
            "outside 16 bits; convert it to 8-bit first"
        )
    return Image.fromarray(np.round(values / 257.0).astype(np.uint8), mode="L")


def read_image_checked(file_name: str, format: str = "BGR") -> np.ndarray:
    """
    Like ``detectron2.data.detection_utils.read_image`` (EXIF orientation applied), but every
    failure is an :class:`UnreadableImageError` naming ``file_name``, and 16-bit grayscale
    images are scaled to 8 bits. Returns (H, W, C) uint8 in ``format`` (H, W, 1 for "L").
    """
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()  # decode now, while the file name is known
            image = utils._apply_exif_orientation(image)
            image = _to_8bit(image, file_name)
            return utils.convert_PIL_to_numpy(image, format)
    except UnreadableImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImageError(f"{file_name}: cannot read image ({type(e).__name__}: {e})") from e


class CheckedDatasetMapper(DatasetMapper):
    """
    detectron2's DatasetMapper for detection, reading images with :func:`read_image_checked`.
    In training, ``on_unreadable_image="skip"`` logs a WARNING naming the file and returns
    None, so detectron2's dataset draws another image; "error" (default) stops the run. After
    ``MAX_CONSECUTIVE_UNREADABLE`` unreadable images in a row, "skip" stops too (detectron2
    would draw forever when none can be read), naming them.
    """

    MAX_CONSECUTIVE_UNREADABLE = 20

    @configurable
    def __init__(self, is_train: bool, *, on_unreadable_image: str = "error", **kwargs):
        super().__init__(is_train, **kwargs)
        check_value("DATASETS.ON_UNREADABLE_IMAGE", on_unreadable_image)
        self.on_unreadable_image = on_unreadable_image
        self.num_skipped = 0
        self.consecutive_unreadable: List[str] = []

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["on_unreadable_image"] = cfg.DATASETS.ON_UNREADABLE_IMAGE
        if is_train:
            ret["augmentations"] = list(ret["augmentations"]) + build_extra_augmentations(cfg)
        return ret

    def __call__(self, dataset_dict):
        """
        dataset_dict: one record of detectron2's standard dataset format.
        Returns the record with "image" (C, H, W) uint8 and, in training, "instances";
        None for a skipped unreadable image.
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        try:
            image = read_image_checked(file_name, format=self.image_format)
        except UnreadableImageError as e:
            if self.is_train and self.on_unreadable_image == "skip":
                self.num_skipped += 1
                self.consecutive_unreadable.append(file_name)
                if len(self.consecutive_unreadable) >= self.MAX_CONSECUTIVE_UNREADABLE:
                    raise UnreadableImageError(
                        f"{len(self.consecutive_unreadable)} images in a row could not be read "
                        f"(DATASETS.ON_UNREADABLE_IMAGE skip): "
                        f"{', '.join(sorted(set(self.consecutive_unreadable)))}. The dataset's "
                        f"images are missing or unreadable; last error: {e}"
                    ) from e
                logger.warning(
                    f"Skipping an unreadable image ({self.num_skipped} so far in this data "
                    f"loader process; DATASETS.ON_UNREADABLE_IMAGE skip): {e}"
                )
                return None
            raise UnreadableImageError(
                f"{e}. Fix or remove the file, or set DATASETS.ON_UNREADABLE_IMAGE skip to "
                "train without it"
            ) from e
        self.consecutive_unreadable = []
        utils.check_image_size(dataset_dict, image)

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
