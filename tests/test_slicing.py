"""
Large images (retina_plugin/slicing, data/windows.py, data/tiled_dataset.py): windows cover
every pixel; boxes come back in image pixels exactly; objects across window edges and corners
come back once and whole; the slice settings are checked; sliced prediction with one window
is DefaultPredictor's; sliced evaluation and tools/predict.py --slice (resumable per window);
tiled COCO datasets against their source labels, and the area split.
"""
import json
import os

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.structures import Boxes, BoxMode, Instances

from retina_plugin.config_checks import check_config
from retina_plugin.data.tiled_dataset import main as slice_dataset_main, slice_registered_dataset
from retina_plugin.data.windows import ClipRule, SliceGridError, area_split_windows, slice_windows
from retina_plugin.prediction.command_line import main as predict_main
from retina_plugin.prediction.sliced_runner import WINDOWS, predict_sliced_on_rank, read_window_progress
from retina_plugin.prediction.sources import resolve_source
from retina_plugin.slicing import SlicedPredictor, merge_window_detections
from retina_plugin.utils.detection_sets import detection_differences

from .conftest import load_cfg

# ---------------------------------------------------------------------------- windows


@pytest.mark.parametrize("height, width, size, overlap", [
    (1000, 1400, (400, 400), 0.25), (513, 512, (256, 128), 0.0), (300, 300, (300, 300), 0.5),
    (777, 1031, (200, 333), 0.9),
])
def test_windows_cover_every_pixel_with_the_requested_size_and_overlap(height, width, size, overlap):
    windows = slice_windows(height, width, size, overlap)
    covered = np.zeros((height, width), dtype=np.int32)
    for x0, y0, x1, y1 in windows:
        assert (y1 - y0, x1 - x0) == size and 0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    # Neighbours in a row overlap by at least the requested fraction (the last one by more).
    xs = sorted({w[0] for w in windows})
    for a, b in zip(xs, xs[1:]):
        assert a + size[1] - b >= round(overlap * size[1]) - 1


@pytest.mark.parametrize("size, overlap, message", [
    ((600, 400), 0.25, "larger than the 500 x 800 image"),
    ((400, 900), 0.25, "larger than the 500 x 800 image"),
    ((400, 400), 1.0, r"outside \[0, 1\)"),
    ((400, 400), -0.1, r"outside \[0, 1\)"),
])
def test_impossible_slices_are_refused_naming_sizes(size, overlap, message):
    with pytest.raises(SliceGridError, match=message):
        slice_windows(500, 800, size, overlap)


@pytest.mark.parametrize("key, value, message", [
    ("TEST.SLICE.OVERLAP", "1.0", "TEST.SLICE.OVERLAP = 1.0"),
    ("TEST.SLICE.SIZE", "(0, 512)", "TEST.SLICE.SIZE = "),
    ("TEST.SLICE.MERGE", "'WBF'", "TEST.SLICE.MERGE = 'WBF'"),
    ("TEST.SLICE.SCALE", "-0.5", "TEST.SLICE.SCALE = -0.5"),
])
def test_slice_config_values_are_checked(key, value, message):
    cfg = load_cfg(opts=[key, value])
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        check_config(cfg, training=False)


def test_slicing_and_test_time_augmentation_together_are_refused():
    cfg = load_cfg(opts=["TEST.SLICE.ENABLED", "True", "TEST.AUG.ENABLED", "True"])
    with pytest.raises(ValueError, match="TEST.SLICE.ENABLED and TEST.AUG.ENABLED"):
        check_config(cfg, training=False)


# ----------------------------------------------------------------- a detector of pixels


class RectangleDetector(nn.Module):
    """
    A stand-in model with detectron2's contract that sees pixels as a model does: every solid
    rectangle lit in channel c (> 128) is a detection of class c, its box in the "height" x
    "width" frame. A rectangle cut by the image edge gives its visible part, as a real
    detector's box of a cut object does. Counts the images it was called with, and their sizes.
    """

    def __init__(self):
        super().__init__()
        self.images_seen = 0
        self.input_sizes = set()

    def forward(self, batched_inputs):
        outputs = []
        for x in batched_inputs:
            self.images_seen += 1
            image = x["image"]
            height_in, width_in = image.shape[1:]
            self.input_sizes.add((height_in, width_in))
            scale = torch.tensor([x["width"] / width_in, x["height"] / height_in] * 2)
            boxes, classes = [], []
            for c in range(3):
                mask = (image[c] > 128).numpy().astype(np.uint8)
                count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
                for left, top, w, h, _ in stats[1:count]:
                    boxes.append([left, top, left + w, top + h])
                    classes.append(c)
            boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) * scale
            outputs.append({"instances": Instances(
                (x["height"], x["width"]), pred_boxes=Boxes(boxes),
                scores=torch.full((len(boxes),), 0.9), pred_classes=torch.tensor(classes, dtype=torch.int64))})
        return outputs


def _draw(height, width, objects):
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for (x0, y0, x1, y1), c in objects:
        image[y0:y1, x0:x1, c] = 255
    return image


def _slice_cfg(size=400, overlap=0.25, merge="MERGE", test_size=None):
    test_size = test_size or size
    return load_cfg(opts=["TEST.SLICE.SIZE", f"({size}, {size})", "TEST.SLICE.OVERLAP", str(overlap),
                          "TEST.SLICE.MERGE", f"'{merge}'", "TEST.SLICE.BATCH_SIZE", "3",
                          "INPUT.MIN_SIZE_TEST", str(test_size), "INPUT.MAX_SIZE_TEST", str(test_size)])


def _found(instances):
    return sorted((tuple(int(round(v)) for v in b), int(c))
                  for b, c in zip(instances.pred_boxes.tensor.tolist(), instances.pred_classes.tolist()))


# 1000 x 1400 image, 400-px windows every 300 px: inner window edges at x = 300, 400, 600, 700,
# 900, 1000, 1300 and y = 300, 400, 600, 700.
EDGE_OBJECTS = [
    ((370, 100, 430, 140), 0),    # across the vertical edge x = 400
    ((380, 380, 430, 430), 1),    # over the corner (400, 400) where four windows meet
    ((590, 680, 640, 720), 2),    # over the corner (600, 700)
    ((0, 0, 40, 40), 0),          # at the image's own corner: not cut
    ((690, 800, 720, 830), 1),    # two objects of one class 10 px apart, both across x = 700
    ((730, 800, 760, 830), 1),
    ((1280, 900, 1330, 990), 2),  # across x = 1300, on the image's bottom edge
]


@pytest.mark.parametrize("merge", ["MERGE", "NMS"])
def test_objects_across_window_edges_and_corners_come_back_once_and_whole(merge):
    image = _draw(1000, 1400, EDGE_OBJECTS)
    predictor = SlicedPredictor(_slice_cfg(merge=merge), model=RectangleDetector())
    found = _found(predictor(image)["instances"])
    assert found == sorted(EDGE_OBJECTS)


def test_an_object_no_window_holds_whole_is_merged_into_one_box():
    # 370 px wide across x = 400 and x = 700: three windows see a part, none all of it.
    objects = [((350, 500, 720, 560), 0), ((100, 100, 150, 150), 1)]
    image = _draw(1000, 1400, objects)
    merged = _found(SlicedPredictor(_slice_cfg(merge="MERGE"), model=RectangleDetector())(image)["instances"])
    assert merged == sorted(objects)
    # NMS keeps one of the cut views: one detection per object, never a box the model did not make.
    kept = _found(SlicedPredictor(_slice_cfg(merge="NMS"), model=RectangleDetector())(image)["instances"])
    assert len(kept) == 2 and ((100, 100, 150, 150), 1) in kept
    assert [b for b, c in kept if c == 0][0] in [(350, 500, 400, 560), (350, 500, 700, 560), (600, 500, 720, 560)]


def test_a_box_drawn_in_a_known_window_comes_back_in_image_pixels():
    # Inside the window (600, 300, 1000, 700) only, far from its edges.
    objects = [((713, 421, 779, 458), 2)]
    image = _draw(1000, 1400, objects)
    model = RectangleDetector()
    assert _found(SlicedPredictor(_slice_cfg(), model=model)(image)["instances"]) == objects
    assert model.images_seen == len(slice_windows(1000, 1400, (400, 400), 0.25))
    # Windows resized to half scale, as a model trained at half scale sees them: boxes within
    # the resize's pixel.
    found = _found(SlicedPredictor(_slice_cfg(test_size=200), model=RectangleDetector())(image)["instances"])
    assert len(found) == 1 and np.abs(np.subtract(found[0][0], objects[0][0])).max() <= 2


def test_windows_resized_by_a_fixed_scale_come_back_in_image_pixels():
    objects = [((713, 421, 779, 458), 2), ((370, 100, 430, 140), 0)]
    image = _draw(1000, 1400, objects)
    # 500-px windows at half scale: the model sees 250 x 250 whatever the test resize says.
    cfg = _slice_cfg(size=500, test_size=800)
    cfg.TEST.SLICE.SCALE = 0.5
    model = RectangleDetector()
    found = _found(SlicedPredictor(cfg, model=model)(image)["instances"])
    assert model.input_sizes == {(250, 250)}
    assert [c for _, c in found] == [0, 2]
    assert np.abs(np.subtract([b for b, _ in found], [b for b, _ in sorted(objects, key=lambda o: o[1])])).max() <= 2


def test_the_full_image_pass_adds_objects_larger_than_a_window():
    objects = [((100, 100, 1200, 900), 0)]
    image = _draw(1000, 1400, objects)
    cfg = _slice_cfg(merge="NMS")
    # Without it, every window sees a part: one detection, a part.
    found = _found(SlicedPredictor(cfg, model=RectangleDetector())(image)["instances"])
    assert len(found) == 1 and found[0] != objects[0]
    cfg.TEST.SLICE.FULL_IMAGE = True
    found = _found(SlicedPredictor(cfg, model=RectangleDetector())(image)["instances"])
    # The whole image at the test size (x0.4): boxes within its pixel.
    assert len(found) == 1 and np.abs(np.subtract(found[0][0], objects[0][0])).max() <= 2.5


def test_merge_keeps_the_whole_view_and_separate_classes():
    boxes = torch.tensor([[0, 0, 50, 50], [0, 0, 30, 50], [2, 1, 51, 50], [0, 0, 50, 50], [200, 0, 250, 0]],
                         dtype=torch.float32)
    scores = torch.tensor([0.5, 0.9, 0.6, 0.4, 0.3])
    classes = torch.tensor([0, 0, 0, 1, 0])
    partial = torch.tensor([False, True, False, False, False])
    # The cut view was found in a window that ends at x = 30, the others in (0, 0, 400, 400).
    windows = torch.tensor([[0, 0, 400, 400], [0, 0, 30, 400]] + [[0, 0, 400, 400]] * 3, dtype=torch.float32)
    out_boxes, out_scores, out_classes = merge_window_detections(boxes, scores, classes, windows, partial)
    # Class 0: the cut view (best score) and the duplicate whole view join the best whole view,
    # with the group's best score; class 1 stays; the empty box is its own detection.
    assert out_boxes.tolist() == [[2, 1, 51, 50], [0, 0, 50, 50], [200, 0, 250, 0]]
    assert out_scores.tolist() == pytest.approx([0.9, 0.4, 0.3])
    assert out_classes.tolist() == [0, 1, 0]
    assert len(merge_window_detections(boxes, scores, classes, windows, partial, max_detections=2)[0]) == 2
    with pytest.raises(ValueError, match="merge method 'WBF'"):
        merge_window_detections(boxes, scores, classes, windows, partial, method="WBF")


# ------------------------------------------------------------- with the trained model


def test_one_window_the_size_of_the_image_is_default_predictors(trained_tiny):
    cfg, _ = trained_tiny
    cfg = cfg.clone()
    cfg.TEST.SLICE.SIZE = (128, 128)
    record = DatasetCatalog.get("tiny_shapes_val")[0]
    image = cv2.imread(record["file_name"])
    reference = DefaultPredictor(cfg)(image)["instances"]
    sliced = SlicedPredictor(cfg)(record["file_name"])["instances"]
    assert len(reference) > 0
    assert not detection_differences(reference, sliced)


def test_sliced_evaluation_of_images_no_larger_than_a_window_equals_plain_evaluation(trained_tiny):
    from retina_plugin.training.trainer import Trainer

    from detectron2.modeling import build_model
    from detectron2.checkpoint import DetectionCheckpointer

    cfg, weights = trained_tiny
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(weights)
    plain = Trainer.test(cfg, model)["bbox"]
    sliced_cfg = cfg.clone()
    sliced_cfg.TEST.SLICE.ENABLED = True
    sliced_cfg.TEST.SLICE.SIZE = (128, 128)
    sliced_cfg.TEST.SLICE.DETECTIONS_PER_IMAGE = 100
    sliced = Trainer.test(sliced_cfg, model)["bbox"]
    assert plain["AP"] > 5
    assert sliced["AP"] == pytest.approx(plain["AP"], abs=0.05)


# ------------------------------------------------------------------ tools/predict.py


@pytest.fixture
def large_images(tmp_path):
    folder = tmp_path / "large"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _draw(1000, 1400, EDGE_OBJECTS))
    cv2.imwrite(str(folder / "b.png"), _draw(700, 900, [((10, 20, 300, 60), 1), ((390, 250, 420, 320), 2)]))
    return folder


class Interrupted(Exception):
    pass


class InterruptedAfter(RectangleDetector):
    def __init__(self, images):
        super().__init__()
        self.limit = images

    def forward(self, batched_inputs):
        if self.images_seen + len(batched_inputs) > self.limit:
            raise Interrupted()
        return super().forward(batched_inputs)


def _records(folder):
    with open(folder / "predictions.jsonl") as f:
        return {r["key"]: sorted(zip(map(tuple, r["boxes_xyxy"]), r["classes"])) for r in map(json.loads, f)}


def test_sliced_prediction_resumes_per_window(large_images, tmp_path):
    from retina_plugin.prediction.runner import finish

    cfg = _slice_cfg()
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    whole.mkdir()
    resumed.mkdir()
    model = RectangleDetector()
    counts = predict_sliced_on_rank(model, cfg, resolve_source([str(large_images)]), str(whole))
    finish(cfg, resolve_source([str(large_images)]), str(whole), [counts], 1.0)
    a_windows = len(slice_windows(1000, 1400, (400, 400), 0.25))
    b_windows = len(slice_windows(700, 900, (400, 400), 0.25))
    assert counts["windows"] == model.images_seen == a_windows + b_windows
    expected = {"a.png": sorted(EDGE_OBJECTS), "b.png": sorted([((10, 20, 300, 60), 1), ((390, 250, 420, 320), 2)])}
    assert {k: [(tuple(int(v) for v in b), c) for b, c in r] for k, r in _records(whole).items()} == expected

    # Killed after 7 windows of a.png (two batches of 3 recorded, the third lost), a line cut.
    with pytest.raises(Interrupted):
        predict_sliced_on_rank(InterruptedAfter(7), cfg, resolve_source([str(large_images)]), str(resumed))
    progress = resumed / WINDOWS / "1.jsonl"
    assert len(progress.read_text().splitlines()) == 1 + 6
    with open(progress, "a") as f:
        f.write('{"window": [0, 0, 4')
    model = RectangleDetector()
    counts = predict_sliced_on_rank(model, cfg, resolve_source([str(large_images)]), str(resumed), resume=True)
    finish(cfg, resolve_source([str(large_images)]), str(resumed), [counts], 1.0)
    assert model.images_seen == a_windows - 6 + b_windows
    assert _records(resumed) == _records(whole)
    assert not os.listdir(resumed / WINDOWS)


def test_window_progress_of_other_settings_is_not_used(tmp_path):
    path = tmp_path / "1.jsonl"
    header = {"image_size": [10, 10], "settings": {"overlap": 0.25}}
    path.write_text(json.dumps(header) + "\n" + json.dumps(
        {"window": [0, 0, 5, 5], "boxes": [], "scores": [], "classes": [], "partial": []}) + "\n")
    assert list(read_window_progress(str(path), header)) == [(0, 0, 5, 5)]
    assert read_window_progress(str(path), dict(header, settings={"overlap": 0.5})) == {}


def test_predict_command_line_slices_and_names_bad_input(large_images, tmp_path, trained_tiny):
    cfg, weights = trained_tiny
    small = large_images / "small.png"
    cv2.imwrite(str(small), np.zeros((100, 100, 3), np.uint8))
    config = tmp_path / "cfg.yaml"
    config.write_text(cfg.dump())
    out = tmp_path / "out"
    code = predict_main(["--config-file", str(config), "--input", str(large_images), "--output", str(out),
                         "--slice", "256", "256", "--overlap", "0.2", "MODEL.WEIGHTS", weights])
    summary = json.loads((out / "summary.json").read_text())
    assert code == 1 and summary["predicted"] == 2
    assert "small.png" in summary["unreadable"][0]["error"] and "larger than the 100 x 100 image" in summary["unreadable"][0]["error"]
    with pytest.raises(SystemExit, match=r"--overlap 1.0: expected a fraction in \[0, 1\)"):
        predict_main(["--config-file", str(config), "--input", str(large_images), "--output", str(tmp_path / "o2"),
                      "--slice", "256", "256", "--overlap", "1.0", "MODEL.WEIGHTS", weights])


# --------------------------------------------------------------------- tiled datasets


@pytest.fixture
def large_dataset(tmp_path):
    """Two images with boxes in the middle, across tile edges, at the border, and larger than a tile."""
    rng = np.random.RandomState(3)
    records = []
    for index, (height, width) in enumerate([(300, 500), (260, 260)]):
        path = tmp_path / f"image{index}.png"
        cv2.imwrite(str(path), rng.randint(0, 255, (height, width, 3), dtype=np.uint8))
        boxes = [[10, 10, 40, 50], [100, 20, 140, 60], [0, 200, 30, 230], [20, 90, 230, 250], [120, 120, 123, 180]]
        records.append({"file_name": str(path), "image_id": index, "height": height, "width": width,
                        "annotations": [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": i % 2, "iscrowd": 0}
                                        for i, b in enumerate(boxes)]})
    name = f"large_dataset_{tmp_path.name}"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=["a", "b"])
    return name, records


def test_tiled_boxes_are_the_source_boxes_clipped_to_each_tile(large_dataset, tmp_path):
    name, records = large_dataset
    counts = slice_registered_dataset(name, str(tmp_path / "tiles"), 128, 0.25)["all"]
    data = json.loads((tmp_path / "tiles" / "annotations.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["a", "b"]
    images = {i["id"]: i for i in data["images"]}
    assert counts["tiles"] == len(images) and counts["boxes"] == len(data["annotations"])
    rule = ClipRule()
    seen_whole = set()
    for annotation in data["annotations"]:
        tile = images[annotation["image_id"]]
        record = next(r for r in records if r["file_name"] == tile["source_file"])
        source = record["annotations"][annotation["source_box"]]
        x0, y0, x1, y1 = tile["window"]
        sx0, sy0, sx1, sy1 = source["bbox"]
        clipped = [max(sx0, x0) - x0, max(sy0, y0) - y0, min(sx1, x1) - x0, min(sy1, y1) - y0]
        x, y, w, h = annotation["bbox"]
        assert [x, y, x + w, y + h] == pytest.approx(clipped)
        assert annotation["category_id"] == source["category_id"] + 1
        visible = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1]) / ((sx1 - sx0) * (sy1 - sy0))
        assert min(w, h) >= rule.min_side and (visible >= rule.min_visible_fraction or min(w, h) >= 64)
        if [x, y, x + w, y + h] == pytest.approx([sx0 - x0, sy0 - y0, sx1 - x0, sy1 - y0]):
            seen_whole.add((tile["source_file"], annotation["source_box"]))
    # Every box no larger than the overlap lies whole in some tile; the 3-px-wide one never counts.
    for record in records:
        for index in (0, 1, 2):
            assert (record["file_name"], index) in seen_whole
    assert counts["dropped"] > 0 and counts["clipped"] > 0
    assert not any(a["source_box"] == 4 for a in data["annotations"])


def test_the_area_split_leaves_no_val_window_over_a_train_window(large_dataset, tmp_path):
    name, _ = large_dataset
    slice_registered_dataset(name, str(tmp_path / "split"), 64, 0.5, val_rows=1)
    by_split = {s: json.loads((tmp_path / "split" / s / "annotations.json").read_text()) for s in ("train", "val")}
    for source in {i["source_file"] for i in by_split["train"]["images"]}:
        train = [i["window"] for i in by_split["train"]["images"] if i["source_file"] == source]
        val = [i["window"] for i in by_split["val"]["images"] if i["source_file"] == source]
        assert train and val
        for a in train:
            for b in val:
                assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])
    windows = area_split_windows(300, 500, 64, 32, 1)
    assert max(w[3] for w in windows["train"]) <= min(w[1] for w in windows["val"])


def test_slice_dataset_command_line(large_dataset, tmp_path, capsys):
    name, _ = large_dataset
    assert slice_dataset_main(["--dataset", name, "--output", str(tmp_path / "t"), "--size", "128"]) == 0
    assert f"--register-coco {name}_tiles" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        slice_dataset_main(["--dataset", "no_such_dataset", "--output", str(tmp_path / "u")])
    assert "'no_such_dataset' is not registered" in capsys.readouterr().err
