"""
What the weights of some modules are now, cheaply: state derived from a model's weights (the
folded inference copy, an attached engine) records a :class:`WeightsVersion` when it is made
and compares it with the model's current one before each use.

A parameter or buffer counts as changed when it is another tensor (a module replaced, ``.to()``
of a child, ``p.data = ...``) or when torch's version counter moved (any in-place write that
autograd tracks: ``load_state_dict`` of any module around or inside the model,
``p.copy_(...)`` under ``no_grad``, ``torch.nn.init``, ``AveragedModel.update_parameters``,
an optimizer step). Writes through ``p.data`` (``p.data.copy_(...)``) are the one thing torch
does not count: they bypass the version counter by design. After such writes, call
``FocalRetinaNet.prepare_for_inference(rebuild=True)``.
"""
from typing import List, Sequence, Tuple

from torch import Tensor, nn

__all__ = ["WeightsVersion"]


def _state_tensors(modules: Sequence[nn.Module]) -> List[Tensor]:
    tensors = []
    for module in modules:
        tensors.extend(module.parameters())
        tensors.extend(module.buffers())
    return tensors


def _identity(tensor: Tensor) -> Tuple:
    return (tensor.data_ptr(), tensor.dtype, tensor.device, tuple(tensor.shape), tensor._version)


class WeightsVersion:
    """
    The identity and in-place version of every parameter and buffer of ``modules``;
    ``matches(modules)`` says whether they are still the same. It keeps the recorded tensors'
    storages alive (as detached aliases), so that a new tensor can never reuse a recorded
    address and pass for an old one.
    """

    def __init__(self, modules: Sequence[nn.Module]):
        tensors = _state_tensors(modules)
        self._aliases = [t.detach() for t in tensors]
        self._identities = [_identity(t) for t in tensors]

    def matches(self, modules: Sequence[nn.Module]) -> bool:
        tensors = _state_tensors(modules)
        if len(tensors) != len(self._identities):
            return False
        return all(_identity(t) == recorded for t, recorded in zip(tensors, self._identities))

