import math

import pytest
import torch
from fvcore.nn import sigmoid_focal_loss as fvcore_focal_loss
from torchvision.ops import sigmoid_focal_loss as torchvision_focal_loss

from retina_plugin.modeling.losses import SigmoidBCELoss, SigmoidFocalLoss, sigmoid_focal_loss

GAMMAS = [0.0, 0.5, 1.0, 2.0, 5.0]
ALPHAS = [0.25, -1.0]


def paper_formula(x, t, alpha, gamma):
    """
    FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), written out in float64 for binary targets.
    """
    x, t = x.double(), t.double()
    p = torch.sigmoid(x)
    p_t = torch.where(t == 1, p, 1 - p)
    loss = -((1 - p_t) ** gamma) * torch.log(p_t)
    if alpha >= 0:
        loss = torch.where(t == 1, alpha, 1 - alpha) * loss
    return loss


def random_inputs(n=2000, scale=4.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * scale
    t = (torch.rand(n, generator=g) < 0.3).float()
    return x, t


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_matches_paper_formula(alpha, gamma):
    x, t = random_inputs()
    ours = sigmoid_focal_loss(x.double(), t.double(), alpha=alpha, gamma=gamma)
    torch.testing.assert_close(ours, paper_formula(x, t, alpha, gamma), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_values_and_gradients_match_torchvision_and_fvcore(alpha, gamma, reduction):
    x, t = random_inputs()
    results = {}
    for name, fn in [
        ("ours", sigmoid_focal_loss),
        ("torchvision", torchvision_focal_loss),
        ("fvcore", fvcore_focal_loss),
    ]:
        xi = x.clone().requires_grad_(True)
        loss = fn(xi, t, alpha=alpha, gamma=gamma, reduction=reduction)
        loss.sum().backward()
        results[name] = (loss.detach(), xi.grad)
    for other in ("torchvision", "fvcore"):
        torch.testing.assert_close(results["ours"][0], results[other][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(results["ours"][1], results[other][1], rtol=1e-4, atol=1e-6)


def test_default_arguments_are_the_papers():
    x, t = random_inputs()
    torch.testing.assert_close(
        sigmoid_focal_loss(x, t), torchvision_focal_loss(x, t, alpha=0.25, gamma=2.0)
    )


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_gradcheck_float64(alpha, gamma):
    # Logits away from the kink-free but steep region keep finite differences accurate.
    x, t = random_inputs(n=64, scale=3.0, seed=1)
    x = x.double().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v: sigmoid_focal_loss(v, t.double(), alpha=alpha, gamma=gamma, reduction="sum"),
        (x,),
    )


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_extreme_logits_stay_finite_and_correct(alpha, gamma):
    x = torch.tensor([-1000.0, -100.0, -30.0, 30.0, 100.0, 1000.0] * 2)
    t = torch.tensor([1.0] * 6 + [0.0] * 6)
    xi = x.clone().requires_grad_(True)
    loss = sigmoid_focal_loss(xi, t, alpha=alpha, gamma=gamma)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(xi.grad).all()

    # Exact values: a confident wrong answer costs alpha_t * |x| (log p_t = -|x|,
    # 1 - p_t = 1); a confident right one costs ~0.
    alpha_t = torch.where(t == 1, alpha, 1 - alpha) if alpha >= 0 else torch.ones_like(t)
    wrong = (x < 0) == (t == 1)
    torch.testing.assert_close(loss[wrong], (alpha_t * x.abs())[wrong])
    assert (loss[~wrong] < 1e-12).all()
    # The gradient pushes wrong logits towards the target at rate alpha_t, and is ~0 elsewhere.
    torch.testing.assert_close(xi.grad[wrong], (alpha_t * torch.where(t == 1, -1.0, 1.0))[wrong])
    assert (xi.grad[~wrong].abs() < 1e-12).all()


def test_gamma_below_one_gradient_where_torchvision_gives_nan():
    # A saturated correct prediction: 1 - p_t underflows to 0 and pow's derivative at 0
    # is infinite for gamma < 1; the reference implementation returns NaN here.
    x = torch.tensor([200.0], requires_grad=True)
    t = torch.tensor([1.0])
    torchvision_focal_loss(x, t, gamma=0.5).sum().backward()
    reference_grad = x.grad.clone()
    x.grad = None
    sigmoid_focal_loss(x, t, gamma=0.5).sum().backward()
    assert torch.isnan(reference_grad).all()
    assert x.grad.item() == pytest.approx(0.0, abs=1e-20)


def test_gamma_zero_is_alpha_balanced_cross_entropy():
    x, t = random_inputs()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(x, t, alpha=-1, gamma=0), bce)
    torch.testing.assert_close(
        sigmoid_focal_loss(x, t, alpha=0.25, gamma=0), torch.where(t == 1, 0.25, 0.75) * bce
    )


def test_focusing_down_weights_easy_examples():
    # Section 3.2: with gamma=2 an example at p_t=0.9 gets 100x less loss than with CE,
    # one at p_t ~ 0.968 about 1000x less.
    for p_t, factor in [(0.9, 100.0), (1 - 1 / math.sqrt(1000), 1000.0)]:
        x = torch.tensor([math.log(p_t / (1 - p_t))], dtype=torch.float64)
        t = torch.ones(1, dtype=torch.float64)
        ratio = sigmoid_focal_loss(x, t, -1, 0.0) / sigmoid_focal_loss(x, t, -1, 2.0)
        assert ratio.item() == pytest.approx(factor, rel=1e-6)


def test_invalid_reduction_raises():
    x, t = random_inputs(n=4)
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(x, t, reduction="avg")


def test_classification_loss_modules_on_labels():
    logits = torch.randn(50, 3)
    labels = torch.randint(0, 4, (50,))  # 3 = background: all-zero target row
    targets = torch.nn.functional.one_hot(labels, 4)[:, :3].float()
    focal = SigmoidFocalLoss(alpha=0.25, gamma=2.0)(logits, labels)
    torch.testing.assert_close(focal, sigmoid_focal_loss(logits, targets, 0.25, 2.0, "sum"))
    bce = SigmoidBCELoss(alpha=0.25)(logits, labels)
    torch.testing.assert_close(bce, sigmoid_focal_loss(logits, targets, 0.25, 0.0, "sum"))
    assert bce > focal  # focusing only ever lowers the loss
