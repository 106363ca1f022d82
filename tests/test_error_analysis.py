"""
tools/analyze_errors.py: each of TIDE's error types found where it was planted, the AP50 that
fixing it gains, PR curves per class, and the gallery of the worst errors.
"""
import json

import cv2
import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from retina_plugin.analysis.command_line import analyze_errors_main
from retina_plugin.analysis.errors import ERROR_TYPES, coco_ground_truth, error_breakdown, plot_pr_curves

from .conftest import TINY_CONFIG

A, B = 0, 1
GROUND_TRUTH = [([10, 10, 60, 60], A), ([100, 100, 160, 160], A), ([180, 180, 240, 240], A),
                ([10, 150, 70, 210], B), ([180, 20, 240, 80], B)]
# (XYXY, class, score, what it is), scores chosen so that each error ranks above a true positive.
DETECTIONS = [
    ([120, 10, 150, 40], A, 0.95, "background"),       # touches no object
    ([10, 10, 60, 60], A, 0.90, "true_positive"),
    ([12, 12, 62, 62], A, 0.85, "duplicate"),           # the same object again
    ([10, 150, 70, 210], A, 0.82, "classification"),    # a B object called A
    ([180, 180, 240, 240], A, 0.80, "true_positive"),
    ([130, 130, 190, 190], A, 0.60, "localization"),    # IoU 0.14 with its object
    ([10, 150, 70, 210], B, 0.50, "true_positive"),
]                                                       # [180, 20, 240, 80] B: missed


@pytest.fixture
def planted(tmp_path):
    name = "errors_planted"
    image = tmp_path / "image.png"
    cv2.imwrite(str(image), np.full((256, 256, 3), 127, np.uint8))
    record = {"file_name": str(image), "image_id": 1, "height": 256, "width": 256,
              "annotations": [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": c, "iscrowd": 0}
                              for b, c in GROUND_TRUTH]}
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [record])
    MetadataCatalog.get(name).set(thing_classes=["a", "b"])
    detections = [{"image_id": 1, "category_id": c, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": s}
                  for (x0, y0, x1, y1), c, s, _ in DETECTIONS]
    return name, detections


def test_each_error_type_is_found_where_it_was_planted(planted):
    name, detections = planted
    breakdown = error_breakdown(coco_ground_truth(name), detections)
    by_score = {d["score"]: d["type"] for d in breakdown["attributed"]}
    assert [by_score[s] for _, _, s, _ in DETECTIONS] == [what for _, _, _, what in DETECTIONS]
    assert [a["bbox"] for a in breakdown["missed"]] == [[180, 20, 60, 60]]
    assert breakdown["counts"] == {"classification": 1, "localization": 1, "both": 0, "duplicate": 1,
                                   "background": 1, "missed": 1, "true_positive": 3}
    delta = breakdown["delta_AP50"]
    assert all(delta[kind] > 1 for kind in ERROR_TYPES if kind != "both"), delta
    assert delta["both"] == 0
    assert 0 < breakdown["AP50"] < 100


def test_both_is_a_wrong_class_and_a_poor_box(planted):
    name, detections = planted
    poor = {"image_id": 1, "category_id": B, "bbox": [130, 130, 60, 60], "score": 0.99}  # B, IoU 0.14 with an A
    breakdown = error_breakdown(coco_ground_truth(name), detections + [poor])
    assert breakdown["counts"]["both"] == 1 and breakdown["delta_AP50"]["both"] > 0


def test_the_tool_writes_the_table_curves_and_gallery(planted, tmp_path, capsys):
    name, detections = planted
    predictions = tmp_path / "coco_instances_results.json"
    predictions.write_text(json.dumps(detections))
    output = tmp_path / "errors"
    assert analyze_errors_main(["--config-file", str(TINY_CONFIG), "--dataset", name, "--predictions",
                                str(predictions), "--output", str(output), "MODEL.RETINANET.NUM_CLASSES", "2"]) == 0
    table = (output / "errors.md").read_text()
    assert "| missed | 1 |" in table and "| both | 0 | +0.0 |" in table
    assert json.loads((output / "errors.json").read_text())["counts"]["duplicate"] == 1
    gallery = sorted(p.name for p in (output / "gallery").iterdir())
    assert gallery == [f"false_positive_{i:02d}.png" for i in range(4)] + ["missed_00.png"]
    assert "The largest cost" in capsys.readouterr().out
    # The curves drawn are COCOeval's: one per class in each per-class panel.
    breakdown = error_breakdown(coco_ground_truth(name), detections)
    figure = plot_pr_curves(breakdown["evaluation"], ["a", "b"], str(tmp_path / "curves.png"))
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert [label.split(" ")[0] for label in labels] == ["a", "b"]
    class_b = figure.axes[0].get_lines()[1].get_ydata()
    assert class_b[0] == pytest.approx(1.0) and class_b[-1] == 0.0  # B: one of its two objects found, at precision 1
