"""
NaN/inf diagnosis: when a loss term or the gradient turns non-finite, stop with an error that
says which term (or which parameters' gradients), the iteration, the learning rates, the file
names of the batch's images and what looks wrong in it (degenerate / huge / non-finite target
boxes, huge predicted deltas or logits, the gradient norm's recent history, non-finite
parameters), and save the batch with the model state so that :func:`replay` (and
``tools/replay_batch.py``) re-runs exactly that step.

Attached from outside the model (forward hooks and an ``after_backward`` hook of detectron2's
SimpleTrainer), so FocalRetinaNet itself is unchanged.
"""
import collections
import logging
import math
import os
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from ..utils.files import atomic_write

__all__ = [
    "NonFiniteLossError",
    "NonFiniteWatch",
    "describe_batch",
    "replay",
    "saved_config",
    "REPLAY_FILE_PREFIX",
]

REPLAY_FILE_PREFIX = "nonfinite_batch"

# Box deltas whose |dw|, |dh| exceed this are clamped by Box2BoxTransform (log(1000 / 16)):
# predictions that large mean the regression has diverged.
HUGE_DELTA = math.log(1000.0 / 16)
# Logits beyond this give sigmoid(x) == 1 or 0 in float32.
HUGE_LOGIT = 30.0

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """
    A loss term or gradient became NaN/inf; the message is the diagnosis.
    """

    def __init__(self, message: str, replay_file: Optional[str] = None):
        super().__init__(message)
        self.replay_file = replay_file


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _box_findings(batched_inputs: Sequence[Dict]) -> List[str]:
    """
    Degenerate (< 1 px), huge (larger than twice the image) or non-finite target boxes, per image.
    """
    findings = []
    for i, record in enumerate(batched_inputs):
        instances = record.get("instances")
        if instances is None or not instances.has("gt_boxes"):
            continue
        name = record.get("file_name", f"image {i}")
        boxes = instances.gt_boxes.tensor.float()
        if len(boxes) == 0:
            continue
        height, width = instances.image_size
        finite = torch.isfinite(boxes).all(dim=1)
        sizes = boxes[:, 2:] - boxes[:, :2]
        tiny = finite & (sizes.min(dim=1).values < 1)
        huge = finite & ((sizes[:, 0] > 2 * width) | (sizes[:, 1] > 2 * height))
        if (~finite).any():
            findings.append(f"{name}: {int((~finite).sum())} target box(es) with NaN/inf coordinates")
        if tiny.any():
            shown = [[round(v, 2) for v in b] for b in boxes[tiny][:3].tolist()]
            findings.append(
                f"{name}: {int(tiny.sum())} degenerate target box(es) (width or height < 1 px "
                f"after resizing), e.g. {shown}"
            )
        if huge.any():
            findings.append(
                f"{name}: {int(huge.sum())} target box(es) more than twice the image size "
                f"({width}x{height}), e.g. {boxes[huge][0].tolist()}"
            )
    return findings


@torch.no_grad()
def _prediction_findings(model: nn.Module, batched_inputs: Sequence[Dict]) -> List[str]:
    """
    Re-runs backbone and head on the batch: non-finite features, huge logits or deltas, per level.
    """
    m = _unwrap(model)
    if not all(hasattr(m, a) for a in ("preprocess_image", "features_and_predictions", "head_in_features")):
        return []
    images = m.preprocess_image(batched_inputs)
    features, (logits, deltas) = m.features_and_predictions(images.tensor)
    findings = []
    for name, feature in zip(m.head_in_features, features):
        if not torch.isfinite(feature).all():
            findings.append(f"backbone feature {name} has NaN/inf values")
    for level, (lg, dl) in enumerate(zip(logits, deltas)):
        tag = m.head_in_features[level]
        if not torch.isfinite(dl).all() or not torch.isfinite(lg).all():
            findings.append(f"predictions on {tag} have NaN/inf values")
            continue
        max_delta, max_logit = dl.abs().max().item(), lg.abs().max().item()
        if max_delta > HUGE_DELTA:
            findings.append(
                f"huge predicted box deltas on {tag}: max |delta| = {_fmt(max_delta)} (> "
                f"{_fmt(HUGE_DELTA)}, where detectron2 clamps dw/dh): the box regression diverged"
            )
        if max_logit > HUGE_LOGIT:
            findings.append(f"huge classification logits on {tag}: max |logit| = {_fmt(max_logit)}")
    return findings


def _parameter_findings(model: nn.Module) -> List[str]:
    bad = [n for n, p in _unwrap(model).named_parameters() if not torch.isfinite(p).all()]
    if not bad:
        return []
    return [
        f"{len(bad)} parameter tensor(s) are already NaN/inf (an earlier update was non-finite, "
        f"e.g. an exploding gradient): {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}"
    ]


def describe_batch(model: nn.Module, batched_inputs: Sequence[Dict]) -> List[str]:
    """
    What looks wrong in this batch and model: a list of findings (empty if nothing stands out).
    """
    findings = _box_findings(batched_inputs) + _parameter_findings(model)
    try:
        findings += _prediction_findings(model, batched_inputs)
    except Exception as e:  # the diagnosis must not hide the original problem
        findings.append(f"(could not re-run the head on the batch: {type(e).__name__}: {e})")
    return findings


# A gradient norm this many times the median of the ones before it is an explosion.
EXPLOSION_FACTOR = 10.0


def _grad_norm_findings(history: Sequence[float]) -> List[str]:
    """
    Whether the last finite gradient norm exploded: compared with the median of the finite
    norms before it (the last one is not its own baseline).
    """
    finite = [g for g in history if math.isfinite(g)]
    if len(finite) < 2:
        return []
    earlier, last = sorted(finite[:-1]), finite[-1]
    median = earlier[len(earlier) // 2] if len(earlier) % 2 else (
        earlier[len(earlier) // 2 - 1] + earlier[len(earlier) // 2]) / 2
    shown = ", ".join(_fmt(g) for g in list(history)[-8:])
    if median > 0 and last > EXPLOSION_FACTOR * median:
        return [f"exploding gradient: total gradient norm of the last iterations {shown} "
                f"(last {_fmt(last / median)}x the median of the ones before); lower "
                "SOLVER.BASE_LR, lengthen SOLVER.WARMUP_ITERS or enable SOLVER.CLIP_GRADIENTS"]
    return [f"gradient norm of the last iterations: {shown} (no explosion)"]


class NonFiniteWatch(HookBase):
    """
    Watches a detectron2 SimpleTrainer (``trainer._trainer`` of DefaultTrainer): the model's
    loss dict after each forward, and (``check_gradients``) the total gradient norm after each
    backward, before the optimizer step could spread NaN/inf into the weights.
    """

    def __init__(self, output_dir: str, cfg_dump: str = "", check_gradients: bool = True,
                 history: int = 20):
        self.output_dir = output_dir
        self.cfg_dump = cfg_dump
        self.check_gradients = check_gradients
        self.grad_norms = collections.deque(maxlen=history)
        self.batch = None

    def attach(self, simple_trainer) -> "NonFiniteWatch":
        simple_trainer.register_hooks([self])
        model = simple_trainer.model
        model.register_forward_pre_hook(self._remember_batch)
        model.register_forward_hook(self._check_losses)
        return self

    def _remember_batch(self, module, args):
        if module.training and args:
            self.batch = args[0]

    def _check_losses(self, module, args, output):
        if not module.training or not isinstance(output, dict):
            return
        bad = {k: v.item() for k, v in output.items() if not torch.isfinite(v).all()}
        if bad:
            good = {k: v.item() for k, v in output.items() if k not in bad}
            what = (
                "non-finite loss: " + ", ".join(f"{k} = {v}" for k, v in bad.items())
                + (" (finite: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in good.items()) + ")"
                   if good else "")
            )
            self._fail(module, what, {k: v.detach() for k, v in output.items()})

    def after_backward(self):
        if not self.check_gradients:
            return
        model = self.trainer.model
        named = [(n, p.grad) for n, p in _unwrap(model).named_parameters() if p.grad is not None]
        if not named:
            return
        norms = torch._foreach_norm([g for _, g in named])
        total = torch.linalg.vector_norm(torch.stack(norms)).item()
        if not math.isfinite(total):
            bad = [n for (n, _), g in zip(named, norms) if not torch.isfinite(g)]
            what = (
                f"non-finite gradient (the losses were finite) in {len(bad)} parameter tensor(s), "
                f"first {', '.join(bad[:5])}"
            )
            self.grad_norms.append(total)
            self._fail(model, what, None)
        self.grad_norms.append(total)

    def _learning_rates(self) -> str:
        optimizer = getattr(self.trainer, "optimizer", None)
        if optimizer is None:
            return "unknown"
        lrs = [g["lr"] for g in optimizer.param_groups]
        if len(set(lrs)) == 1:
            return f"{_fmt(lrs[0])} (all {len(lrs)} parameter groups)"
        return f"{', '.join(_fmt(x) for x in lrs)} (per parameter group)"

    def _fail(self, model: nn.Module, what: str, loss_dict: Optional[Dict[str, torch.Tensor]]):
        iteration = getattr(self.trainer, "iter", -1)
        batch = self.batch or []
        files = [r.get("file_name", "?") for r in batch]
        replay_file = self._save(model, batch, iteration, loss_dict)
        findings = _grad_norm_findings(self.grad_norms) + describe_batch(model, batch)
        keep = "no checkpoint was saved before this iteration"
        last_checkpoint = os.path.join(self.output_dir, "last_checkpoint")
        if os.path.isfile(last_checkpoint):
            with open(last_checkpoint) as f:
                keep = (f"the last good checkpoint is {f.read().strip()} in {self.output_dir} "
                        "(resume with --resume)")
        lines = [
            f"Training stopped at iteration {iteration} (rank {comm.get_rank()}): {what}.",
            f"  learning rate: {self._learning_rates()}",
            f"  images in the batch: {', '.join(files) if files else '(unknown)'}",
            "  what looks wrong:",
            *(f"    - {x}" for x in (findings or ["nothing obvious in the boxes, predictions or "
                                                   "parameters; replay the batch to dig further"])),
            f"  saved the batch and model state to {replay_file}; replay it with "
            f"python tools/replay_batch.py {replay_file}" if replay_file else
            "  (could not save the batch)",
            f"  {keep}.",
        ]
        raise NonFiniteLossError("\n".join(lines), replay_file)

    def _save(self, model, batch, iteration, loss_dict) -> Optional[str]:
        try:
            os.makedirs(self.output_dir, exist_ok=True)
            path = os.path.join(
                self.output_dir, f"{REPLAY_FILE_PREFIX}_iter{iteration:07d}_rank{comm.get_rank()}.pth"
            )
            data = {
                "iteration": iteration,
                "cfg": self.cfg_dump,
                "model": _unwrap(model).state_dict(),
                "batched_inputs": [
                    {k: (v.to("cpu") if hasattr(v, "to") else v) for k, v in r.items()} for r in batch
                ],
                "loss_dict": {k: v.item() for k, v in (loss_dict or {}).items()},
            }
            atomic_write(path, lambda f: torch.save(data, f))
            return path
        except Exception as e:
            logger.error(f"Could not save the non-finite batch: {type(e).__name__}: {e}")
            return None


def saved_config(path: str, data: Optional[Dict] = None, opts: Sequence[str] = ()):
    """
    The training config saved in a replay file (see :class:`NonFiniteWatch`), with ``opts``
    (KEY VALUE pairs) merged.
    """
    from ..config import ConfigError, add_retina_config, merge_overrides
    from detectron2.config import get_cfg

    if data is None:
        data = torch.load(path, map_location="cpu", weights_only=False)
    if not data.get("cfg"):
        raise ConfigError(f"{path}: no config saved in it; give the training config (--config-file)")
    cfg = get_cfg()
    add_retina_config(cfg)
    cfg.merge_from_other_cfg(cfg.load_cfg(data["cfg"]))
    merge_overrides(cfg, opts, "command line")
    return cfg


def replay(path: str, cfg=None):
    """
    Re-run the saved step: rebuild the model from the saved config (or ``cfg``), load the saved
    state, run forward (training mode) and backward on the saved batch.

    Returns ``(loss_dict, grad_norm, findings)``: the loss terms (floats), the total gradient
    norm and :func:`describe_batch`'s findings.
    """
    from detectron2.modeling import build_model

    data = torch.load(path, map_location="cpu", weights_only=False)
    if cfg is None:
        cfg = saved_config(path, data)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    model = build_model(cfg)
    model.load_state_dict(data["model"])
    model.train()
    batch = data["batched_inputs"]
    with EventStorage(data.get("iteration", 0)):  # the model logs scalars while training
        loss_dict = model(batch)
    total = sum(loss_dict.values())
    model.zero_grad()
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).item() if grads else 0.0
    findings = describe_batch(model, batch)
    return {k: v.item() for k, v in loss_dict.items()}, grad_norm, findings
