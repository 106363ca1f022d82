"""
The measurement helpers behind tools/benchmark.py and tools/export_model.py: detections
compared as sets, interleaved timing, the benchmark's models sharing their weights.
"""
import time

import torch

from detectron2.structures import Boxes, Instances

from retina_plugin.experiments import speed_benchmark
from retina_plugin.utils.detection_sets import detection_differences, same_detections
from retina_plugin.utils.timing import median_latency_ms, p90, time_interleaved

from .conftest import TINY_CONFIG, load_cfg


def _instances(boxes, scores, classes):
    return Instances((100, 100), pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                     scores=torch.tensor(scores), pred_classes=torch.tensor(classes))


def test_detections_are_compared_as_sets():
    a = _instances([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 9, 9]], [0.9, 0.5, 0.5], [0, 1, 1])
    # Same set, the near-tied pair in the other order.
    b = _instances([[0, 0, 10, 10], [1, 1, 9, 9], [5, 5, 20, 20]], [0.9, 0.5, 0.5], [0, 1, 1])
    assert same_detections(a, b)
    moved = _instances([[0, 0, 10, 10], [1, 1, 9, 9], [5, 5, 20, 21]], [0.9, 0.5, 0.5], [0, 1, 1])
    assert "1 of 3 detections have no match" in detection_differences(a, moved)[0]
    other_class = _instances([[0, 0, 10, 10], [1, 1, 9, 9], [5, 5, 20, 20]], [0.9, 0.5, 0.5], [0, 1, 2])
    assert not same_detections(a, other_class)
    assert detection_differences(a, b[:2]) == ["2 detections instead of 3"]
    # Within the tolerance: equal.
    close = _instances([[0, 0, 10.005, 10], [5, 5, 20, 20], [1, 1, 9, 9]], [0.9004, 0.5, 0.5], [0, 1, 1])
    assert same_detections(a, close) and not same_detections(a, close, atol=1e-4, rtol=0)


def test_interleaved_timing_runs_every_runner_each_round():
    calls = []

    def sleeping(name, seconds):
        return lambda: (calls.append(name), time.sleep(seconds))

    times, faults = time_interleaved({"a": sleeping("a", 0.02), "b": sleeping("b", 0)}, 3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    # Times in ms, per call: a sleep is a lower bound whatever the machine's load.
    assert [len(t) for t in times.values()] == [3, 3] and all(t >= 20 for t in times["a"])
    assert set(faults) == {"a", "b"}
    calls.clear()
    assert median_latency_ms(sleeping("c", 0.01), 3, warmup=2) >= 10 and len(calls) == 5
    assert p90([5, 1, 3, 2, 4, 6, 7, 8, 9, 10]) == 9


def test_benchmark_models_share_weights_and_give_the_same_detections():
    cfg = load_cfg(TINY_CONFIG, ["MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [64], [128], [256], [512]]"])
    names = speed_benchmark.MODELS[:3]
    models = speed_benchmark.build_models(cfg, (96, 128), names)
    inputs = speed_benchmark.make_inputs((96, 128), 2, cfg.MODEL.RETINANET.NUM_CLASSES)
    fast, reference, detectron2 = (models[n] for n in names)
    for key, value in detectron2.state_dict().items():
        assert torch.equal(fast.state_dict()[key], value) and torch.equal(reference.state_dict()[key], value)
    assert fast.fast_inference and not reference.fast_inference
    detections = [speed_benchmark.runner(n, models[n], inputs, "inference")()[0]["instances"] for n in names]
    # calibrate_head makes random weights give detections to compare.
    assert len(detections[2]) > 0
    assert same_detections(detections[0], detections[2]) and same_detections(detections[1], detections[2])
    step = speed_benchmark.runner(names[0], fast, inputs, "train")
    before = fast.head.cls_score.weight.detach().clone()
    step()
    assert not torch.equal(before, fast.head.cls_score.weight)


def test_precision_rows_run_each_dtype_on_one_models_weights():
    cfg = load_cfg(TINY_CONFIG, ["MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [64], [128], [256], [512]]"])
    runs = speed_benchmark.precision_runners(cfg, (64, 96), ["float32", "bfloat16"])
    assert list(runs) == ["float32 inference", "float32 train", "bfloat16 inference", "bfloat16 train"]
    float32, bfloat16 = (runs[f"{p} inference"]()[0]["instances"] for p in ("float32", "bfloat16"))
    assert len(float32) > 0 and bfloat16.scores.dtype == torch.float32  # post-processing stays float32
    assert not same_detections(float32, bfloat16)  # the fast path's copy ran in bfloat16
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: seen.append(output.dtype) if isinstance(module, torch.nn.Conv2d) else None)
    try:
        convs = {}
        for precision in ("float32", "bfloat16"):
            seen.clear()
            runs[f"{precision} train"]()
            convs[precision] = set(seen)
    finally:
        handle.remove()
    assert convs == {"float32": {torch.float32}, "bfloat16": {torch.bfloat16}}  # the training step's autocast


def test_the_engine_table_has_openvino_bf16_only_where_the_cpu_runs_bfloat16(monkeypatch):
    import retina_plugin.deploy.engines as engines

    monkeypatch.setattr(engines, "available_backends", lambda: ["onnxruntime", "openvino", "tensorrt"])
    with_bfloat16 = speed_benchmark.engine_variants("cpu", cpu_flags={"avx2", "avx512_bf16"})
    assert ("openvino", "bf16") in with_bfloat16 and ("openvino", "int8") in with_bfloat16
    # Where OpenVINO would run it in f32 the build refuses it: no row.
    emulated = speed_benchmark.engine_variants("cpu", cpu_flags={"avx2", "avx512f"})
    assert emulated == [v for v in with_bfloat16 if v != ("openvino", "bf16")]
    assert all(b == "tensorrt" for b, _ in speed_benchmark.engine_variants("cuda", cpu_flags={"amx_bf16"}))
