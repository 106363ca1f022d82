"""
Export of a FocalRetinaNet for deployment, through detectron2's export tooling:

- ``trace``:  ``torch.jit.trace`` of detectron2's :class:`TracingAdapter` (image in, flat
  tensors out); right at every input size, since inference records its sizes dynamically.
- ``script``: ``torch.jit.script`` through detectron2's :func:`scripting_with_instances`.
- ``onnx``:   the trace, exported by ``torch.onnx.export`` (TorchScript-based exporter,
  opset 17, dynamic height and width), run in onnxruntime.

Every exported form maps a (3, H, W) float image in the model's input format (BGR for our
configs), already resized, to detections in that image's pixel coordinates; ``run_*`` return
them as ``{"boxes": (M, 4), "scores": (M,), "classes": (M,)}`` tensors, like :func:`run_eager`,
and :func:`verify_exported` checks them against eager mode, as sets.
"""
import os
from typing import List, Tuple

import torch
from torch import Tensor, nn

from detectron2.export import TracingAdapter, scripting_with_instances
from detectron2.structures import Boxes, Instances

from ..utils.detection_sets import Detections, detection_differences

__all__ = [
    "ONNX_OPSET",
    "FORMATS",
    "METHODS",
    "DETECTION_FIELDS",
    "trace_model",
    "script_model",
    "export_onnx",
    "export_model",
    "load_exported",
    "run_eager",
    "run_exported",
    "resized_copies",
    "verify_exported",
]

ONNX_OPSET = 17
FORMATS = ("torchscript", "onnx")
METHODS = ("tracing", "scripting")
# The fields of the Instances that inference creates, for scripting.
DETECTION_FIELDS = {"pred_boxes": Boxes, "scores": Tensor, "pred_classes": Tensor}
FILE_NAMES = {
    ("torchscript", "tracing"): "model.ts",
    ("torchscript", "scripting"): "model_scripted.ts",
    ("onnx", "tracing"): "model.onnx",
}


def _check_eval(model: nn.Module) -> nn.Module:
    if model.training:
        raise ValueError("Export needs a model in eval mode (call model.eval())")
    return model


def _to_detections(instances: Instances) -> Detections:
    return {
        "boxes": instances.pred_boxes.tensor,
        "scores": instances.scores,
        "classes": instances.pred_classes,
    }


def _detections_tuple(model: nn.Module, inputs) -> Tuple[Tensor, Tensor, Tensor]:
    instances = model(inputs)[0]["instances"]
    return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def _tracing_adapter(model: nn.Module, image: Tensor) -> TracingAdapter:
    # Only the image: "height"/"width" would make the trace rescale to the sample's size.
    # eval(): exporters put the adapter back in its own mode afterwards, which would otherwise
    # switch the model to training.
    return TracingAdapter(_check_eval(model), [{"image": image}], _detections_tuple).eval()


def trace_model(model: nn.Module, image: Tensor) -> torch.jit.ScriptModule:
    """
    ``torch.jit.trace`` of the model on ``image`` (3, H, W). The result maps an image to the
    tuple (boxes (M, 4), scores (M,), classes (M,)).
    """
    adapter = _tracing_adapter(model, image)
    with torch.no_grad():
        return torch.jit.trace(adapter, (image,), check_trace=False)


class _ScriptableAdapter(nn.Module):
    """
    Image (3, H, W) in, (boxes, scores, classes) out, around the scriptable inference path.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        instances = self.model([{"image": image}])[0]
        boxes = instances.pred_boxes
        scores = instances.scores
        classes = instances.pred_classes
        assert boxes is not None and scores is not None and classes is not None
        # Scripted detectron2 models skip detector_postprocess; at the input's own size it
        # only clips and drops empty boxes, done here so that all forms give the same output.
        boxes.clip(instances.image_size)
        keep = boxes.nonempty()
        return boxes.tensor[keep], scores[keep], classes[keep]


def script_model(model: nn.Module) -> torch.jit.ScriptModule:
    """
    ``torch.jit.script`` of the model's inference, with detectron2's Instances patching.
    The result maps an image (3, H, W) to (boxes (M, 4), scores (M,), classes (M,)).
    """
    modes = {m: m.training for m in _check_eval(model).modules()}
    try:
        return scripting_with_instances(_ScriptableAdapter(model).eval(), DETECTION_FIELDS)
    finally:
        # Scripting leaves some containers (e.g. ModuleList) in training mode.
        for module, training in modes.items():
            module.training = training


def export_onnx(model: nn.Module, image: Tensor, path: str) -> None:
    """
    Export the traced model to ONNX at ``path`` with dynamic image height and width.
    Input "image" (3, H, W) float; outputs "boxes" (M, 4), "scores" (M,), "classes" (M,).
    """
    adapter = _tracing_adapter(model, image)
    with torch.no_grad():
        torch.onnx.export(
            adapter,
            (image,),
            path,
            opset_version=ONNX_OPSET,
            dynamo=False,
            input_names=["image"],
            output_names=["boxes", "scores", "classes"],
            dynamic_axes={
                "image": {1: "height", 2: "width"},
                "boxes": {0: "detections"},
                "classes": {0: "detections"},
                "scores": {0: "detections"},
            },
        )


def export_model(
    model: nn.Module, image: Tensor, output_dir: str, fmt: str = "torchscript", method: str = "tracing"
) -> str:
    """
    Write the model to ``output_dir`` as ``fmt`` ("torchscript" or "onnx") made by ``method``
    ("tracing" or "scripting"; ONNX is traced); ``image`` (3, H, W) is the tracing sample.
    Returns the file written.
    """
    if (fmt, method) not in FILE_NAMES:
        raise ValueError(
            f"Cannot export format={fmt!r} with method={method!r}; supported: {sorted(FILE_NAMES)}"
        )
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, FILE_NAMES[(fmt, method)])
    if fmt == "onnx":
        export_onnx(model, image, path)
    elif method == "tracing":
        trace_model(model, image).save(path)
    else:
        script_model(model).save(path)
    return path


def load_exported(path: str):
    """
    An exported model from :func:`export_model`'s file: a TorchScript module, or an
    onnxruntime InferenceSession for ``.onnx`` (needs ``pip install -e .[deploy]``).
    """
    if path.endswith(".onnx"):
        try:
            import onnxruntime
        except ImportError as e:
            raise ImportError(
                f"Running {path} needs onnxruntime: pip install -e .[deploy]"
            ) from e
        return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return torch.jit.load(path)


@torch.no_grad()
def run_eager(model: nn.Module, image: Tensor) -> Detections:
    """
    The model in eager mode on one image (3, H, W), detections in that image's coordinates.
    """
    _check_eval(model)
    return _to_detections(model([{"image": image}])[0]["instances"])


@torch.no_grad()
def run_exported(exported, image: Tensor) -> Detections:
    """
    An exported model (from :func:`export_model` / :func:`load_exported`, or the module
    returned by :func:`trace_model` / :func:`script_model`) on one image (3, H, W).
    """
    if hasattr(exported, "get_inputs"):  # onnxruntime.InferenceSession
        names = [o.name for o in exported.get_outputs()]
        outputs = exported.run(None, {exported.get_inputs()[0].name: image.numpy()})
        outputs = {n: torch.from_numpy(o) for n, o in zip(names, outputs)}
        return {"boxes": outputs["boxes"], "scores": outputs["scores"], "classes": outputs["classes"]}
    boxes, scores, classes = exported(image)
    return {"boxes": boxes, "scores": scores, "classes": classes}


def resized_copies(image: Tensor, scales=(0.5, 0.8, 1.3)) -> List[Tensor]:
    """
    ``image`` (3, H, W) resized by each scale, the aspect ratio changed a little, so that the
    check runs at sizes other than the traced one.
    """
    height, width = image.shape[1:]
    copies = []
    for i, scale in enumerate(scales):
        size = (max(32, round(height * scale)), max(32, round(width * scale * (1.1 if i % 2 else 0.9))))
        copies.append(
            torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        )
    return copies


def verify_exported(
    model: nn.Module, exported, images: List[Tensor], atol: float = 1e-3
) -> List[Tuple[Tuple[int, int], int, List[str]]]:
    """
    Run eager ``model`` and ``exported`` on each image (3, H, W). Returns per image
    ((H, W), number of eager detections, differences); no differences means they agree.
    """
    report = []
    for image in images:
        expected = run_eager(model, image)
        actual = run_exported(exported, image)
        problems = detection_differences(expected, actual, atol=atol, rtol=0.0)
        report.append((tuple(image.shape[1:]), len(expected["scores"]), problems))
    return report
