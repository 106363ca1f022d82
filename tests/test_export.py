"""
Export (TorchScript trace and script, ONNX in onnxruntime) gives eager mode's detections at
sizes other than the one it was made with.
"""
import copy
import sys

import cv2
import numpy as np
import pytest
import torch

from detectron2.modeling import build_model

from retina_plugin.deploy import export

from .conftest import REPO_ROOT, TINY_CONFIG, load_cfg

TRACE_SIZE = (96, 128)
# With 4 classes and 9 anchors, P3 (stride 8) of a 32 x 48 image has 4 * 6 * 36 = 864
# (anchor, class) pairs, fewer than the top-1000; the other sizes have more on P3.
OTHER_SIZES = [(32, 48), (160, 96), (200, 256)]


def _image(height, width, seed):
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_model(load_cfg()).eval()
    # Untrained, every score is ~0.01 (the prior), below the 0.05 threshold: spread the
    # logits so that thresholding, top-k and NMS all have work to do.
    with torch.no_grad():
        model.head.cls_score.weight.normal_(0, 0.1)
        model.head.cls_score.bias.zero_()
    return model


def _export(model, method, tmp_path):
    sample = _image(*TRACE_SIZE, seed=0)
    if method == "tracing":
        return export.trace_model(model, sample)
    if method == "scripting":
        return export.script_model(model)
    pytest.importorskip("onnxruntime", reason="needs the [deploy] extra")
    path = str(tmp_path / "model.onnx")
    export.export_onnx(model, sample, path)
    return export.load_exported(path)


@pytest.mark.parametrize("method", ["tracing", "scripting", "onnx"])
def test_export_matches_eager_at_other_sizes(model, method, tmp_path):
    exported = _export(model, method, tmp_path)
    images = [_image(h, w, seed=i + 1) for i, (h, w) in enumerate(OTHER_SIZES)]
    report = export.verify_exported(model, exported, images)
    for size, count, problems in report:
        assert count > 0, size
        assert problems == [], (method, size, problems)
    assert not model.training


def test_trace_runs_on_an_image_without_candidates(model):
    # Traced where there are candidates (a copy: the trace shares the model's parameters).
    traced = export.trace_model(copy.deepcopy(model), _image(*TRACE_SIZE, seed=0))
    state = traced.state_dict()
    (bias_key,) = [k for k in state if k.endswith("head.cls_score.bias")]
    state[bias_key] = torch.full_like(state[bias_key], -20.0)  # now no score passes 0.05
    traced.load_state_dict(state)
    detections = export.run_exported(traced, _image(64, 80, seed=5))
    assert detections["boxes"].shape == (0, 4)
    assert detections["scores"].shape == (0,)


def test_exported_compare_detects_a_difference(model):
    image = _image(64, 64, seed=3)
    expected = export.run_eager(model, image)
    assert len(expected["scores"]) > 0
    shifted = dict(expected, boxes=expected["boxes"] + 0.01)
    def exported(detections):  # stands in for an exported model
        return lambda _: (detections["boxes"], detections["scores"], detections["classes"])

    ((_, count, problems),) = export.verify_exported(model, exported(shifted), [image])
    assert count == len(expected["scores"]) and problems
    ((_, _, problems),) = export.verify_exported(model, exported(expected), [image])
    assert problems == []


def test_export_rejects_a_training_model_and_bad_format(model, tmp_path):
    model.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            export.trace_model(model, _image(64, 64, seed=0))
    finally:
        model.eval()
    with pytest.raises(ValueError, match="scripting"):
        export.export_model(model, _image(64, 64, seed=0), str(tmp_path), "onnx", "scripting")


@pytest.mark.parametrize("fmt", ["torchscript", "onnx-standalone"])
def test_export_model_tool_writes_and_checks(model, fmt, tmp_path, capsys):
    if fmt == "onnx-standalone":
        pytest.importorskip("onnxruntime", reason="needs the [deploy] extra")
    sys.path.insert(0, str(REPO_ROOT / "tools"))
    import export_model as tool

    weights = str(tmp_path / "model.pth")
    torch.save({"model": model.state_dict()}, weights)
    sample = str(tmp_path / "sample.png")
    cv2.imwrite(sample, (np.random.RandomState(0).rand(100, 140, 3) * 255).astype(np.uint8))
    path = tool.main([
        "--config-file", str(TINY_CONFIG), "--format", fmt, "--output", str(tmp_path / "out"),
        "--sample-image", sample, "MODEL.WEIGHTS", weights,
    ])
    out = capsys.readouterr().out
    assert path.startswith(str(tmp_path / "out"))
    assert "gives eager mode's detections on all 4 images" in out
    # The file stands on its own: loaded back, it runs at yet another size.
    detections = export.run_exported(export.load_exported(path), _image(72, 120, seed=9))
    assert detections["boxes"].shape[1] == 4 and len(detections["scores"]) > 0
