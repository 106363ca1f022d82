"""
The inference fast path of FocalRetinaNet: a copy of the backbone and head with every frozen
(or eval-mode) batch norm folded into the conv before it, in channels_last memory format.

detectron2 runs FrozenBatchNorm2d as a separate multiply-add over every activation of the
backbone; folded into the conv's weights and bias it costs nothing. oneDNN's convolutions are
faster on channels_last (NHWC) tensors than on NCHW ones on CPU.

The copy is derived from the live modules and rebuilt whenever any of their parameters or
buffers changes (``load_state_dict``, an optimizer step, ``.to(device)``, a replaced
parameter): each tensor's storage address and in-place version counter form the cache key, so
it can never be stale.
"""
import copy
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from detectron2.layers import FrozenBatchNorm2d
from detectron2.layers import Conv2d as NormConv2d
from detectron2.modeling.postprocessing import detector_postprocess

__all__ = [
    "FastInferenceModules",
    "fold_norm_into_conv",
    "fast_inference_forward",
    "inference_features",
]


def _foldable_norm(module: nn.Module) -> bool:
    if isinstance(module, FrozenBatchNorm2d):
        return True
    # BatchNorm in eval mode is the same affine map, from its running statistics.
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_var is not None


def fold_norm_into_conv(conv: NormConv2d) -> bool:
    """
    Fold ``conv.norm`` (FrozenBatchNorm2d or a BatchNorm with running statistics) into
    ``conv.weight`` (O, I, kh, kw) and ``conv.bias`` (O,) in place and drop it; eval-mode
    semantics. Returns whether it folded.
    """
    norm = conv.norm
    if norm is None or not _foldable_norm(norm):
        return False
    with torch.no_grad():
        weight = norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)
        shift = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
        scale = weight * torch.rsqrt(norm.running_var + norm.eps)
        bias = shift - norm.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
        conv.bias = nn.Parameter(bias, requires_grad=False)
    conv.norm = None
    return True


class FastInferenceModules:
    """
    Holds the folded, channels_last copy of ``(backbone, head)``. Not an ``nn.Module``: the
    copy is not part of the model's state_dict, parameters, or TorchScript export.
    """

    def __init__(self, channels_last: bool = True):
        self.channels_last = channels_last
        self._key: Optional[Tuple] = None
        self._modules: Optional[Tuple[nn.Module, nn.Module]] = None

    @staticmethod
    def _state_key(modules: List[nn.Module]) -> Tuple:
        key = [id(m) for m in modules]
        for module in modules:
            for tensor in list(module.parameters()) + list(module.buffers()):
                key.append((tensor.data_ptr(), tensor._version, tensor.dtype, tensor.device))
        return tuple(key)

    def get(self, backbone: nn.Module, head: nn.Module) -> Tuple[nn.Module, nn.Module]:
        """The fast copies of ``backbone`` and ``head``, rebuilt if either changed."""
        key = self._state_key([backbone, head])
        if key != self._key:
            self._modules = None  # free the old copy before building the new one
            self._modules = (self._build(backbone), self._build(head))
            self._key = key
        return self._modules

    def _build(self, module: nn.Module) -> nn.Module:
        fast = copy.deepcopy(module).eval()
        for submodule in fast.modules():
            if isinstance(submodule, NormConv2d):
                fold_norm_into_conv(submodule)
        fast.requires_grad_(False)
        if self.channels_last:
            fast.to(memory_format=torch.channels_last)
        return fast

    def prepare_input(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) batch in the memory format the copy was built for."""
        if self.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def clear(self) -> None:
        self._key = None
        self._modules = None


def inference_features(model: nn.Module, images: Tensor) -> Tuple[List[Tensor], List[List[Tensor]]]:
    """
    The head's inputs and outputs for a preprocessed batch ``images`` (N, 3, H, W): through
    the fast copies of ``model``'s backbone and head where the fast path applies (see
    ``FocalRetinaNet._use_fast_inference``), through the modules themselves otherwise.
    Returns (features: per level (N, C, Hi, Wi), predictions: [logits, deltas] per level).
    """
    if model._use_fast_inference():
        backbone, head = model._fast_modules.get(model.backbone, model.head)
        images = model._fast_modules.prepare_input(images)
    else:
        backbone, head = model.backbone, model.head
    features = backbone(images)
    features = [features[f] for f in model.head_in_features]
    return features, head(features)


def fast_inference_forward(model: nn.Module, fast_modules: FastInferenceModules, batched_inputs):
    """
    The inference branch of ``DenseDetector.forward`` with the fast copies of ``model``'s
    backbone and head; decoding and post-processing are the model's own.
    """
    images = model.preprocess_image(batched_inputs)
    features, predictions = inference_features(model, images.tensor)
    results = model.forward_inference(images, features, predictions)
    processed_results = []
    for results_per_image, input_per_image, image_size in zip(
        results, batched_inputs, images.image_sizes
    ):
        height = input_per_image.get("height", image_size[0])
        width = input_per_image.get("width", image_size[1])
        processed_results.append({"instances": detector_postprocess(results_per_image, height, width)})
    return processed_results
