"""
INPUT.EXTRA_AUGMENTATIONS: quarter turns move boxes exactly with the pixels, the names are
checked, and the training mapper applies them after detectron2's resize and flip.
"""
import numpy as np
import pytest

from detectron2.data import transforms as T

from retina_plugin.config_checks import check_config
from retina_plugin.data.augmentation import Rotate90Transform, build_extra_augmentations
from retina_plugin.data.mapper import CheckedDatasetMapper

from .conftest import load_cfg


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_quarter_turn_moves_boxes_with_the_pixels(k):
    image = np.zeros((40, 60, 3), np.uint8)
    image[5:15, 30:50] = 255  # the box x 30..50, y 5..15
    transform = Rotate90Transform(k, 40, 60)
    turned = transform.apply_image(image)
    ys, xs = np.nonzero(turned[:, :, 0])
    box = transform.apply_box(np.array([[30.0, 5.0, 50.0, 15.0]]))[0]
    np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert turned.shape[:2] == ((40, 60) if k % 2 == 0 else (60, 40))
    np.testing.assert_allclose(transform.inverse().apply_box(box[None])[0], [30, 5, 50, 15])


def test_names_are_checked():
    cfg = load_cfg(opts=["INPUT.EXTRA_AUGMENTATIONS", "['Rotate90', 'Mosaic']"])
    with pytest.raises(ValueError, match=r"INPUT.EXTRA_AUGMENTATIONS = \['Rotate90', 'Mosaic'\]: expected"):
        check_config(cfg)
    with pytest.raises(ValueError, match="INPUT.EXTRA_AUGMENTATIONS"):
        build_extra_augmentations(cfg)


def test_training_mapper_applies_them_after_resize_and_flip():
    cfg = load_cfg(opts=["INPUT.EXTRA_AUGMENTATIONS", "['VerticalFlip', 'Rotate90', 'ColorJitter']"])
    train = CheckedDatasetMapper(cfg, True).augmentations.augs
    assert [type(a).__name__ for a in train] == [
        "ResizeShortestEdge", "RandomFlip", "RandomFlip", "RandomRotate90",
        "RandomBrightness", "RandomContrast", "RandomSaturation",
    ]
    assert train[2].vertical and not train[2].horizontal
    test = CheckedDatasetMapper(cfg, False).augmentations.augs
    assert [type(a) for a in test] == [T.ResizeShortestEdge]
