"""
The inference fast path (norms folded into convs, channels_last) gives the reference path's
detections, stays correct when weights change, and is what DefaultPredictor runs.
"""
import pytest
import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultPredictor
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling import build_model

from retina_plugin.modeling.fast_inference import fold_norm_into_conv

from .conftest import load_cfg


def _randomize_norms(model, seed=0):
    """Non-trivial frozen / running statistics, so that folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


def _model(norm, cls_bias, seed=0):
    cfg = load_cfg(opts=["MODEL.RESNETS.NORM", norm])
    torch.manual_seed(seed)
    model = build_model(cfg)
    _randomize_norms(model, seed)
    with torch.no_grad():
        model.head.cls_score.weight.normal_(0, 0.05)
        model.head.cls_score.bias.fill_(cls_bias)
    return model.eval()


def _images(num=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(3, 128, 128 - 16 * i, generator=g) * 255} for i in range(num)]


def _detect(model, inputs, fast):
    model.fast_inference = fast
    with torch.no_grad():
        return [x["instances"] for x in model(inputs)]


def assert_same_detections(model, inputs):
    fast, reference = _detect(model, inputs, True), _detect(model, inputs, False)
    for a, b in zip(fast, reference):
        assert len(a) == len(b)
        assert torch.equal(a.pred_classes, b.pred_classes)
        torch.testing.assert_close(a.scores, b.scores, rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=1e-3, atol=1e-2)
    return fast


@pytest.mark.parametrize("norm", [FrozenBatchNorm2d, nn.BatchNorm2d])
@pytest.mark.parametrize("conv_bias", [False, True])
def test_folding_equals_conv_then_norm(norm, conv_bias):
    conv = Conv2d(8, 16, 3, padding=1, bias=conv_bias, norm=norm(16))
    _randomize_norms(conv)
    conv.eval()
    x = torch.randn(2, 8, 10, 12)
    with torch.no_grad():
        expected = conv(x)
        assert fold_norm_into_conv(conv)
        assert conv.norm is None
        torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["FrozenBN", "BN"])
def test_thousands_of_candidates_give_the_same_detections(norm):
    model = _model(norm, cls_bias=1.0)  # every score is above 0.05: top-k 1000 per level
    detections = assert_same_detections(model, _images())
    assert all(len(d) == model.max_detections_per_image for d in detections)


def test_no_candidates_gives_no_detections():
    model = _model("FrozenBN", cls_bias=-20.0)
    detections = assert_same_detections(model, _images())
    assert all(len(d) == 0 for d in detections)


def test_rebuilt_after_load_state_dict_and_training_and_checkpoint(tmp_path):
    model = _model("FrozenBN", cls_bias=-1.0, seed=0)
    inputs = _images(1)
    before = assert_same_detections(model, inputs)[0]

    other = _model("FrozenBN", cls_bias=-1.5, seed=1)
    model.load_state_dict(other.state_dict())
    after_load = assert_same_detections(model, inputs)[0]
    assert not torch.equal(after_load.scores[:5], before.scores[:5])

    # A training step changes weights in place; norm statistics of BN change too.
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    gt = Instances((128, 128), gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 60.0, 70.0]])),
                   gt_classes=torch.tensor([1]))
    with EventStorage():
        losses = model([{"image": inputs[0]["image"], "instances": gt}])
    sum(losses.values()).backward()
    optimizer.step()
    model.eval()
    after_step = assert_same_detections(model, inputs)[0]
    assert not torch.equal(after_step.scores[:5], after_load.scores[:5])

    DetectionCheckpointer(other, save_dir=str(tmp_path)).save("other")
    DetectionCheckpointer(model).load(str(tmp_path / "other.pth"))
    torch.testing.assert_close(_detect(model, inputs, True)[0].scores, after_load.scores)


def test_inference_copy_is_explicit_state_outside_the_state_dict():
    model = _model("FrozenBN", cls_bias=-1.0)
    assert model.inference_copy is None  # built by the first eval-mode call, not before
    keys = set(model.state_dict())
    with torch.no_grad():
        model(_images(1))
    copy = model.inference_copy
    assert copy is not None
    assert set(model.state_dict()) == keys
    assert not any(p is q for p in model.parameters() for q in copy.backbone.parameters())
    model(_images(1))  # autograd on: the same path, the same copy (no rebuild, no hashing)
    assert model.inference_copy is copy
    assert model.prepare_for_inference() is copy
    assert model.prepare_for_inference(rebuild=True) is not copy
    # Everything that changes the weights or leaves eval mode drops it.
    for change in (lambda: model.train(), lambda: model.load_state_dict(model.state_dict()),
                   lambda: model.to(torch.float32)):
        model.eval().prepare_for_inference()
        change()
        assert model.inference_copy is None
    model.eval()
    model.fast_inference = False
    with torch.no_grad():
        model(_images(1))
    assert model.inference_copy is None


def test_same_detections_with_and_without_autograd():
    # One path in eval mode whatever the grad mode: the results are identical, not just close.
    model = _model("FrozenBN", cls_bias=-1.0)
    inputs = _images(1)
    with torch.no_grad():
        without = model(inputs)[0]["instances"]
    with_grad = model(inputs)[0]["instances"]
    assert torch.equal(without.scores, with_grad.scores.detach())
    assert torch.equal(without.pred_boxes.tensor, with_grad.pred_boxes.tensor.detach())


def test_hooks_on_the_model_fire_in_inference():
    model = _model("FrozenBN", cls_bias=-1.0)
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(len(output)))
    with torch.no_grad():
        model(_images(2))
    assert calls == [2]


def test_config_key_and_default_predictor():
    cfg = load_cfg(opts=["MODEL.FOCAL_RETINANET.FAST_INFERENCE", "False"])
    assert not build_model(cfg).fast_inference
    cfg = load_cfg()
    predictor = DefaultPredictor(cfg)
    assert predictor.model.fast_inference
    predictor((torch.rand(128, 128, 3) * 255).byte().numpy())
    assert predictor.model.inference_copy is not None
