"""
"retina_shapes": a dataset the project draws itself, so the demo needs no download.

Each image holds many small filled shapes (4 classes of unequal frequency) on a textured,
cluttered background: mostly easy negatives, the setting the focal loss is for. The images
and a COCO-format json are written on first use under ``$DETECTRON2_DATASETS/retina_shapes``
(``./datasets/retina_shapes`` by default) and are the same on every machine for one seed.
"""
import json
import os
import shutil
import tempfile
from typing import Dict, List, Tuple

import cv2
import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

__all__ = [
    "SHAPES_CLASS_NAMES",
    "SHAPES_SPLITS",
    "shapes_root",
    "generate_shapes_split",
    "ensure_shapes_split",
    "register_shapes_datasets",
]

SHAPES_CLASS_NAMES = ("circle", "square", "triangle", "star")
# Relative frequencies of the classes: the rare ones are 5x rarer than circles.
SHAPES_CLASS_FREQUENCIES = (0.5, 0.25, 0.15, 0.1)
# dataset name -> (split, number of images, seed)
SHAPES_SPLITS = {
    "retina_shapes_train": ("train", 600, 0),
    "retina_shapes_val": ("val", 100, 1),
    "retina_shapes_test": ("test", 12, 2),
}
SHAPES_IMAGE_SIZE = 256
# Object sizes (longest side of the box) in pixels, and objects per image.
SHAPES_OBJECT_SIZE = (14, 48)
SHAPES_OBJECTS_PER_IMAGE = (6, 16)
# Long side / short side of the shapes: (1, 1) draws them round or square, as retina_shapes has them.
SHAPES_ELONGATION = (1.0, 1.0)


def shapes_root() -> str:
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "retina_shapes")


def _shape_polygon(rng: np.random.Generator, class_name: str, center, size: float) -> np.ndarray:
    """
    Outline of one shape, (P, 2) float32 xy, whose bounding box is about size x size.
    """
    angle = rng.uniform(0, 2 * np.pi)
    if class_name == "circle":
        radii, num_points = np.full(48, size / 2), 48
    elif class_name == "square":
        radii, num_points = np.full(4, size / 2), 4
    elif class_name == "triangle":
        radii, num_points = np.full(3, size / 2), 3
    elif class_name == "star":
        radii, num_points = np.tile([size / 2, size / 5], 5), 10
    else:
        raise ValueError(f"Unknown shape {class_name!r}")
    theta = angle + np.arange(num_points) * 2 * np.pi / num_points
    return np.stack(
        [center[0] + radii * np.cos(theta), center[1] + radii * np.sin(theta)], axis=1
    ).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """
    A smooth random gradient plus noise and clutter (lines, specks): easy negatives.
    """
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(30, 120, size=3)
    slope = rng.uniform(-40, 40, size=(2, 3))
    image = base + xs[..., None] * slope[0] + ys[..., None] * slope[1]
    image += rng.normal(0, 8, size=(size, size, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(3, 10)):
        p1, p2 = rng.integers(0, size, size=(2, 2))
        color = tuple(int(c) for c in rng.integers(60, 200, size=3))
        cv2.line(image, tuple(int(v) for v in p1), tuple(int(v) for v in p2), color, 1, cv2.LINE_AA)
    for _ in range(rng.integers(10, 40)):
        center = tuple(int(v) for v in rng.integers(0, size, size=2))
        color = tuple(int(c) for c in rng.integers(40, 200, size=3))
        cv2.circle(image, center, int(rng.integers(1, 3)), color, -1)
    return image


def _box_area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """
    IoU of one XYXY box (4,) with each of ``boxes`` (M, 4).
    """
    if len(boxes) == 0:
        return np.zeros(0)
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    return inter / (_box_area(box) + _box_area(boxes) - inter)


def _draw_image(rng: np.random.Generator, size: int, object_size: Tuple[float, float] = SHAPES_OBJECT_SIZE,
                elongation: Tuple[float, float] = SHAPES_ELONGATION,
                objects_per_image: Tuple[int, int] = SHAPES_OBJECTS_PER_IMAGE) -> Tuple[np.ndarray, List[Dict]]:
    """
    Returns a BGR uint8 image and its objects as {"bbox": [x0, y0, x1, y1], "category_id"},
    each object's side drawn uniformly in ``object_size`` (px). With ``elongation`` other than
    (1, 1), each shape is squeezed across, horizontally or vertically at random, to a long side
    ``elongation`` times its short one (drawn uniformly in that range). ``objects_per_image``: the
    range of the number of objects asked for (fewer where no free place is found).
    """
    image = _background(rng, size)
    boxes, objects = np.zeros((0, 4)), []
    num_objects = rng.integers(objects_per_image[0], objects_per_image[1] + 1)
    for _ in range(num_objects * 5):  # retries for placements that overlap too much
        if len(objects) == num_objects:
            break
        class_id = int(rng.choice(len(SHAPES_CLASS_NAMES), p=SHAPES_CLASS_FREQUENCIES))
        shape_size = rng.uniform(*object_size)
        center = rng.uniform(shape_size / 2, size - shape_size / 2, size=2)
        polygon = _shape_polygon(rng, SHAPES_CLASS_NAMES[class_id], center, shape_size)
        if tuple(elongation) != SHAPES_ELONGATION:
            # No extra draws for the plain shapes: retina_shapes stays the same images for one seed.
            across = int(rng.integers(2))
            polygon[:, across] = center[across] + (polygon[:, across] - center[across]) / rng.uniform(*elongation)
        box = np.concatenate([polygon.min(0), polygon.max(0)])
        if (_box_iou(box, boxes) > 0.1).any():
            continue
        # Bright, saturated colors: objects stand out from the darker clutter.
        color = rng.integers(0, 256, size=3)
        color[rng.integers(3)] = 255
        cv2.fillPoly(
            image, [np.round(polygon * 16).astype(np.int32)], tuple(int(c) for c in color),
            cv2.LINE_AA, shift=4,
        )
        boxes = np.vstack([boxes, box])
        objects.append({"bbox": [float(v) for v in box], "category_id": class_id + 1})
    return image, objects


def generate_shapes_split(output_dir: str, num_images: int, seed: int, image_size: int = SHAPES_IMAGE_SIZE,
                          object_size: Tuple[float, float] = SHAPES_OBJECT_SIZE,
                          elongation: Tuple[float, float] = SHAPES_ELONGATION,
                          objects_per_image: Tuple[int, int] = SHAPES_OBJECTS_PER_IMAGE) -> str:
    """
    Draw ``num_images`` images into ``output_dir`` and write ``output_dir/annotations.json``
    (COCO format, category ids 1..4). Deterministic in ``seed``. ``object_size``: the range of
    the objects' sides (px), e.g. (6, 12) for objects under the CPU configs' smallest anchor.
    ``elongation``: the range of long side / short side, e.g. (4, 8) for thin objects that no
    anchor of ratio 1:2 fits. ``objects_per_image``: the range of objects per image, e.g. (25, 40)
    for a dense scene. Returns the json path.
    """
    if not 1 <= elongation[0] <= elongation[1]:
        raise ValueError(f"elongation {tuple(elongation)}: needs 1 <= low <= high")
    if not 0 <= objects_per_image[0] <= objects_per_image[1]:
        raise ValueError(f"objects_per_image {tuple(objects_per_image)}: needs 0 <= low <= high")
    os.makedirs(output_dir, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        rng = np.random.default_rng([seed, image_id])
        image, objects = _draw_image(rng, image_size, object_size, elongation, objects_per_image)
        file_name = f"{image_id:06d}.png"
        cv2.imwrite(os.path.join(output_dir, file_name), image)
        images.append(
            {"id": image_id, "file_name": file_name, "height": image_size, "width": image_size}
        )
        for obj in objects:
            x0, y0, x1, y1 = obj["bbox"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["category_id"],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    json_file = os.path.join(output_dir, "annotations.json")
    with open(json_file, "w") as f:
        json.dump(
            {
                "info": {"num_images": num_images, "seed": seed, "image_size": image_size,
                         **({"object_size": list(object_size)} if tuple(object_size) != SHAPES_OBJECT_SIZE else {}),
                         **({"elongation": list(elongation)} if tuple(elongation) != SHAPES_ELONGATION else {}),
                         **({"objects_per_image": list(objects_per_image)}
                            if tuple(objects_per_image) != SHAPES_OBJECTS_PER_IMAGE else {})},
                "images": images,
                "annotations": annotations,
                "categories": [
                    {"id": i + 1, "name": name} for i, name in enumerate(SHAPES_CLASS_NAMES)
                ],
            },
            f,
        )
    return json_file


def ensure_shapes_split(root: str, split: str, num_images: int, seed: int) -> str:
    """
    Generate ``root/split`` unless it already holds this exact split; returns its json path.
    Several processes (``launch``) may call this at once: each draws into a private temporary
    folder and the first to finish moves it into place.
    """
    split_dir = os.path.join(root, split)
    json_file = os.path.join(split_dir, "annotations.json")
    expected = {"num_images": num_images, "seed": seed, "image_size": SHAPES_IMAGE_SIZE}
    if os.path.isfile(json_file):
        with open(json_file) as f:
            if json.load(f).get("info") == expected:
                return json_file
        shutil.rmtree(split_dir)  # made with other settings: draw it again
    os.makedirs(root, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{split}-", dir=root)
    generate_shapes_split(tmp_dir, num_images, seed)
    try:
        os.rename(tmp_dir, split_dir)
    except OSError:  # another process was first
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return json_file


def register_shapes_datasets():
    """
    Register the splits of :data:`SHAPES_SPLITS` in DatasetCatalog / MetadataCatalog. Images
    are drawn on first load, under the root that :func:`shapes_root` gives at that time.
    """
    for name, (split, num_images, seed) in SHAPES_SPLITS.items():

        def load(name=name, split=split, num_images=num_images, seed=seed):
            json_file = ensure_shapes_split(shapes_root(), split, num_images, seed)
            return load_coco_json(json_file, os.path.dirname(json_file), name)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            thing_classes=list(SHAPES_CLASS_NAMES),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SHAPES_CLASS_NAMES))},
            evaluator_type="coco",
        )
