"""
Helpers of demo.py: find the input images, draw detections with detectron2's Visualizer.
"""
import glob
import os
from typing import List, Sequence

import numpy as np

from detectron2.structures import Instances
from detectron2.utils.visualizer import Visualizer

__all__ = ["IMAGE_EXTENSIONS", "expand_image_inputs", "draw_detections"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def expand_image_inputs(inputs: Sequence[str]) -> List[str]:
    """
    Files, glob patterns and folders (their images, not recursive) to a sorted list of files.
    Raises FileNotFoundError naming every input that matches nothing.
    """
    files, unmatched = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = [
                os.path.join(item, f)
                for f in sorted(os.listdir(item))
                if f.lower().endswith(IMAGE_EXTENSIONS)
            ]
        elif os.path.isfile(item):
            found = [item]
        else:
            found = sorted(f for f in glob.glob(os.path.expanduser(item)) if os.path.isfile(f))
        if not found:
            unmatched.append(item)
        files.extend(found)
    if unmatched:
        raise FileNotFoundError(f"--input: no image files at {unmatched}")
    return files


def draw_detections(image_bgr: np.ndarray, instances: Instances, metadata, scale: float = 1.0) -> np.ndarray:
    """
    Boxes, class names and scores drawn over the image. Returns a BGR uint8 image whose size is
    the input's times ``scale``.
    """
    visualizer = Visualizer(image_bgr[:, :, ::-1], metadata, scale=scale)
    drawn = visualizer.draw_instance_predictions(instances.to("cpu"))
    return drawn.get_image()[:, :, ::-1]
