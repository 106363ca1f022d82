"""
Mixed-precision training on CPU and GPU (``SOLVER.AMP.ENABLED`` with ``SOLVER.AMP.PRECISION``).

detectron2's AMPTrainer asserts CUDA and always scales the gradients, as float16 needs. bfloat16
has float32's exponent range: it needs no grad scaler, and CPUs with AMX or AVX512-BF16 run it
natively. Where bfloat16 would be emulated (AVX2-only CPUs) it is slower than float32, so
``"auto"`` trains in float32 there. The losses stay float32 under autocast (modeling/losses.py).
"""
import logging
import time
from typing import Iterable, Optional

import torch

from detectron2.engine import AMPTrainer, SimpleTrainer

from ..config_domains import AMP_PRECISIONS
from ..utils.cpu_features import NATIVE_BFLOAT16_CPU_FLAGS, cpu_flags, native_bfloat16_flags

__all__ = ["resolve_amp_precision", "MixedPrecisionTrainer", "build_step_trainer"]

logger = logging.getLogger(__name__)


def resolve_amp_precision(device: str, precision: str, flags: Optional[Iterable[str]] = None,
                          key: str = "SOLVER.AMP.PRECISION") -> Optional[torch.dtype]:
    """
    The autocast dtype that ``precision`` ("auto", "bfloat16" or "float16") means on ``device``,
    or None for float32 (``"auto"`` on a CPU without native bfloat16). ``flags``: the CPU's
    flags (default: :func:`cpu_flags`). The choice and its reason go to the log.
    """
    if precision not in AMP_PRECISIONS:
        raise ValueError(f"{key} {precision!r}: expected one of {', '.join(map(repr, AMP_PRECISIONS))}")
    device_type = torch.device(device).type
    if device_type == "cuda":
        if precision == "auto":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = getattr(torch, precision)
        logger.info(f"Mixed precision: {dtype} autocast on {device} ({key} {precision!r})")
        return dtype
    if device_type != "cpu":
        raise ValueError(f"{key} {precision!r}: mixed precision runs on 'cpu' or 'cuda', not {device!r}")
    if precision == "float16":
        raise ValueError(f"{key} 'float16' is for GPUs (with a grad scaler); on a CPU use 'bfloat16' or 'auto'")
    native = native_bfloat16_flags(cpu_flags() if flags is None else flags)
    wanted = " or ".join(NATIVE_BFLOAT16_CPU_FLAGS)
    if native:
        logger.info(f"Mixed precision: torch.bfloat16 autocast on cpu ({key} {precision!r}: the CPU has "
                    f"{', '.join(native)})")
        return torch.bfloat16
    if precision == "auto":
        logger.info(f"Mixed precision: none, float32 on cpu ({key} 'auto': the CPU has no {wanted} flag, "
                    "so bfloat16 would be emulated and slower)")
        return None
    logger.warning(f"{key} 'bfloat16' on a CPU without native bfloat16 (no {wanted} flag in /proc/cpuinfo): "
                   "it is emulated and runs slower than float32; 'auto' would train in float32")
    return torch.bfloat16


class MixedPrecisionTrainer(AMPTrainer):
    """
    detectron2's AMPTrainer on CPU or GPU and in either half type: the forward pass under
    ``torch.autocast(device_type, dtype)``; a grad scaler only for float16 (its step unscales
    the gradients before the optimizer's, so that detectron2's clipping, which lives in the
    optimizer, clips true gradients).
    """

    def __init__(self, model, data_loader, optimizer, precision: torch.dtype = torch.bfloat16,
                 device_type: str = "cpu", **kwargs):
        grad_scaler = torch.amp.GradScaler(device_type, enabled=precision == torch.float16)
        super().__init__(model, data_loader, optimizer, grad_scaler=grad_scaler, precision=precision, **kwargs)
        self.device_type = device_type

    def run_step(self):
        assert self.model.training, "[MixedPrecisionTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast(self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses, loss_dict = loss_dict, {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        self.after_backward()
        if self.async_write_metrics:
            self.concurrent_executor.submit(self._write_metrics, loss_dict, data_time, iter=self.iter)
        else:
            self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def load_state_dict(self, state_dict):
        # A checkpoint of another precision (float32, bfloat16) has no grad scaler state: the
        # scaler starts afresh instead of failing the resume.
        if state_dict.get("grad_scaler"):
            super().load_state_dict(state_dict)
            return
        if self.grad_scaler.is_enabled():
            logger.info("The checkpoint has no grad scaler state: float16's grad scaler starts afresh")
        super(AMPTrainer, self).load_state_dict(state_dict)


def build_step_trainer(model, data_loader, optimizer, device: str, amp_enabled: bool, precision: str = "auto",
                       key: str = "SOLVER.AMP.PRECISION") -> SimpleTrainer:
    """
    The loop that runs the training steps: detectron2's SimpleTrainer without AMP or where
    ``precision`` means float32 on ``device``, else :class:`MixedPrecisionTrainer` in its dtype.
    """
    dtype = resolve_amp_precision(device, precision, key=key) if amp_enabled else None
    if dtype is None:
        return SimpleTrainer(model, data_loader, optimizer)
    return MixedPrecisionTrainer(model, data_loader, optimizer, precision=dtype,
                                 device_type=torch.device(device).type)
