"""
Deployment engines: the backbone and head of a FocalRetinaNet compiled by ONNX Runtime, OpenVINO
or TensorRT, in fp32, fp16, bf16 (OpenVINO) or int8.

An engine computes only the dense network: a normalized, padded batch (N, 3, H, W) to the
per-level class logits and box deltas. Pre-processing (resize, normalization, padding) and
post-processing (top-k, box decoding, class-wise NMS, rescaling) stay the model's own
(:meth:`FocalRetinaNet.features_and_predictions` calls the engine when one is attached), so
no NMS plugin or custom op is needed on any backend, and batches and any input size inside
the engine's profile work everywhere.

An engine is a folder: ``engine.json`` (how it was made: source config and weights hash,
backend and its version, precision, accepted input sizes, the check against eager mode) and
the backend's file(s). Loading checks all of it: an engine made with another major version of
its backend (for TensorRT: any other version), or fed a batch outside its profile, is refused
with a message that says what to do; one made with another release of the same major version
loads, with a warning naming the command that re-runs its check here.
"""
import importlib
import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from detectron2.utils.logger import log_first_n

from ..utils.cpu_features import NATIVE_BFLOAT16_CPU_FLAGS

__all__ = [
    "ENGINE_FILE",
    "BACKENDS",
    "PRECISIONS",
    "SUPPORTED",
    "EngineError",
    "InputProfile",
    "InferenceEngine",
    "backend_version",
    "version_compatible",
    "available_backends",
    "read_engine_metadata",
    "load_engine",
]

ENGINE_FILE = "engine.json"
BACKENDS = ("onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# backend -> precisions it builds (fp16 on ONNX Runtime's CPU provider has no fast kernels;
# OpenVINO's bf16 is its fp32 model run at bf16 precision, on CPUs with AMX or AVX512-BF16).
SUPPORTED = {
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "fp16", "bf16", "int8"),
    "tensorrt": ("fp32", "fp16", "int8"),
}
# backend -> the Python package that runs it
_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
_INSTALL = {
    "onnxruntime": "pip install -e .[deploy]",
    "openvino": "pip install -e .[deploy]",
    "tensorrt": "pip install tensorrt (a CUDA machine)",
}


class EngineError(RuntimeError):
    """An engine that cannot be built, loaded or run as asked; the message says why."""


class InputProfile:
    """
    The inputs an engine accepts: batch 1..``max_batch``, height and width in
    [``min_size``, ``max_size``] (after padding to the backbone's size divisibility).
    """

    def __init__(self, max_batch: int, min_size: Sequence[int], max_size: Sequence[int]):
        self.max_batch = int(max_batch)
        self.min_size = (int(min_size[0]), int(min_size[1]))
        self.max_size = (int(max_size[0]), int(max_size[1]))
        if self.max_batch < 1 or min(self.min_size) < 1 or any(
            lo > hi for lo, hi in zip(self.min_size, self.max_size)
        ):
            raise EngineError(f"invalid input profile {self.to_dict()}")

    def to_dict(self) -> Dict:
        return {"max_batch": self.max_batch, "min_size": list(self.min_size), "max_size": list(self.max_size)}

    @classmethod
    def from_dict(cls, d: Dict) -> "InputProfile":
        return cls(d["max_batch"], d["min_size"], d["max_size"])

    def problem(self, shape: Sequence[int]) -> str:
        """Why a batch of ``shape`` (N, C, H, W) is outside the profile ("" if inside)."""
        n, _, h, w = shape
        if not 1 <= n <= self.max_batch:
            return f"batch of {n} images (the engine takes 1 to {self.max_batch})"
        if not (self.min_size[0] <= h <= self.max_size[0] and self.min_size[1] <= w <= self.max_size[1]):
            return (f"padded input {h} x {w} (the engine takes heights {self.min_size[0]}..{self.max_size[0]}"
                    f" and widths {self.min_size[1]}..{self.max_size[1]})")
        return ""

    def __repr__(self):
        return f"InputProfile({self.to_dict()})"


def backend_version(backend: str) -> Optional[str]:
    """The installed version of a backend's package, None if it is not installed."""
    try:
        module = importlib.import_module(_PACKAGES[backend])
    except ImportError:
        return None
    version = getattr(module, "__version__", None) or getattr(module, "get_version", lambda: None)()
    return str(version).split("-")[0] if version else "unknown"


# backend -> which versions run an engine made with another one
_COMPATIBILITY = {
    "onnxruntime": "ONNX files run on any release of the same major version",
    "openvino": "OpenVINO IR files run on any release of the same major version",
    "tensorrt": "a TensorRT plan runs only on the exact TensorRT version that built it",
}


def version_compatible(backend: str, made_with: str, installed: str) -> bool:
    """
    Whether an engine made with ``made_with`` runs on ``installed``: ONNX and OpenVINO IR
    files carry their format across releases of one major version; TensorRT plans do not.
    """
    if backend == "tensorrt":
        return made_with == installed
    return made_with.split(".")[0] == installed.split(".")[0]


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def available_backends() -> List[str]:
    """Backends that can run on this machine (installed; TensorRT also needs CUDA)."""
    found = [b for b in BACKENDS if backend_version(b) is not None]
    return [b for b in found if b != "tensorrt" or _cuda_available()]


def read_engine_metadata(path: str) -> Tuple[str, Dict]:
    """(engine folder, its engine.json) from the folder or the json's path."""
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    json_file = os.path.join(directory, ENGINE_FILE)
    if not os.path.isfile(json_file):
        raise EngineError(f"{path}: no {ENGINE_FILE} there; an engine is the folder that "
                          "tools/export_model.py --format onnx|openvino|tensorrt writes")
    with open(json_file) as f:
        try:
            metadata = json.load(f)
        except json.JSONDecodeError as e:
            raise EngineError(f"{json_file}: not valid json ({e})") from None
    for key in ("backend", "backend_version", "precision", "file", "profile", "outputs"):
        if key not in metadata:
            raise EngineError(f"{json_file}: lacks {key!r}")
    return directory, metadata


class InferenceEngine:
    """
    Base of the engines: called like :meth:`FocalRetinaNet.features_and_predictions` with a
    normalized, padded batch (N, 3, H, W) float32; returns (features, [logits, deltas]) per
    level. The engine has no features: the logits stand in for them (the anchors need only
    their sizes).
    """

    def __init__(self, directory: str, metadata: Dict):
        self.directory = directory
        self.metadata = metadata
        self.backend = metadata["backend"]
        self.precision = metadata["precision"]
        self.profile = InputProfile.from_dict(metadata["profile"])
        self.levels = list(metadata["outputs"]["levels"])

    def __call__(self, images: Tensor) -> Tuple[List[Tensor], List[List[Tensor]]]:
        problem = self.profile.problem(tuple(images.shape))
        if problem:
            raise EngineError(
                f"{self.directory}: a {problem} is outside this engine's input profile; export "
                "again with a larger --max-size / --max-batch (tools/export_model.py)"
            )
        outputs = self.run(images.detach().float().contiguous())
        levels = len(self.levels)
        logits, deltas = outputs[:levels], outputs[levels:]
        return list(logits), [list(logits), list(deltas)]

    def run(self, images: Tensor) -> List[Tensor]:
        """The network's outputs: logits of each level, then deltas of each level."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.directory!r}, {self.backend} {self.precision})"


def _output_names(metadata: Dict) -> List[str]:
    levels = metadata["outputs"]["levels"]
    return [f"logits_{level}" for level in levels] + [f"deltas_{level}" for level in levels]


class OnnxRuntimeEngine(InferenceEngine):
    """ONNX Runtime, CPU provider (CUDA provider when available and the engine asks for it)."""

    def __init__(self, directory: str, metadata: Dict, threads: Optional[int] = None):
        super().__init__(directory, metadata)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if metadata.get("device") == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = onnxruntime.InferenceSession(
            os.path.join(directory, metadata["file"]), options, providers=providers
        )
        self.output_names = _output_names(metadata)

    def run(self, images: Tensor) -> List[Tensor]:
        outputs = self.session.run(self.output_names, {"images": images.cpu().numpy()})
        return [torch.from_numpy(o) for o in outputs]


class OpenVINOEngine(InferenceEngine):
    """OpenVINO on the CPU, at the engine's precision (f32, f16, bf16 or an int8 model)."""

    def __init__(self, directory: str, metadata: Dict, threads: Optional[int] = None):
        super().__init__(directory, metadata)
        import openvino

        core = openvino.Core()
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            # OpenVINO runs fp32 models in bf16 on CPUs with AMX unless told otherwise.
            "INFERENCE_PRECISION_HINT": {"fp16": "f16", "bf16": "bf16"}.get(self.precision, "f32"),
            # Pinned OpenVINO threads slowed the torch work of the same process (pre- and
            # post-processing, an eager model beside the engine) by up to 8x.
            "ENABLE_CPU_PINNING": False,
        }
        model = core.read_model(os.path.join(directory, metadata["file"]))
        self.compiled = core.compile_model(model, "CPU", config)
        runs_in = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        if self.precision == "bf16" and runs_in != openvino.Type.bf16:
            # OpenVINO falls back to f32 without a word where the CPU has no bf16 units.
            raise EngineError(
                f"{directory}: a bf16 engine, and OpenVINO would run it in {runs_in.get_type_name()} "
                f"here: this CPU has no "
                f"{' or '.join(NATIVE_BFLOAT16_CPU_FLAGS)} flag. Use an fp32 or int8 engine on this machine")
        self.request = self.compiled.create_infer_request()
        self.output_names = _output_names(metadata)

    def run(self, images: Tensor) -> List[Tensor]:
        results = self.request.infer({"images": images.cpu().numpy()})
        by_name = {output.get_any_name(): value for output, value in results.items()}
        return [torch.from_numpy(np.array(by_name[n])) for n in self.output_names]


class TensorRTEngine(InferenceEngine):
    """TensorRT on the GPU: a serialized plan built for this TensorRT version and GPU."""

    def __init__(self, directory: str, metadata: Dict, threads: Optional[int] = None):
        super().__init__(directory, metadata)
        if not _cuda_available():
            raise EngineError(f"{directory}: a TensorRT engine needs a CUDA GPU; none is available")
        import tensorrt

        logger = tensorrt.Logger(tensorrt.Logger.WARNING)
        with open(os.path.join(directory, metadata["file"]), "rb") as f:
            self.engine = tensorrt.Runtime(logger).deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise EngineError(f"{directory}: TensorRT could not deserialize {metadata['file']} "
                              "(made for another GPU or TensorRT build); export it again here")
        self.context = self.engine.create_execution_context()
        self.output_names = _output_names(metadata)

    def run(self, images: Tensor) -> List[Tensor]:
        images = images.to("cuda", torch.float32).contiguous()
        self.context.set_input_shape("images", tuple(images.shape))
        self.context.set_tensor_address("images", images.data_ptr())
        outputs = []
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, device="cuda", dtype=torch.float32)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineError(f"{self.directory}: TensorRT failed to run a batch of {tuple(images.shape)}")
        return outputs


_ENGINE_CLASSES = {"onnxruntime": OnnxRuntimeEngine, "openvino": OpenVINOEngine, "tensorrt": TensorRTEngine}


def load_engine(path: str, threads: Optional[int] = None, refuse_failed: bool = True) -> InferenceEngine:
    """
    The engine in folder ``path`` (or named by its engine.json). Raises :class:`EngineError`
    when its backend is missing here or has another major version than the one it was made
    with, and (unless not ``refuse_failed``: its check is being run again) when it failed its
    check against eager mode.
    """
    directory, metadata = read_engine_metadata(path)
    backend = metadata["backend"]
    if backend not in _ENGINE_CLASSES:
        raise EngineError(f"{directory}: unknown backend {backend!r} (known: {list(BACKENDS)})")
    verification = metadata.get("verification")
    if refuse_failed and verification is not None and not verification.get("passed", False):
        raise EngineError(
            f"{directory} failed its check against eager mode when it was made "
            f"({verification.get('kind', 'check')}; see {ENGINE_FILE}); export it again, e.g. "
            "with more --calibration-images or another --precision"
        )
    installed = backend_version(backend)
    if installed is None:
        raise EngineError(f"{directory}: a {backend} engine, but {backend} is not installed here "
                          f"({_INSTALL[backend]})")
    made_with = metadata["backend_version"]
    if installed != made_with:
        if not version_compatible(backend, made_with, installed):
            raise EngineError(
                f"{directory} was made with {backend} {made_with}, and this machine has {backend} "
                f"{installed}: {_COMPATIBILITY[backend]}. Export it again here with "
                f"tools/export_model.py (the source config and weights are named in {ENGINE_FILE})")
        checked_with = (metadata.get("verification") or {}).get("backend_version")
        if checked_with != installed:
            log_first_n(logging.WARNING, f"{directory} was made with {backend} {made_with} and runs on "
                        f"{installed} here (the same major release: its file format is the same). "
                        f"Re-run its check with: python tools/export_model.py --verify {directory}",
                        n=1, key="message")
    return _ENGINE_CLASSES[backend](directory, metadata, threads)
