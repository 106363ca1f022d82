"""
tools/analyze_dataset.py: anchor coverage equal to an independent count over anchors and boxes
built by hand, boxes without a foreground anchor, foreground anchors per box and their IoU, the
json keys, the plot's data, and the warning at the start of training.
"""
import json
import logging
import math

import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from retina_plugin.analysis import analyze_dataset, plot_box_shapes
from retina_plugin.analysis.command_line import main as analyze_main
from retina_plugin.analysis.dataset import log_training_data_analysis

from .conftest import TINY_CONFIG, load_cfg

SIZES = [32, 64, 128, 256, 512]  # one square anchor per level, strides 8 .. 128
ANCHOR_OPTS = ["MODEL.ANCHOR_GENERATOR.SIZES", str([[s] for s in SIZES]),
               "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[1.0]]",
               "INPUT.MIN_SIZE_TRAIN", "(256,)", "INPUT.MAX_SIZE_TRAIN", "256",
               "INPUT.MIN_SIZE_TEST", "256", "INPUT.MAX_SIZE_TEST", "256"]


def _register(name, boxes_per_image, classes=("a", "b")):
    """256 x 256 images (no resize at the analysed scale) with the given XYXY boxes."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    records = [{"file_name": f"{i}.png", "image_id": i, "height": 256, "width": 256,
                "annotations": [{"bbox": list(b), "bbox_mode": BoxMode.XYXY_ABS, "category_id": c, "iscrowd": 0}
                                for b, c in boxes]}
               for i, boxes in enumerate(boxes_per_image)]
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=list(classes))
    return name


def _hand_anchors(height=256, width=256):
    """Every anchor, as detectron2 places them (offset 0): centers at multiples of the stride."""
    anchors = []
    for level, size in enumerate(SIZES):
        stride = 2 ** (level + 3)
        for y in range(math.ceil(height / stride)):
            for x in range(math.ceil(width / stride)):
                cx, cy = x * stride, y * stride
                anchors.append([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
    return np.array(anchors)


def _ious(box, anchors):
    x0, y0 = np.maximum(box[0], anchors[:, 0]), np.maximum(box[1], anchors[:, 1])
    x1, y1 = np.minimum(box[2], anchors[:, 2]), np.minimum(box[3], anchors[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    areas = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    return inter / ((box[2] - box[0]) * (box[3] - box[1]) + areas - inter)


def _best_iou(box, anchors):
    return _ious(box, anchors).max()


def _random_boxes(rng, count):
    boxes = []
    for _ in range(count):
        w, h = np.exp(rng.uniform(np.log(6), np.log(200), 2))
        x, y = rng.uniform(0, 256 - w), rng.uniform(0, 256 - h)
        boxes.append(([x, y, x + w, y + h], int(rng.integers(2))))
    return boxes


def test_coverage_equals_an_independent_count():
    rng = np.random.default_rng(0)
    images = [_random_boxes(rng, 8) for _ in range(6)]
    name = _register("analysis_hand", images)
    cfg = load_cfg(TINY_CONFIG, ANCHOR_OPTS)
    analysis = analyze_dataset(cfg, name)
    anchors = _hand_anchors()
    ious = [(_best_iou(np.array(b), anchors), c) for boxes in images for b, c in boxes]
    covered = [iou >= 0.5 for iou, _ in ious]
    assert 0.1 < np.mean(covered) < 0.9  # boxes on both sides of the threshold
    assert analysis["boxes"] == 48 and analysis["images"] == 6
    assert abs(analysis["coverage"] - np.mean(covered)) <= 0.01
    assert analysis["coverage"] == analysis["train"]["coverage"] == analysis["test"]["coverage"]  # same scale
    for c, cls in enumerate(("a", "b")):
        mine = [ok for (iou, k), ok in zip(ious, covered) if k == c]
        assert abs(analysis["coverage_per_class"][cls] - np.mean(mine)) <= 0.01
    smallest = sum(1 for boxes in images for b, _ in boxes if math.sqrt((b[2] - b[0]) * (b[3] - b[1])) < 32)
    assert analysis["train"]["smaller_than_smallest_anchor"] == smallest
    assert sum(analysis["train"]["boxes_per_level"].values()) == 48


def test_boxes_without_a_foreground_anchor_under_the_assigner():
    # Apart boxes: each either matches an anchor exactly (IoU 1) or is too small for any (IoU < 0.1).
    boxes = [([0, 0, 32, 32], 0), ([120, 120, 130, 130], 0), ([64, 192, 192, 320 - 64], 1), ([200, 20, 206, 26], 1)]
    name = _register("analysis_assigner", [boxes])
    strict = load_cfg(TINY_CONFIG, ANCHOR_OPTS + ["MODEL.FOCAL_RETINANET.ALLOW_LOW_QUALITY_MATCHES", "False"])
    analysis = analyze_dataset(strict, name)
    assert analysis["coverage"] == 0.5 and analysis["no_foreground_anchor"] == 2
    # The paper's low-quality matches give each box its best anchor.
    assert analyze_dataset(load_cfg(TINY_CONFIG, ANCHOR_OPTS), name)["no_foreground_anchor"] == 0


def test_foreground_anchors_per_box_and_their_iou_equal_a_count_by_hand():
    # Boxes far apart, so that no anchor is foreground for two of them.
    boxes = [([0, 0, 32, 32], 0), ([100, 60, 164, 124], 1), ([20, 180, 76, 236], 0), ([190, 190, 250, 250], 1)]
    name = _register("analysis_foreground", [boxes])
    strict = load_cfg(TINY_CONFIG, ANCHOR_OPTS + ["MODEL.FOCAL_RETINANET.ALLOW_LOW_QUALITY_MATCHES", "False"])
    at = analyze_dataset(strict, name)["train"]
    anchors = _hand_anchors()
    per_box = [_ious(np.array(b, dtype=float), anchors) for b, _ in boxes]
    foreground = [iou[iou >= 0.5] for iou in per_box]
    assert at["foreground_anchors_per_box"]["mean"] == pytest.approx(np.mean([len(f) for f in foreground]))
    assert at["foreground_anchors_per_box"]["median"] == pytest.approx(np.median([len(f) for f in foreground]))
    assert at["foreground_anchor_iou"]["mean"] == pytest.approx(np.concatenate(foreground).mean(), abs=1e-5)
    assert at["foreground_anchor_iou"]["p10"] >= 0.5


def test_atss_trains_on_more_and_lower_iou_anchors_in_a_crowd_of_small_boxes():
    # What explains ATSS's loss on the dense small shapes (docs/accuracy.md).
    rng = np.random.default_rng(3)
    crowd = []
    for _ in range(4):
        sides = rng.uniform(12, 32, 30)
        corners = rng.uniform(0, 256 - 32, (30, 2))
        crowd.append([([x, y, x + s, y + s], 0) for (x, y), s in zip(corners, sides)])
    name = _register("analysis_crowd", crowd)
    # The demo's anchors: 3 sizes x 3 aspect ratios per location, so ATSS's top-k locations
    # bring 9 anchors each.
    nine_per_location = ANCHOR_OPTS + [
        "MODEL.ANCHOR_GENERATOR.SIZES", str([[s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)] for s in [16, 32, 64, 128, 256]]),
        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.5, 1.0, 2.0]]"]
    by_iou = analyze_dataset(load_cfg(TINY_CONFIG, nine_per_location), name)["train"]
    atss_opts = nine_per_location + ["MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER", "ATSS"]
    atss = analyze_dataset(load_cfg(TINY_CONFIG, atss_opts), name)["train"]
    fewer = analyze_dataset(load_cfg(TINY_CONFIG, atss_opts + ["MODEL.FOCAL_RETINANET.ATSS_TOPK", "3"]), name)["train"]
    assert (atss["foreground_anchors_per_box"]["mean"] > fewer["foreground_anchors_per_box"]["mean"]
            > by_iou["foreground_anchors_per_box"]["mean"])
    assert atss["foreground_anchor_iou"]["mean"] < fewer["foreground_anchor_iou"]["mean"]
    assert atss["foreground_anchor_iou"]["p10"] < by_iou["foreground_anchor_iou"]["p10"]


def test_json_keys_and_the_plot_show_the_boxes_and_anchors(tmp_path, capsys):
    rng = np.random.default_rng(1)
    name = _register("analysis_json", [_random_boxes(rng, 5) for _ in range(3)])
    plot = tmp_path / "boxes.png"
    assert analyze_main(["--config-file", str(TINY_CONFIG), "--dataset", name, "--json", "--plot", str(plot),
                         *ANCHOR_OPTS]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"boxes", "coverage", "coverage_per_class", "no_foreground_anchor", "anchor_sizes",
            "aspect_ratios"} <= set(printed)
    assert 0 <= printed["coverage"] <= 1 and printed["boxes"] == 15
    assert printed["anchor_sizes"] == [[float(s)] for s in SIZES]
    analysis = analyze_dataset(load_cfg(TINY_CONFIG, ANCHOR_OPTS), name)
    ax = plot_box_shapes(analysis, str(tmp_path / "again.png")).axes[0]
    boxes, *levels = ax.collections
    assert len(boxes.get_offsets()) == 15 and len(levels) == 5
    assert [tuple(np.round(level.get_offsets()[0], 3)) for level in levels] == [(s, s) for s in SIZES]
    assert plot.is_file()


def test_training_warns_once_when_coverage_is_low(caplog):
    tiny = [([10, 10, 16, 16], 0), ([100, 40, 106, 48], 1)]  # far under the 32-px anchors
    cfg = load_cfg(TINY_CONFIG, ANCHOR_OPTS + ["DATASETS.TRAIN", "('analysis_low',)"])
    _register("analysis_low", [tiny] * 3)
    logger = logging.getLogger("test_dataset_analysis")
    with caplog.at_level(logging.INFO, logger="test_dataset_analysis"):
        analysis = log_training_data_analysis(cfg, logger)
    assert analysis["coverage"] == 0.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Anchor coverage of analysis_low is 0.00" in warnings[0]
    assert "tools/fit_anchors.py" in warnings[0] and "MODEL.ANCHOR_GENERATOR.SIZES" in warnings[0]
    assert "tools/analyze_dataset.py" in warnings[0]
    # With low-quality matches every box keeps its best anchor ...
    assert "trains only its best anchor" in warnings[0] and "never trained" not in warnings[0]
    assert any("Training data, as the model sees it" in r.getMessage() for r in caplog.records)
    caplog.clear()
    # ... without them no box here has a foreground anchor, and the warning says what that means.
    strict = load_cfg(TINY_CONFIG, ANCHOR_OPTS + ["DATASETS.TRAIN", "('analysis_low',)",
                                                  "MODEL.FOCAL_RETINANET.ALLOW_LOW_QUALITY_MATCHES", "False"])
    with caplog.at_level(logging.INFO, logger="test_dataset_analysis"):
        assert log_training_data_analysis(strict, logger)["no_foreground_anchor"] == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "100% get no foreground anchor at all under the IoU assigner" in warnings[0]
    assert "never trained as objects" in warnings[0]
    caplog.clear()
    fits = [([0, 0, 32, 32], 0), ([64, 64, 128, 128], 1)]
    _register("analysis_fits", [fits])
    with caplog.at_level(logging.INFO, logger="test_dataset_analysis"):
        log_training_data_analysis(load_cfg(TINY_CONFIG, ANCHOR_OPTS + ["DATASETS.TRAIN", "('analysis_fits',)"]), logger)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


DEMO_ANCHORS_256 = ["INPUT.MIN_SIZE_TRAIN", "(256,)", "INPUT.MAX_SIZE_TRAIN", "256",
                    "INPUT.MIN_SIZE_TEST", "256", "INPUT.MAX_SIZE_TEST", "256"]  # the demo's 16-406 px anchors, 9 a place


def _small_objects(seed=3, images=6, per_image=10, low=6, high=14):
    rng = np.random.default_rng(seed)
    result = []
    for _ in range(images):
        boxes = []
        for _ in range(per_image):
            w, h = rng.uniform(low, high, 2)
            x, y = rng.uniform(0, 256 - w), rng.uniform(0, 256 - h)
            boxes.append(([x, y, x + w, y + h], 0))
        result.append(boxes)
    return result


def test_fitted_anchors_cover_small_objects_better_and_keep_the_shapes(tmp_path, capsys):
    from retina_plugin.analysis import fit_anchors
    from retina_plugin.analysis.command_line import fit_anchors_main

    name = _register("analysis_small", _small_objects())
    cfg = load_cfg(TINY_CONFIG, DEMO_ANCHORS_256)
    fit = fit_anchors(cfg, name, seed=0, generations=300)
    assert fit["changed"] and fit["coverage_after"] > fit["coverage_before"] + 0.2
    shipped = cfg.MODEL.ANCHOR_GENERATOR
    assert len(fit["sizes"]) == len(shipped.SIZES) and all(len(s) == len(shipped.SIZES[0]) for s in fit["sizes"])
    assert len(fit["ratios"]) == len(shipped.ASPECT_RATIOS[0])  # 9 anchors a place, as before
    flat = [s for level in fit["sizes"] for s in level]
    assert flat == sorted(flat) and len(set(flat)) == len(flat)  # increasing, level by level
    assert fit_anchors(cfg, name, seed=0, generations=300)["sizes"] == fit["sizes"]  # the same seed, the same anchors
    # The tool: coverage before and after, a yaml that merges into the config.
    output = tmp_path / "anchors.yaml"
    assert fit_anchors_main(["--config-file", str(TINY_CONFIG), "--dataset", name, "--output", str(output),
                             "--generations", "300", *DEMO_ANCHORS_256]) == 0
    printed = capsys.readouterr().out
    assert f"anchor coverage {fit['coverage_before']:.3f} -> {fit['coverage_after']:.3f}" in printed
    merged = load_cfg(TINY_CONFIG, DEMO_ANCHORS_256)
    merged.merge_from_file(str(output))
    assert [list(s) for s in merged.MODEL.ANCHOR_GENERATOR.SIZES] == fit["sizes"]
    assert analyze_dataset(merged, name)["coverage"] == fit["coverage_after"]


def test_anchors_that_already_fit_are_written_unchanged(tmp_path, capsys):
    from retina_plugin.analysis.command_line import fit_anchors_main

    exact = [([0, 0, 32, 32], 0), ([64, 64, 128, 128], 1), ([0, 128, 128, 256], 0)]  # anchors of ANCHOR_OPTS
    name = _register("analysis_exact", [exact])
    output = tmp_path / "anchors.yaml"
    assert fit_anchors_main(["--config-file", str(TINY_CONFIG), "--dataset", name, "--output", str(output),
                             "--generations", "100", *ANCHOR_OPTS]) == 0
    assert "already the best found (coverage 1.000); written unchanged" in capsys.readouterr().out
    merged = load_cfg(TINY_CONFIG, ANCHOR_OPTS)
    merged.merge_from_file(str(output))
    assert [list(s) for s in merged.MODEL.ANCHOR_GENERATOR.SIZES] == [[float(s)] for s in SIZES]
    assert [list(r) for r in merged.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS] == [[1.0]]


def test_objects_too_small_for_the_input_get_an_input_size(capsys):
    from retina_plugin.analysis import fit_anchors

    # 3-5 px objects: anchors on an 8-px grid cannot reach IoU 0.5 at this input size.
    name = _register("analysis_tiny", _small_objects(seed=4, low=3, high=5))
    fit = fit_anchors(load_cfg(TINY_CONFIG, DEMO_ANCHORS_256), name, seed=0, generations=200)
    assert fit["coverage_after"] < 0.9
    advice = fit["input_size"]
    assert advice is not None and advice["factor"] > 1 and advice["coverage"] >= 0.9
    assert advice["INPUT.MIN_SIZE_TEST"] == round(256 * advice["factor"])


def test_fitted_anchors_that_gain_too_little_coverage_leave_the_config_alone(tmp_path, capsys):
    from retina_plugin.analysis import fit_anchors
    from retina_plugin.analysis.command_line import fit_anchors_main

    name = _register("analysis_small_min_gain", _small_objects())
    cfg = load_cfg(TINY_CONFIG, DEMO_ANCHORS_256)
    fit = fit_anchors(cfg, name, seed=0, generations=300)
    gain = fit["coverage_fitted"] - fit["coverage_before"]
    assert fit["changed"] and gain > 0.2
    # Asked for more than the fit gains: the config's anchors, unchanged.
    kept = fit_anchors(cfg, name, seed=0, generations=300, min_gain=gain + 0.01)
    assert not kept["changed"] and kept["coverage_after"] == kept["coverage_before"]
    assert kept["coverage_fitted"] == fit["coverage_fitted"]
    assert [list(s) for s in kept["sizes"]] == [list(map(float, s)) for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES]
    output, min_gain = tmp_path / "anchors.yaml", f"{gain + 0.01:.4f}"
    assert fit_anchors_main(["--config-file", str(TINY_CONFIG), "--dataset", name, "--output", str(output),
                             "--generations", "300", "--min-gain", min_gain, *DEMO_ANCHORS_256]) == 0
    printed = capsys.readouterr().out
    assert (f"the fitted anchors cover {fit['coverage_fitted']:.3f} against the config's "
            f"{fit['coverage_before']:.3f}, not more than --min-gain {float(min_gain):g} more") in printed
    merged = load_cfg(TINY_CONFIG, DEMO_ANCHORS_256)
    merged.merge_from_file(str(output))
    assert merged.MODEL.ANCHOR_GENERATOR.SIZES == cfg.MODEL.ANCHOR_GENERATOR.SIZES


def test_shape_coverage_bound_equals_a_hand_count_and_bounds_coverage_at_every_input_size():
    from retina_plugin.analysis import shape_coverage_bound

    # A 10 x 10 square meets ratio 1 exactly. A 40 x 5 box (h/w 1/8) against an equal-area anchor
    # of ratio 0.5 (20 x 10): overlap 20 x 5 = 100, IoU 100 / (200 + 200 - 100) = 1/3; of ratio
    # 0.25 (28.28 x 7.07): overlap 141.4, IoU 0.547.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 40, 5]], dtype=float)
    assert shape_coverage_bound(boxes, [0.5, 1.0, 2.0], 0.5) == 0.5
    assert shape_coverage_bound(boxes, [0.25, 1.0], 0.5) == 1.0
    assert shape_coverage_bound(boxes, [0.25, 1.0], 0.55) == 0.5
    # No input size covers more than the bound: random boxes against the demo's anchors.
    rng = np.random.default_rng(1)
    name = _register("analysis_shape_bound", [_random_boxes(rng, 10) for _ in range(4)])
    cfg = load_cfg(TINY_CONFIG, DEMO_ANCHORS_256)
    analysis = analyze_dataset(cfg, name, scales=("train",))
    bound = shape_coverage_bound(np.array(analysis["train"]["boxes_xyxy"]), cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS[0],
                                 analysis["foreground_iou"])
    assert bound < 1.0
    from retina_plugin.analysis.anchor_fitting import _scaled_input
    for factor in (1.0, 2.0, 4.0):
        assert analyze_dataset(_scaled_input(cfg, factor), name, scales=("train",))["coverage"] <= bound


def test_boxes_too_thin_for_every_ratio_get_no_input_size_scan(monkeypatch, tmp_path, capsys):
    from retina_plugin.analysis import anchor_fitting
    from retina_plugin.analysis.command_line import fit_anchors_main

    rng = np.random.default_rng(5)
    thin = [[([x, y, x + 60, y + 6], 0) for x, y in rng.uniform(0, 190, (8, 2))] for _ in range(4)]
    name = _register("analysis_thin", thin)
    calls = []
    analyze = anchor_fitting.analyze_dataset
    monkeypatch.setattr(anchor_fitting, "analyze_dataset", lambda cfg, *a, **k: calls.append(cfg) or analyze(cfg, *a, **k))
    # 60 x 6 boxes against ratios 0.5 / 1 / 2 (best IoU under 0.29 at any size); min_gain 1 keeps those anchors.
    fit = anchor_fitting.fit_anchors(load_cfg(TINY_CONFIG, DEMO_ANCHORS_256), name, seed=0, generations=1,
                                      min_gain=1.0)
    assert fit["coverage_after"] < 0.9 and fit["shape_coverage_bound"] == 0.0
    assert fit["input_size"] is None
    assert len(calls) == 2  # before and after the fit: none at a larger input size
    assert fit_anchors_main(["--config-file", str(TINY_CONFIG), "--dataset", name, "--output", str(tmp_path / "a.yaml"),
                             "--generations", "1", "--min-gain", "1", *DEMO_ANCHORS_256]) == 0
    assert "Coverage stays under 0.9 at every input size: only 0.00 of the boxes" in capsys.readouterr().out
