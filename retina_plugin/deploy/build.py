"""
Building deployment engines (:mod:`retina_plugin.deploy.engines`) from a FocalRetinaNet: the
dense network (the folded backbone and head of the fast path) exported to ONNX with dynamic
batch, height and width, then compiled by the backend at the chosen precision. int8 is
post-training static quantization calibrated on real images: ``onnxruntime.quantization``
(QDQ, per-channel weights), NNCF for OpenVINO, and for TensorRT the same QDQ graph (explicit
quantization, no calibrator plugin).
"""
import contextlib
import datetime
import json
import logging
import os
import shutil
import tempfile
from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..config import config_value
from ..utils.cpu_features import NATIVE_BFLOAT16_CPU_FLAGS, native_bfloat16_flags
from .engines import (
    ENGINE_FILE,
    SUPPORTED,
    EngineError,
    InputProfile,
    backend_version,
)

__all__ = [
    "ONNX_OPSET",
    "MODEL_KEYS",
    "DenseNetwork",
    "export_dense_onnx",
    "default_profile",
    "model_key_values",
    "build_engine",
    "write_engine_metadata",
]

ONNX_OPSET = 17
# Config keys an engine's outputs depend on, outside the network: the model that runs with it
# must have the same (normalization before it; anchors, box coding and classes after it).
MODEL_KEYS = (
    "MODEL.PIXEL_MEAN",
    "MODEL.PIXEL_STD",
    "INPUT.FORMAT",
    "MODEL.RETINANET.NUM_CLASSES",
    "MODEL.RETINANET.IN_FEATURES",
    "MODEL.RETINANET.BBOX_REG_WEIGHTS",
    "MODEL.ANCHOR_GENERATOR.SIZES",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
    "MODEL.ANCHOR_GENERATOR.OFFSET",
)


class DenseNetwork(nn.Module):
    """
    The folded backbone and head of a FocalRetinaNet as one module: normalized, padded images
    (N, 3, H, W) to the flat tuple (logits of each level, then deltas of each level).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        folded = model.prepare_for_inference()
        self.backbone = folded.backbone
        self.head = folded.head
        self.in_features = list(model.head_in_features)

    def forward(self, images: Tensor):
        features = self.backbone(images)
        logits, deltas = self.head([features[f] for f in self.in_features])
        return tuple(logits) + tuple(deltas)


def export_dense_onnx(model: nn.Module, path: str, sample: Tensor) -> None:
    """
    Write the dense network of ``model`` (eval mode) to ONNX: input "images" (N, 3, H, W) with
    dynamic N, H, W; outputs "logits_<level>" (N, A*K, Hi, Wi) and "deltas_<level>".
    ``sample``: a normalized, padded batch to trace with.
    """
    if model.training:
        raise EngineError("export needs a model in eval mode (call model.eval())")
    network = DenseNetwork(model).eval()
    levels = network.in_features
    names = [f"logits_{level}" for level in levels] + [f"deltas_{level}" for level in levels]
    axes = {"images": {0: "batch", 2: "height", 3: "width"}}
    axes.update({name: {0: "batch", 2: f"height_{name}", 3: f"width_{name}"} for name in names})
    with torch.no_grad():
        torch.onnx.export(
            network, (sample.contiguous(),), path, opset_version=ONNX_OPSET, dynamo=False,
            input_names=["images"], output_names=names, dynamic_axes=axes,
        )


def default_profile(cfg, max_batch: int = 16) -> InputProfile:
    """
    Batch up to ``max_batch``; any size up to the config's largest test image
    (INPUT.MAX_SIZE_TEST on both sides, padded to the backbone's 32-pixel divisibility).
    """
    side = -(-max(cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST) // 32) * 32
    return InputProfile(max_batch, (32, 32), (side, side))


def model_key_values(cfg) -> Dict:
    """The :data:`MODEL_KEYS` of ``cfg``, json-ready."""
    return {key: json.loads(json.dumps(config_value(cfg, key))) for key in MODEL_KEYS}


def _has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


@contextlib.contextmanager
def _quiet_root_logger():
    # onnxruntime.quantization logs a line per norm constant it does not quantize per
    # channel, through the root logger.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader over a list of batches."""

    def __init__(self, batches: Sequence[np.ndarray]):
        self._batches = iter(batches)

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {"images": batch}


def _quantize_onnx(fp32_path: str, int8_path: str, batches: Sequence[np.ndarray], symmetric: bool) -> Dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Without VNNI, x86 int8 (u8 x s8) products can saturate; 7-bit weights avoid it.
    reduce_range = not _has_vnni()
    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared, int8_path, _CalibrationReader(batches), quant_format=QuantFormat.QDQ,
            per_channel=True, reduce_range=reduce_range,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
        )
    return {"method": "onnxruntime.quantization QDQ, per-channel weights, min-max calibration",
            "reduce_range": reduce_range}


def _openvino_model(fp32_onnx: str, output_dir: str, precision: str, batches) -> Dict:
    import openvino

    model = openvino.convert_model(fp32_onnx)
    info = {}
    if precision == "int8":
        import nncf

        model = nncf.quantize(model, nncf.Dataset(list(batches)), subset_size=len(batches),
                              preset=nncf.QuantizationPreset.MIXED)
        info = {"method": "NNCF post-training quantization (mixed preset)"}
    openvino.save_model(model, os.path.join(output_dir, "model.xml"), compress_to_fp16=precision == "fp16")
    return info


def _tensorrt_plan(onnx_path: str, plan_path: str, precision: str, profile: InputProfile,
                   typical_size: Sequence[int]) -> Dict:
    if not torch.cuda.is_available():
        raise EngineError("a TensorRT engine is built on the GPU it will run on; no CUDA GPU here")
    import tensorrt

    logger = tensorrt.Logger(tensorrt.Logger.WARNING)
    builder = tensorrt.Builder(logger)
    network = builder.create_network(0)
    parser = tensorrt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    for flag in {"fp16": ["FP16"], "int8": ["INT8", "FP16"]}.get(precision, []):
        if hasattr(tensorrt.BuilderFlag, flag):
            config.set_flag(getattr(tensorrt.BuilderFlag, flag))
    optimization = builder.create_optimization_profile()
    h, w = (min(max(s, lo), hi) for s, lo, hi in zip(typical_size, profile.min_size, profile.max_size))
    optimization.set_shape(
        "images", (1, 3, *profile.min_size), (1, 3, h, w), (profile.max_batch, 3, *profile.max_size)
    )
    config.add_optimization_profile(optimization)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"TensorRT could not build a {precision} engine from {onnx_path}")
    with open(plan_path, "wb") as f:
        f.write(plan)
    return {"optimization_profile": {"opt": [1, 3, h, w]}}


def build_engine(
    model: nn.Module,
    cfg,
    output_dir: str,
    backend: str,
    precision: str = "fp32",
    profile: Optional[InputProfile] = None,
    calibration: Optional[Iterable[Tensor]] = None,
    source: Optional[Dict] = None,
) -> Dict:
    """
    Build an engine of ``model`` (eval mode, weights loaded) in ``output_dir`` and write its
    engine.json; returns that metadata.

    Args:
        cfg: the model's yaml config (stored, and its :data:`MODEL_KEYS` checked at load).
        backend, precision: see :data:`SUPPORTED`.
        profile: accepted input sizes (default :func:`default_profile`).
        calibration: for int8, normalized padded batches (1, 3, H, W) of real images.
        source: what to record about where the model came from (config file, weights, ...).
    """
    if backend not in SUPPORTED:
        raise EngineError(f"unknown backend {backend!r}; one of {list(SUPPORTED)}")
    if precision not in SUPPORTED[backend]:
        raise EngineError(f"{backend} does not build {precision} engines here; it builds {list(SUPPORTED[backend])}")
    version = backend_version(backend)
    if version is None:
        raise EngineError(f"{backend} is not installed (pip install -e .[deploy], or tensorrt on a CUDA machine)")
    if precision == "bf16" and not native_bfloat16_flags():
        raise EngineError(f"a bf16 engine needs a CPU with {' or '.join(NATIVE_BFLOAT16_CPU_FLAGS)} (this one has "
                          "neither: OpenVINO would run it in f32); build fp32, fp16 or int8 here")
    batches = [b.detach().cpu().float().numpy() for b in (calibration or [])]
    if precision == "int8" and not batches:
        raise EngineError("an int8 engine needs calibration images (--calibration-dataset)")
    profile = profile or default_profile(cfg)
    os.makedirs(output_dir, exist_ok=True)
    side = min(profile.max_size)
    sample = batches[0] if batches else np.zeros((1, 3, min(side, 256), min(side, 256)), np.float32)
    info: Dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32_onnx = os.path.join(tmp, "model.onnx")
        export_dense_onnx(model, fp32_onnx, torch.from_numpy(sample))
        if backend == "onnxruntime":
            file = "model.onnx"
            if precision == "int8":
                info = _quantize_onnx(fp32_onnx, os.path.join(output_dir, file), batches, symmetric=False)
            else:
                shutil.copyfile(fp32_onnx, os.path.join(output_dir, file))
        elif backend == "openvino":
            file = "model.xml"
            info = _openvino_model(fp32_onnx, output_dir, precision, batches)
        else:
            file = "model.plan"
            onnx_path = fp32_onnx
            if precision == "int8":
                onnx_path = os.path.join(tmp, "model_int8.onnx")
                info = _quantize_onnx(fp32_onnx, onnx_path, batches, symmetric=True)
            typical = (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
            info.update(_tensorrt_plan(onnx_path, os.path.join(output_dir, file), precision, profile, typical))
    from .. import __version__

    metadata = {
        "format_version": 1,
        "backend": backend,
        "backend_version": version,
        "precision": precision,
        "file": file,
        "device": "cuda" if backend == "tensorrt" else "cpu",
        "profile": profile.to_dict(),
        "outputs": {
            "levels": list(model.head_in_features),
            "num_anchors": model.head.num_anchors,
            "num_classes": model.num_classes,
        },
        "model_keys": model_key_values(cfg),
        "source": dict(source or {}, config=cfg.dump()),
        "calibration": dict(info, images=len(batches)) if precision == "int8" else None,
        "build": info if precision != "int8" else {},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "retina_plugin": __version__,
    }
    write_engine_metadata(output_dir, metadata)
    return metadata


def write_engine_metadata(output_dir: str, metadata: Dict) -> None:
    """engine.json in ``output_dir``, written atomically."""
    from ..utils.files import atomic_write

    atomic_write(os.path.join(output_dir, ENGINE_FILE),
                 lambda f: json.dump(metadata, f, indent=1), mode="w")
