"""
The sigmoid focal loss as one autograd function with a closed-form gradient, computed in
cache-sized chunks.

Autograd through :func:`~retina_plugin.modeling.losses.sigmoid_focal_loss` (or torchvision's)
keeps about ten full-size intermediates alive for the backward pass and runs each
element-wise step as a separate pass over memory. Here the forward pass walks the logits once,
chunk by chunk, and computes the loss and, when the logits need a gradient, the gradient too
(they share the sigmoid, softplus and power); it keeps only that gradient, which the backward
pass scales by the incoming gradient in place. The targets can also be given as class labels
(M,), which never materialises the (M, K) one-hot matrix: every element is computed as a
negative, then the few positives (one per foreground anchor) are overwritten.

Same values and gradients as ``sigmoid_focal_loss``, to float32 rounding.
"""
import math

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["fused_sigmoid_focal_loss", "fused_sigmoid_focal_loss_from_labels"]

# Elements per chunk. On the CPU the few float32 temporaries of one chunk stay in a core's L2
# cache; on a GPU each chunk costs a dozen kernel launches, so chunks only bound the memory.
_CHUNK_ELEMENTS = 1 << 15
_GPU_CHUNK_ELEMENTS = 1 << 22


def fused_sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """
    Same signature and values as :func:`retina_plugin.modeling.losses.sigmoid_focal_loss`
    (and ``torchvision.ops.sigmoid_focal_loss``).

    Args:
        inputs: logits, any shape.
        targets: same shape, in [0, 1] (1 positive, 0 negative).
        alpha, gamma, reduction: see ``sigmoid_focal_loss``.
    """
    _check_reduction(reduction)
    if targets.shape != inputs.shape:
        raise ValueError(
            f"targets must have the shape of inputs {tuple(inputs.shape)}, got {tuple(targets.shape)}"
        )
    # 0/1 targets (the detector's case) take the shorter closed form.
    mode = "binary" if bool(((targets == 0) | (targets == 1)).all()) else "soft"
    return _FocalLoss.apply(inputs, targets, mode, float(alpha), float(gamma), reduction)


def fused_sigmoid_focal_loss_from_labels(
    inputs: Tensor,
    labels: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "sum",
) -> Tensor:
    """
    The focal loss of (M, K) logits against class labels, as if the targets were
    ``one_hot(labels, K + 1)[:, :K]`` (label K = background: all classes negative).

    Args:
        inputs: (M, K) logits.
        labels: (M,) integers in [0, K].
        alpha, gamma, reduction: see ``sigmoid_focal_loss``.
    """
    _check_reduction(reduction)
    if inputs.dim() != 2 or labels.shape != inputs.shape[:1]:
        raise ValueError(
            f"Expected inputs (M, K) and labels (M,), got {tuple(inputs.shape)} and {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if labels.numel() > 0:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high > inputs.shape[1]:
            raise ValueError(
                f"labels must be in [0, {inputs.shape[1]}] (K = background), got values in [{low}, {high}]"
            )
    return _FocalLoss.apply(inputs, labels, "labels", float(alpha), float(gamma), reduction)


def _check_reduction(reduction: str) -> None:
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(
            f"Invalid value for arg 'reduction': {reduction!r}; "
            "supported reduction modes: 'none', 'mean', 'sum'"
        )


def _chunk_targets(targets: Tensor, mode: str, rows: slice) -> Tensor:
    """
    The targets of rows ``rows`` of the flattened (R, C) problem: bool for "binary" (0/1
    floats), float32 for "soft".
    """
    if mode == "binary":
        return targets[rows] > 0.5
    return targets[rows].to(torch.promote_types(targets.dtype, torch.float32))


def _negative_loss_and_grad(x: Tensor, alpha: float, gamma: float, need_grad: bool):
    """
    Element-wise loss (and d loss / d x) of a float32 chunk ``x`` whose targets are all 0.

    With q = sigmoid(x) = 1 - p_t, ce = -log(1 - p) = softplus(x) and w = (1 - alpha) q^gamma:
        loss = w ce,    dloss/dx = w (q + gamma ce (1 - q))
    which needs no q^(gamma - 1), so it is finite for every gamma and logit.
    """
    ce = F.softplus(x)
    q = torch.sigmoid(x)
    # A plain number for gamma = 0 (cross entropy): no pass over memory for a constant weight.
    w = 1 - alpha if alpha >= 0 else 1.0
    if gamma != 0:
        w = q.pow(gamma).mul_(w) if w != 1.0 else q.pow(gamma)
    loss = ce * w
    if not need_grad:
        return loss, None
    # q + gamma (ce - q ce), then times w: three passes, in place.
    grad = torch.addcmul(ce, q, ce, value=-1).mul_(gamma).add_(q).mul_(w)
    return loss, grad


def _binary_loss_and_grad(x: Tensor, t: Tensor, alpha: float, gamma: float, need_grad: bool):
    """
    Element-wise loss (and d loss / d x) for a float32 chunk ``x`` and bool targets ``t``:
    a positive is a negative of -x (z = -x, q = sigmoid(z) = 1 - p_t, ce = softplus(z)) with
    alpha for 1 - alpha, and d/dx = -d/dz.
    """
    z = torch.where(t, -x, x)
    loss, grad = _negative_loss_and_grad(z, -1.0, gamma, need_grad)
    if alpha >= 0:
        alpha_t = torch.where(t, alpha, 1 - alpha)
        loss.mul_(alpha_t)
        if grad is not None:
            grad.mul_(alpha_t)
    if grad is not None:
        grad = torch.where(t, -grad, grad)
    return loss, grad


def _soft_loss_and_grad(x: Tensor, t: Tensor, alpha: float, gamma: float, need_grad: bool):
    """
    Element-wise loss (and d loss / d x if ``need_grad``) for float32 chunks ``x`` and soft
    targets ``t`` in [0, 1].

    With p = sigmoid(x), q = 1 - p_t = t (1 - p) + (1 - t) p and ce = -log(p_t):
        loss = alpha_t ce q^gamma
        dloss/dx = alpha_t q^gamma ((p - t) + gamma ce (1 - 2t) p (1 - p) / q)
    p and 1 - p come from one exp(-|x|), so neither rounds to 0 or 1 for large |x|.
    """
    e = torch.exp(-x.abs())
    r = torch.reciprocal(1 + e)
    er = e * r
    positive = x >= 0
    p = torch.where(positive, r, er)
    p_neg = torch.where(positive, er, r)  # 1 - p
    ce = x.clamp(min=0).add_(torch.log1p(e)).sub_(t * x)  # softplus(x) - t x
    del e, r, er, positive
    if gamma != 0:
        q = (p_neg - p).mul_(t).add_(p)
        # The same floor as sigmoid_focal_loss: pow's gradient stays finite for gamma < 1.
        tiny = torch.finfo(q.dtype).tiny
        q_floored = q.clamp(min=tiny)
        q_gamma = q_floored.pow(gamma)
    if alpha >= 0:
        alpha_t = t.mul(2 * alpha - 1).add_(1 - alpha)
    loss = ce * q_gamma if gamma != 0 else ce
    if alpha >= 0:
        loss.mul_(alpha_t)
    if not need_grad:
        return loss, None
    grad = p - t
    if gamma != 0:
        # The clamp passes no gradient where it floors q.
        dq = torch.mul(p, p_neg).mul_(1 - 2 * t).mul_(ce).mul_(gamma).div_(q_floored)
        dq.masked_fill_(q < tiny, 0)
        grad.add_(dq).mul_(q_gamma)
    if alpha >= 0:
        grad.mul_(alpha_t)
    return loss, grad


def _loss_and_grad(
    inputs: Tensor, targets: Tensor, mode: str, alpha: float, gamma: float, reduction: str, need_grad: bool
):
    """
    The loss (reduced as asked, in the compute dtype) and, if ``need_grad``, d sum(loss) / d
    inputs as a (R, C) compute-dtype tensor (None otherwise); chunk by chunk.
    """
    flat = _as_rows(inputs)
    flat_targets = targets if mode == "labels" else targets.reshape(flat.shape)
    dtype = _compute_dtype(inputs)
    # float32 for half logits too, as autocast runs binary_cross_entropy_with_logits.
    out = torch.empty(flat.shape, dtype=dtype, device=flat.device) if reduction == "none" else None
    grad = torch.empty(flat.shape, dtype=dtype, device=flat.device) if need_grad else None
    total = torch.zeros((), dtype=dtype, device=inputs.device)
    num_classes = flat.shape[1]
    for rows in _row_chunks(flat):
        x = flat[rows].to(dtype)
        if mode == "labels":
            loss, chunk_grad = _negative_loss_and_grad(x, alpha, gamma, need_grad)
            # The few positives (a foreground anchor's own class) are overwritten.
            labels = flat_targets[rows]
            anchors = (labels < num_classes).nonzero().squeeze(1)
            if anchors.numel() > 0:
                classes = labels[anchors]
                positive = torch.ones_like(anchors, dtype=torch.bool)
                loss_pos, grad_pos = _binary_loss_and_grad(x[anchors, classes], positive, alpha, gamma, need_grad)
                loss[anchors, classes] = loss_pos
                if need_grad:
                    chunk_grad[anchors, classes] = grad_pos
        else:
            t = _chunk_targets(flat_targets, mode, rows)
            loss_and_grad = _soft_loss_and_grad if mode == "soft" else _binary_loss_and_grad
            loss, chunk_grad = loss_and_grad(x, t, alpha, gamma, need_grad)
        if out is None:
            total += loss.sum()
        else:
            out[rows] = loss
        if need_grad:
            grad[rows] = chunk_grad
    if reduction == "none":
        return out.reshape(inputs.shape), grad
    if reduction == "mean":
        total = total / inputs.numel()
        if need_grad:
            grad.div_(inputs.numel())
    return total, grad


class _FocalLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs: Tensor, targets: Tensor, mode: str, alpha: float, gamma: float, reduction: str):
        ctx.options = (mode, alpha, gamma, reduction)
        need_grad = ctx.needs_input_grad[0]
        loss, ctx.grad = _loss_and_grad(inputs, targets, mode, alpha, gamma, reduction, need_grad)
        if need_grad:
            # Only for a second backward through a retained graph, which recomputes.
            ctx.save_for_backward(inputs, targets)
        return loss

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        inputs, targets = ctx.saved_tensors
        grad, ctx.grad = ctx.grad, None  # scaled in place below: good for one backward only
        if grad is None:
            _, grad = _loss_and_grad(inputs, targets, *ctx.options, need_grad=True)
        if ctx.options[3] == "none":
            grad.mul_(grad_output.reshape(grad.shape))
        else:
            grad.mul_(grad_output.to(grad.dtype))
        return grad.to(inputs.dtype).reshape(inputs.shape), None, None, None, None, None


def _as_rows(inputs: Tensor) -> Tensor:
    """(R, C) view of ``inputs``: rows along the first dimension."""
    if inputs.dim() < 2:
        return inputs.reshape(-1, 1)
    return inputs.reshape(inputs.shape[0], math.prod(inputs.shape[1:]))


def _compute_dtype(inputs: Tensor) -> torch.dtype:
    """float32 for half/bfloat16/float32 logits (the loss sums ~1e6 terms), else float64."""
    return torch.promote_types(inputs.dtype, torch.float32)


def _row_chunks(flat: Tensor):
    """Slices of rows of the (R, C) tensor ``flat``, about _CHUNK_ELEMENTS elements each."""
    num_rows, num_columns = flat.shape
    chunk_elements = _CHUNK_ELEMENTS if flat.device.type == "cpu" else _GPU_CHUNK_ELEMENTS
    step = max(1, chunk_elements // max(num_columns, 1))
    for start in range(0, num_rows, step):
        yield slice(start, min(start + step, num_rows))
