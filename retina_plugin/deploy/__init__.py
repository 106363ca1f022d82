"""
Deployment: standalone export (TorchScript, ONNX with NMS inside) and engines (ONNX Runtime,
OpenVINO, TensorRT; fp32, fp16, int8) that run behind FocalRetinaNet's own pre- and
post-processing, with ``EnginePredictor``, detectron2's DefaultPredictor contract.
"""
from .engines import EngineError, InputProfile, available_backends, load_engine
from .predictor import EnginePredictor, build_engine_model

__all__ = [
    "EngineError",
    "InputProfile",
    "available_backends",
    "load_engine",
    "EnginePredictor",
    "build_engine_model",
]
