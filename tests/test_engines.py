"""
Deployment engines on a tiny trained model, for every CPU backend and precision: fp32 engines
give eager mode's detections (as sets, alone and in batches, at several sizes), int8 engines
lose a bounded AP, and every refusal names its reason: another backend version, too large an
AP drop, a size outside the profile, a config that describes another model.
"""
import copy
import json
import logging

import cv2
import numpy as np
import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from retina_plugin.deploy import EngineError, EnginePredictor, InputProfile, build_engine_model, load_engine
from retina_plugin.deploy.build import build_engine
from retina_plugin.deploy.engines import backend_version, version_compatible
from retina_plugin.deploy.export_command import main as export_main
from retina_plugin.deploy.verification import calibration_batches, compare_with_eager, mapped_test_images
from retina_plugin.utils.detection_sets import coco_results_by_image, detection_differences

from .conftest import TINY_CONFIG, TRAINED_TINY_OPTS

CPU_BACKENDS = [pytest.param("onnxruntime", id="onnxruntime"), pytest.param("openvino", id="openvino")]


def _require(backend):
    pytest.importorskip(backend, reason=f"needs {backend} (pip install -e .[deploy])")


@pytest.fixture(scope="module")
def eager(trained_tiny):
    cfg, weights = trained_tiny
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(weights)
    return cfg, model


@pytest.fixture(scope="module")
def fp32_engines(eager, tmp_path_factory):
    cfg, model = eager
    engines = {}
    for backend in ("onnxruntime", "openvino"):
        try:
            __import__(backend)
        except ImportError:
            continue
        folder = tmp_path_factory.mktemp(f"{backend}_fp32")
        build_engine(model, cfg, str(folder), backend, "fp32", InputProfile(4, (32, 32), (256, 256)))
        engines[backend] = str(folder)
    return engines


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_fp32_engine_gives_eager_detections_alone_and_in_batches(eager, fp32_engines, backend):
    _require(backend)
    cfg, model = eager
    engine_model = build_engine_model(cfg, fp32_engines[backend])
    inputs = mapped_test_images(cfg, "tiny_shapes_val", 0, 4)
    # Other sizes than the 128-px test resize: a non-square one and a larger one.
    inputs.append(dict(inputs[0], image=torch.nn.functional.interpolate(
        inputs[0]["image"][None].float(), size=(96, 160))[0]))
    inputs.append(dict(inputs[1], image=torch.nn.functional.interpolate(
        inputs[1]["image"][None].float(), size=(224, 200))[0]))
    report = compare_with_eager(model, engine_model, inputs, batch_size=3)
    assert sum(count for _, count, _ in report) > 0
    assert all(not problems for _, _, problems in report), report


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_engine_predictor_is_default_predictor_with_an_engine(eager, fp32_engines, backend):
    _require(backend)
    cfg, _ = eager
    image = cv2.resize(cv2.imread(mapped_test_images(cfg, "tiny_shapes_val", 2, 1)[0]["file_name"]), (150, 110))
    expected = DefaultPredictor(cfg)(image)["instances"]
    predictor = EnginePredictor(cfg, fp32_engines[backend])
    actual = predictor(image)["instances"]
    assert actual.image_size == (110, 150) and len(actual) > 0
    assert detection_differences(expected, actual) == []
    assert predictor.engine.backend == backend


def test_sliced_prediction_runs_an_engine_unchanged(eager, fp32_engines):
    from retina_plugin.slicing import SlicedPredictor

    _require("onnxruntime")
    cfg, model = eager
    files = [r["file_name"] for r in mapped_test_images(cfg, "tiny_shapes_val", 0, 6)]
    rows = [np.concatenate([cv2.imread(f) for f in files[i:i + 3]], axis=1) for i in (0, 3)]
    mosaic = np.concatenate(rows, axis=0)  # 256 x 384: six val images
    sliced_cfg = cfg.clone()
    sliced_cfg.TEST.SLICE.SIZE = (128, 128)
    expected = SlicedPredictor(sliced_cfg, model=model)(mosaic)["instances"]
    engine = SlicedPredictor(sliced_cfg, model=build_engine_model(cfg, fp32_engines["onnxruntime"]))
    actual = engine(mosaic)["instances"]
    assert len(expected) > 0 and actual.image_size == (256, 384)
    assert detection_differences(expected, actual) == []


def test_refusals_name_their_reason(eager, fp32_engines, tmp_path, caplog):
    _require("onnxruntime")
    cfg, _ = eager
    folder = fp32_engines["onnxruntime"]
    # A size outside the profile (up to 256 x 256 here).
    model = build_engine_model(cfg, folder)
    with pytest.raises(EngineError, match=r"padded input 320 x 128 .* outside this engine's input profile"):
        model([{"image": torch.zeros(3, 300, 128)}])
    with pytest.raises(EngineError, match="batch of 5 images"):
        model([{"image": torch.zeros(3, 64, 64)}] * 5)
    # Another backend version.
    moved = tmp_path / "moved"
    moved.mkdir()
    metadata = json.loads(open(f"{folder}/engine.json").read())
    for name in ("model.onnx",):
        (moved / name).write_bytes(open(f"{folder}/{name}", "rb").read())
    (moved / "engine.json").write_text(json.dumps(dict(metadata, backend_version="0.0.1")))
    with pytest.raises(EngineError, match=r"was made with onnxruntime 0\.0\.1, and this machine has onnxruntime"):
        load_engine(str(moved))
    # Another release of the same major version: it loads, and says how to check it here.
    installed = backend_version("onnxruntime")
    same_major = f"{installed.split('.')[0]}.0.0"
    (moved / "engine.json").write_text(json.dumps(dict(metadata, backend_version=same_major)))
    with caplog.at_level(logging.WARNING):
        assert load_engine(str(moved)).backend == "onnxruntime"
    assert any(f"made with onnxruntime {same_major}" in m and "--verify" in m for m in caplog.messages)
    # A config that describes another model.
    other = cfg.clone()
    other.MODEL.RETINANET.NUM_CLASSES = 3
    with pytest.raises(EngineError, match=r"MODEL.RETINANET.NUM_CLASSES: config 3, engine 4"):
        EnginePredictor(other, folder)
    with pytest.raises(EngineError, match="no engine.json"):
        load_engine(str(tmp_path))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_int8_engine_loses_a_bounded_ap(eager, trained_tiny, backend, tmp_path, capsys):
    _require(backend)
    if backend == "openvino":
        pytest.importorskip("nncf", reason="OpenVINO int8 needs nncf (pip install -e .[deploy])")
    cfg, weights = trained_tiny
    fmt = {"onnxruntime": "onnx", "openvino": "openvino"}[backend]
    output = tmp_path / "int8"
    export_main([
        "--config-file", str(TINY_CONFIG), "--format", fmt, "--precision", "int8",
        "--calibration-images", "16", "--output", str(output), *TRAINED_TINY_OPTS, "MODEL.WEIGHTS", weights,
    ])
    out = capsys.readouterr().out
    assert "Calibrating on 16 images of tiny_shapes_train" in out
    verification = json.loads((output / "engine.json").read_text())["verification"]
    assert verification["passed"] and verification["images"] == 24
    assert verification["eager"]["AP"] > 5  # a model that detects: the drop means something
    assert verification["ap_drop"] <= 1.0, verification
    engine = load_engine(str(output))
    assert engine.precision == "int8"
    source = json.loads((output / "engine.json").read_text())["source"]
    first = DatasetCatalog.get("tiny_shapes_train")[:16]
    assert source["calibration_dataset"] == "tiny_shapes_train"  # the default, named
    assert source["calibration_image_ids"] == [d["image_id"] for d in first]
    # The check again, from engine.json alone: the same held-out images, the same result.
    export_main(["--verify", str(output)])
    again = json.loads((output / "engine.json").read_text())["verification"]
    assert again["passed"] and again["images"] == 24 and again["max_ap_drop"] == 1.0
    assert again["engine"]["AP"] == pytest.approx(verification["engine"]["AP"], abs=1e-6)
    assert again["backend_version"] == backend_version(backend)


def test_too_large_an_ap_drop_fails_and_the_engine_will_not_load(trained_tiny, tmp_path):
    _require("onnxruntime")
    cfg, weights = trained_tiny
    output = tmp_path / "refused"
    # Calibrated on one image and asked to lose no AP at all (-1 AP allowed): refused.
    with pytest.raises(SystemExit, match="FAILED its check against eager mode"):
        export_main([
            "--config-file", str(TINY_CONFIG), "--format", "onnx", "--precision", "int8",
            "--calibration-images", "1", "--max-ap-drop", "-1", "--output", str(output),
            *TRAINED_TINY_OPTS, "MODEL.WEIGHTS", weights,
        ])
    assert json.loads((output / "engine.json").read_text())["verification"]["passed"] is False
    with pytest.raises(EngineError, match="failed its check against eager mode"):
        load_engine(str(output))


def test_export_tool_writes_an_fp32_engine_with_its_record(trained_tiny, tmp_path, capsys):
    _require("onnxruntime")
    cfg, weights = trained_tiny
    output = tmp_path / "fp32"
    export_main(["--config-file", str(TINY_CONFIG), "--format", "onnx", "--output", str(output),
                 "--max-size", "256", "256", "--max-batch", "4", *TRAINED_TINY_OPTS, "MODEL.WEIGHTS", weights])
    assert "passed its check against eager mode" in capsys.readouterr().out
    metadata = json.loads((output / "engine.json").read_text())
    assert metadata["backend"] == "onnxruntime" and metadata["precision"] == "fp32"
    assert metadata["profile"] == {"max_batch": 4, "min_size": [32, 32], "max_size": [256, 256]}
    assert metadata["source"]["weights"] == weights and len(metadata["source"]["weights_sha256"]) == 64
    assert "FocalRetinaNet" in metadata["source"]["config"]
    assert metadata["verification"]["passed"] and metadata["verification"]["checks"] == 8


def test_tensorrt_plans_stay_tied_to_their_exact_version():
    assert version_compatible("onnxruntime", "1.20.0", "1.23.2")
    assert version_compatible("openvino", "2026.0.0", "2026.4.1")
    assert not version_compatible("openvino", "2025.4.1", "2026.4.1")
    assert not version_compatible("tensorrt", "11.4.0", "11.4.1")
    assert version_compatible("tensorrt", "11.4.1", "11.4.1")


def test_unsupported_precision_and_missing_calibration_are_refused(eager, tmp_path):
    _require("onnxruntime")
    cfg, model = eager
    with pytest.raises(EngineError, match="onnxruntime does not build fp16 engines here"):
        build_engine(model, cfg, str(tmp_path), "onnxruntime", "fp16")
    with pytest.raises(EngineError, match="needs calibration images"):
        build_engine(model, cfg, str(tmp_path), "onnxruntime", "int8")


def test_calibration_images_are_the_models_own_input(eager):
    cfg, model = eager
    batches, used = calibration_batches(model, cfg, "tiny_shapes_train", 3)
    assert len(batches) == 3 and len({u["file_name"] for u in used}) == 3
    assert [u["image_id"] for u in used] == [d["image_id"] for d in DatasetCatalog.get("tiny_shapes_train")[:3]]
    first = mapped_test_images(cfg, "tiny_shapes_train", 0, 1)
    with torch.no_grad():
        torch.testing.assert_close(batches[0], model.preprocess_image(first).tensor)
    assert batches[0].shape[-1] % 32 == 0 and abs(float(batches[0].mean())) < 3  # normalized, padded


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_tensorrt_without_cuda_says_so(eager, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is installed only where CUDA is")
    cfg, model = eager
    with pytest.raises(EngineError, match="no CUDA GPU"):
        build_engine(model, cfg, str(tmp_path), "tensorrt", "fp16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT engines need a CUDA GPU")
def test_tensorrt_fp32_engine_gives_eager_detections(eager, tmp_path):
    pytest.importorskip("tensorrt", reason="needs tensorrt")
    cfg, model = eager
    build_engine(model, cfg, str(tmp_path), "tensorrt", "fp32", InputProfile(4, (32, 32), (256, 256)))
    engine_model = build_engine_model(cfg, str(tmp_path))
    inputs = mapped_test_images(cfg, "tiny_shapes_val", 0, 4)
    gpu_eager = build_model(cfg).to("cuda").eval()
    gpu_eager.load_state_dict(model.state_dict())
    report = compare_with_eager(gpu_eager, engine_model, inputs)
    assert all(not problems for _, _, problems in report), report


def test_speed_accuracy_curve_over_test_sizes(eager, fp32_engines, tmp_path):
    _require("onnxruntime")
    from retina_plugin.experiments.speed_accuracy import curve_markdown, plot_curve, scaled_config, speed_accuracy_curve

    cfg, model = eager
    scaled = scaled_config(cfg, 96)
    assert (scaled.INPUT.MIN_SIZE_TEST, scaled.INPUT.MAX_SIZE_TEST) == (96, 96) and cfg.INPUT.MIN_SIZE_TEST == 128
    models = {"eager": model, "onnxruntime fp32": build_engine_model(cfg, fp32_engines["onnxruntime"])}
    messages = []
    # The engine's profile stops at 256 px: at 288 it gets no point, and says why.
    rows = speed_accuracy_curve(models, cfg, "tiny_shapes_val", [96, 160, 288], str(tmp_path), max_images=8,
                                log=messages.append)
    points = {(r["model"], r["size"]): r for r in rows}
    assert set(points) == {("eager", 96), ("eager", 160), ("eager", 288), ("onnxruntime fp32", 96),
                           ("onnxruntime fp32", 160)}
    assert any("onnxruntime fp32 at 288: skipped" in m and "input profile" in m for m in messages)
    for size in (96, 160):
        # The same detections as sets, image by image. Near-tied scores may still rank in another
        # order in COCOeval's sort, so the AP agrees to within a hair, far below what a size moves.
        eager_images = coco_results_by_image(str(tmp_path / f"eager_{size}" / "coco_instances_results.json"))
        engine_images = coco_results_by_image(
            str(tmp_path / f"onnxruntime fp32_{size}" / "coco_instances_results.json"))
        assert eager_images.keys() == engine_images.keys() and len(eager_images) > 0
        for image_id, detections in eager_images.items():
            assert detection_differences(detections, engine_images[image_id]) == [], (size, image_id)
        assert points["eager", size]["AP"] == pytest.approx(points["onnxruntime fp32", size]["AP"], abs=0.01)
    # Each size really reached the model: its detections differ (an AP difference would not do: a
    # tiny model can score nearly the same at two sizes).
    at_96, at_160 = (coco_results_by_image(str(tmp_path / f"eager_{s}" / "coco_instances_results.json"))
                     for s in (96, 160))
    assert at_96.keys() != at_160.keys() or any(detection_differences(at_96[i], at_160[i]) for i in at_96)
    table = curve_markdown(rows)
    assert "| model | 96 px: ms / AP | 160 px: ms / AP | 288 px: ms / AP |" in table
    assert [line for line in table.splitlines() if line.startswith("| onnxruntime fp32 |")][0].endswith("| - |")
    ax = plot_curve(rows, str(tmp_path / "curve.png")).axes[0]
    drawn = {line.get_label(): list(zip(line.get_xdata(), line.get_ydata())) for line in ax.get_lines()}
    for model_name, sizes in (("eager", (96, 160, 288)), ("onnxruntime fp32", (96, 160))):
        assert drawn[model_name] == [(points[model_name, s]["ms"], points[model_name, s]["AP"]) for s in sizes]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("time per image (ms)", "COCO box AP")
    assert sorted(t.get_text() for t in ax.texts) == sorted(["96", "160", "288", "96", "160"])  # sizes labelled
    assert cv2.imread(str(tmp_path / "curve.png")) is not None


def test_speed_accuracy_has_an_eager_row_per_fast_path_dtype(eager):
    from retina_plugin.experiments.speed_accuracy import eager_models

    cfg, model = eager
    rows = eager_models(model, ["float32", "bfloat16"])
    assert list(rows) == ["eager fp32 (fast path)", "eager bf16 (fast path)"]
    fp32, bf16 = rows.values()
    # The model itself stays float32; the bfloat16 row is a copy with its own folded weights.
    assert fp32 is model and model.inference_dtype == "float32" and bf16.inference_dtype == "bfloat16"
    inputs = mapped_test_images(cfg, "tiny_shapes_val", 0, 2)
    with torch.no_grad():
        a = [o["instances"] for o in fp32(inputs)]
        b = [o["instances"] for o in bf16(inputs)]
    assert all(len(x) > 0 for x in a)
    assert any(detection_differences(x, y) for x, y in zip(a, b))  # really another dtype
    assert all(y.scores.dtype == torch.float32 and y.pred_boxes.tensor.dtype == torch.float32 for y in b)
    alone = copy.deepcopy(model)
    assert eager_models(alone, ["bfloat16"]) == {"eager bf16 (fast path)": alone} and alone.inference_dtype == "bfloat16"
    with pytest.raises(ValueError, match="no INFERENCE_DTYPE"):
        eager_models(torch.nn.Linear(1, 1), ["bfloat16"])


def test_openvino_bf16_runs_only_where_the_cpu_has_bf16_and_loses_a_bounded_ap(eager, fp32_engines, trained_tiny,
                                                                               tmp_path, monkeypatch):
    _require("openvino")
    import shutil

    from retina_plugin.deploy import build as build_module
    from retina_plugin.utils.cpu_features import native_bfloat16_flags

    cfg, model = eager
    # A CPU without bf16 units: refused before anything is built, naming the flags.
    monkeypatch.setattr(build_module, "native_bfloat16_flags", lambda: [])
    with pytest.raises(EngineError, match="a bf16 engine needs a CPU with amx_bf16 or avx512_bf16"):
        build_engine(model, cfg, str(tmp_path / "refused"), "openvino", "bf16")
    assert not (tmp_path / "refused" / "engine.json").exists()
    monkeypatch.undo()
    # An engine made on a bf16 CPU and moved here: the same OpenVINO model, run at bf16.
    moved = tmp_path / "moved"
    shutil.copytree(fp32_engines["openvino"], moved)
    metadata = json.loads((moved / "engine.json").read_text())
    (moved / "engine.json").write_text(json.dumps(dict(metadata, precision="bf16")))
    if not native_bfloat16_flags():
        # OpenVINO would fall back to f32 without a word: the engine refuses instead.
        with pytest.raises(EngineError, match="a bf16 engine, and OpenVINO would run it in f32 here"):
            load_engine(str(moved))
        return
    assert load_engine(str(moved)).precision == "bf16"
    cfg, weights = trained_tiny
    output = tmp_path / "bf16"
    export_main(["--config-file", str(TINY_CONFIG), "--format", "openvino", "--precision", "bf16",
                 "--output", str(output), *TRAINED_TINY_OPTS, "MODEL.WEIGHTS", weights])
    verification = json.loads((output / "engine.json").read_text())["verification"]
    assert verification["passed"] and verification["eager"]["AP"] > 5 and verification["ap_drop"] <= 1.0
