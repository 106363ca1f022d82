"""
The inference fast path of FocalRetinaNet: a copy of the backbone and head with every frozen
(or eval-mode) batch norm folded into the conv before it, in channels_last memory format.

detectron2 runs FrozenBatchNorm2d as a separate multiply-add over every activation of the
backbone; folded into the conv's weights and bias it costs nothing. oneDNN's convolutions are
faster on channels_last (NHWC) tensors than on NCHW ones on CPU.

The model owns the copy as explicit state (``FocalRetinaNet.inference_copy``), built by
``prepare_for_inference()`` or the first eval-mode forward. The copy records the
:class:`~retina_plugin.modeling.weights_version.WeightsVersion` of the modules it was folded
from, and the model builds it anew whenever their weights changed since, however they were
changed. The modules themselves run instead where the copy would answer differently: a
submodule in training mode (batch statistics) or a forward hook on any submodule (a hook must
fire, with the module it was registered on).
"""
import copy
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from detectron2.layers import Conv2d as NormConv2d

from .weights_version import WeightsVersion

__all__ = ["FoldedBackboneAndHead", "fold_norm_into_conv", "folded_copy_applies"]


def _foldable_norm(module: nn.Module) -> bool:
    from detectron2.layers import FrozenBatchNorm2d

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


def _folded(module: nn.Module, channels_last: bool, dtype: Optional[torch.dtype]) -> nn.Module:
    fast = copy.deepcopy(module).eval()
    for submodule in fast.modules():
        if isinstance(submodule, NormConv2d):
            fold_norm_into_conv(submodule)  # in float32, before any cast
    fast.requires_grad_(False)
    if dtype is not None:
        fast.to(dtype)
    if channels_last:
        fast.to(memory_format=torch.channels_last)
    return fast


def folded_copy_applies(modules: Sequence[nn.Module]) -> Tuple[bool, str]:
    """
    Whether a folded copy of ``modules`` computes what they compute now, and if not, why:
    not when a submodule is in training mode or has a forward (pre-)hook, or a global module
    hook is registered.
    """
    from torch.nn.modules import module as module_globals

    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks:
        return False, "a global module forward hook is registered"
    for root in modules:
        for name, module in root.named_modules():
            if module.training:
                return False, f"{type(root).__name__} submodule {name!r} is in training mode"
            if module._forward_hooks or module._forward_pre_hooks:
                return False, f"{type(root).__name__} submodule {name!r} has a forward hook"
    return True, ""


class FoldedBackboneAndHead:
    """
    A folded, channels_last copy of a detector's backbone and head, called like the pair:
    ``(images (N, 3, H, W)) -> (features: per level (N, C, Hi, Wi), [logits, deltas])``.
    A plain object, not an ``nn.Module``: the copy is not part of the model's state_dict,
    parameters, or TorchScript export. With ``dtype`` (bfloat16) the copy's weights and
    activations are in that dtype, and what it returns is in the input's dtype again, so that
    decoding, scores and NMS keep float32's precision; None keeps the modules' own dtype.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, head_in_features: List[str],
                 channels_last: bool = True, dtype: Optional[torch.dtype] = None):
        # Recorded before copying: what the copy was folded from.
        self.source_version = WeightsVersion([backbone, head])
        self.backbone = _folded(backbone, channels_last, dtype)
        self.head = _folded(head, channels_last, dtype)
        self.head_in_features = list(head_in_features)
        self.channels_last = channels_last
        self.dtype = dtype

    def is_current(self, backbone: nn.Module, head: nn.Module) -> bool:
        """Whether ``backbone`` and ``head`` still hold the weights this copy was folded from."""
        return self.source_version.matches([backbone, head])

    def __call__(self, images: Tensor) -> Tuple[List[Tensor], List[List[Tensor]]]:
        input_dtype = images.dtype
        if self.dtype is not None:
            images = images.to(self.dtype)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.backbone(images)
        features = [features[f] for f in self.head_in_features]
        predictions = self.head(features)
        if self.dtype is not None and self.dtype != input_dtype:
            features = [f.to(input_dtype) for f in features]
            predictions = [[p.to(input_dtype) for p in per_level] for per_level in predictions]
        return features, predictions
