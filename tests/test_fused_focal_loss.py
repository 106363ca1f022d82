"""
The fused focal loss (one autograd function, closed-form gradient) against the reference
autograd implementation: values and gradients, for soft/binary targets and class labels.
"""
import pytest
import torch
from torch.nn import functional as F
from torchvision.ops import sigmoid_focal_loss as torchvision_focal_loss

from retina_plugin.modeling import fused_focal_loss
from retina_plugin.modeling.fused_focal_loss import (
    fused_sigmoid_focal_loss,
    fused_sigmoid_focal_loss_from_labels,
)
from retina_plugin.modeling.losses import SigmoidBCELoss, SigmoidFocalLoss, sigmoid_focal_loss

GAMMAS = [0.0, 0.5, 1.0, 2.0, 5.0]
ALPHAS = [0.25, -1.0]
EXTREME = [-1000.0, -100.0, -88.0, -30.0, -17.0, -1e-3, 0.0, 1e-3, 17.0, 30.0, 88.0, 100.0, 1000.0]


def _logits_and_labels(num_anchors=300, num_classes=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_anchors, num_classes, generator=g) * 6
    logits[: len(EXTREME)] = torch.tensor(EXTREME)[:, None]
    labels = torch.randint(0, num_classes + 1, (num_anchors,), generator=g)
    return logits, labels


def _value_and_grad(fn, logits, *args, grad_output=None):
    x = logits.clone().requires_grad_()
    loss = fn(x, *args)
    (loss if grad_output is None else loss * grad_output).sum().backward()
    return loss.detach(), x.grad


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    # Several chunks per test tensor, so that chunk boundaries are exercised.
    monkeypatch.setattr(fused_focal_loss, "_CHUNK_ELEMENTS", 256)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_binary_targets_equal_reference(alpha, gamma, reduction):
    logits, labels = _logits_and_labels()
    targets = F.one_hot(labels, 8)[:, :7].float()
    grad_output = torch.rand(logits.shape) if reduction == "none" else None
    ref = _value_and_grad(sigmoid_focal_loss, logits, targets, alpha, gamma, reduction, grad_output=grad_output)
    ours = _value_and_grad(fused_sigmoid_focal_loss, logits, targets, alpha, gamma, reduction, grad_output=grad_output)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-5, atol=1e-6)
    assert torch.isfinite(ours[1]).all()


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_labels_equal_one_hot_reference(alpha, gamma):
    logits, labels = _logits_and_labels(seed=1)
    targets = F.one_hot(labels, 8)[:, :7].float()
    ref = _value_and_grad(sigmoid_focal_loss, logits, targets, alpha, gamma, "sum")
    ours = _value_and_grad(fused_sigmoid_focal_loss_from_labels, logits, labels, alpha, gamma, "sum")
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_soft_targets_equal_reference(gamma):
    logits, _ = _logits_and_labels(seed=2)
    logits = logits.clamp(-60, 60)  # reference's pow gradient is inf at q=0 for gamma < 1
    targets = torch.rand(logits.shape, generator=torch.Generator().manual_seed(3))
    ref = _value_and_grad(sigmoid_focal_loss, logits, targets, 0.25, gamma, "sum")
    ours = _value_and_grad(fused_sigmoid_focal_loss, logits, targets, 0.25, gamma, "sum")
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-4, atol=1e-5)


def test_matches_torchvision_on_moderate_logits():
    logits, labels = _logits_and_labels(seed=4)
    logits = logits.clamp(-15, 15)
    targets = F.one_hot(labels, 8)[:, :7].float()
    ref = _value_and_grad(torchvision_focal_loss, logits, targets, 0.25, 2.0, "sum")
    ours = _value_and_grad(fused_sigmoid_focal_loss, logits, targets, 0.25, 2.0, "sum")
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-4, atol=1e-6)


def test_gradcheck_float64():
    logits, labels = _logits_and_labels(num_anchors=40, num_classes=3)
    x = (logits.clamp(-5, 5)).double().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: fused_sigmoid_focal_loss_from_labels(v, labels, 0.25, 2.0), (x,))
    targets = torch.rand(x.shape, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: fused_sigmoid_focal_loss(v, targets, 0.25, 1.5, "mean"), (x,))


def test_empty_input():
    x = torch.zeros(0, 80, requires_grad=True)
    loss = fused_sigmoid_focal_loss_from_labels(x, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and x.grad.shape == (0, 80)


def test_bad_labels_raise():
    with pytest.raises(ValueError, match=r"\[0, 7\]"):
        fused_sigmoid_focal_loss_from_labels(torch.zeros(3, 7), torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match="labels"):
        fused_sigmoid_focal_loss_from_labels(torch.zeros(3, 7), torch.tensor([0, 8, 2]))
    with pytest.raises(ValueError, match="shape"):
        fused_sigmoid_focal_loss(torch.zeros(3, 7), torch.zeros(3, 6))
    with pytest.raises(ValueError, match="reduction"):
        fused_sigmoid_focal_loss(torch.zeros(3, 7), torch.zeros(3, 7), reduction="max")


@pytest.mark.parametrize("loss_class", [SigmoidFocalLoss, SigmoidBCELoss])
def test_loss_modules_fused_equals_reference_path(loss_class):
    logits, labels = _logits_and_labels(seed=5)
    fused, reference = loss_class(alpha=0.25, fused=True), loss_class(alpha=0.25, fused=False)
    ours = _value_and_grad(fused, logits, labels)
    ref = _value_and_grad(reference, logits, labels)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-5, atol=1e-6)


def test_config_key_selects_reference_path():
    from detectron2.config import get_cfg

    from retina_plugin import add_retina_config

    cfg = get_cfg()
    add_retina_config(cfg)
    assert SigmoidFocalLoss(cfg).fused
    cfg.MODEL.FOCAL_RETINANET.FUSED_FOCAL_LOSS = False
    assert not SigmoidFocalLoss(cfg).fused


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_half_precision_logits_give_a_float32_loss(reduction):
    # As under autocast (AMP training): bfloat16 logits, the loss computed and returned in
    # float32 like autocast's binary_cross_entropy_with_logits, the gradient in bfloat16.
    logits, labels = _logits_and_labels()
    low = logits.clamp(-30, 30).bfloat16()
    ours = _value_and_grad(lambda x: fused_sigmoid_focal_loss_from_labels(x, labels, 0.25, 2.0, reduction), low)
    onehot = F.one_hot(labels, 8)[:, :7].float()
    ref = _value_and_grad(lambda x: sigmoid_focal_loss(x, onehot, 0.25, 2.0, reduction), low.float())
    assert ours[0].dtype == torch.float32 and ours[1].dtype == torch.bfloat16
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[1].float(), ref[1], rtol=1e-2, atol=1e-3)


def test_second_backward_through_a_retained_graph_recomputes():
    # The gradient kept from the forward pass is scaled in place by the first backward; a
    # second backward (retain_graph) must not reuse it.
    logits, labels = _logits_and_labels()
    x = logits.clone().requires_grad_()
    loss = fused_sigmoid_focal_loss_from_labels(x, labels, 0.25, 2.0, "sum")
    (3 * loss).backward(retain_graph=True)
    first = x.grad.clone()
    (5 * loss).backward()
    torch.testing.assert_close(x.grad, first * 8 / 3, rtol=1e-5, atol=1e-7)


def test_loss_without_autograd_has_no_graph_and_the_same_value():
    logits, labels = _logits_and_labels()
    with torch.no_grad():
        value = fused_sigmoid_focal_loss_from_labels(logits.requires_grad_(), labels)
    loss = fused_sigmoid_focal_loss_from_labels(logits.detach(), labels)
    assert not loss.requires_grad and loss.grad_fn is None
    torch.testing.assert_close(value, loss)
