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
from retina_plugin.utils.detection_sets import detection_differences

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
        assert not detection_differences(b, a, atol=1e-2, rtol=1e-3)
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
    model(_images(1))  # autograd on: the same path, the same copy (no rebuild)
    assert model.inference_copy is copy
    assert model.prepare_for_inference() is copy
    assert model.prepare_for_inference(rebuild=True) is not copy
    # Leaving eval mode and moving the model free it at once.
    for change in (lambda: model.train(), lambda: model.to(torch.float32)):
        model.eval().prepare_for_inference()
        change()
        assert model.inference_copy is None
    model.eval()
    model.fast_inference = False
    with torch.no_grad():
        model(_images(1))
    assert model.inference_copy is None


def _copy_weights_in_place(source, target):
    with torch.no_grad():
        for (name, p), q in zip(target.named_parameters(), source.parameters()):
            p.copy_(q)
        for b, c in zip(target.buffers(), source.buffers()):
            b.copy_(c)


# Each way a user changes the weights after an eval-mode call (issue 26's table, and more):
# (model, other) -> the model to ask next, now holding other's weights (in part).
def _copied_in_place(model, other):
    _copy_weights_in_place(other, model)
    return model


def _backbone_and_head_loaded(model, other):
    model.backbone.load_state_dict(other.backbone.state_dict())
    model.head.load_state_dict(other.head.state_dict())
    return model


def _head_loaded(model, other):
    model.head.load_state_dict(other.head.state_dict())
    return model


def _loaded_through_a_container(model, other):
    nn.ModuleDict({"detector": model}).load_state_dict(nn.ModuleDict({"detector": other}).state_dict())
    return model


def _averaged(model, other):
    from torch.optim.swa_utils import AveragedModel

    averaged = AveragedModel(model)
    averaged.module.eval()
    _detect(averaged.module, _images(1), True)  # the averaged copy answers once ...
    averaged.update_parameters(other)  # ... then its weights change (the first update copies)
    return averaged.module


def _loaded(model, other):
    model.load_state_dict(other.state_dict())
    return model


def _initialized(model, other):
    nn.init.normal_(model.head.cls_score.weight, 0, 0.2)
    return model


def _module_replaced(model, other):
    model.head.cls_score = other.head.cls_score
    return model


def _deep_copy_changed(model, other):
    import copy

    changed = copy.deepcopy(model)
    _copy_weights_in_place(other, changed)
    return changed


WEIGHT_CHANGES = [_copied_in_place, _backbone_and_head_loaded, _head_loaded, _loaded_through_a_container,
                  _averaged, _loaded, _initialized, _module_replaced, _deep_copy_changed]


@pytest.mark.parametrize("change", WEIGHT_CHANGES, ids=lambda f: f.__name__.strip("_"))
def test_fast_path_answers_with_the_weights_the_model_has_now(change):
    model = _model("FrozenBN", cls_bias=-1.0, seed=0)
    other = _model("FrozenBN", cls_bias=-1.5, seed=1)
    inputs = _images(1)
    before = _detect(model, inputs, True)[0]
    changed = change(model, other)
    reference = _detect(changed, inputs, False)[0]
    assert detection_differences(before, reference), "the change must change the detections"
    assert not detection_differences(reference, _detect(changed, inputs, True)[0], atol=1e-2)
    if changed is not model:  # a copy changed: the original keeps its own weights
        assert not detection_differences(before, _detect(model, inputs, True)[0], atol=1e-2)


def test_to_of_a_child_rebuilds_the_copy():
    model = _model("FrozenBN", cls_bias=-1.0)
    old = model.prepare_for_inference()
    model.head.to(torch.float64)
    new = model.prepare_for_inference()
    assert new is not old
    assert next(new.head.parameters()).dtype == torch.float64


def test_writes_through_data_need_an_explicit_rebuild():
    # torch counts no write through .data (by design): the documented way is rebuild=True.
    model = _model("FrozenBN", cls_bias=-1.0, seed=0)
    other = _model("FrozenBN", cls_bias=-1.5, seed=1)
    inputs = _images(1)
    _detect(model, inputs, True)
    for p, q in zip(model.parameters(), other.parameters()):
        p.data.copy_(q.data)
    model.prepare_for_inference(rebuild=True)
    assert not detection_differences(_detect(model, inputs, False)[0], _detect(model, inputs, True)[0], atol=1e-2)


def test_a_hook_added_after_the_first_call_fires_with_the_same_detections():
    model = _model("FrozenBN", cls_bias=-1.0)
    inputs = _images(1)
    reference = _detect(model, inputs, False)[0]
    _detect(model, inputs, True)
    seen = []
    handle = model.backbone.bottom_up.res3.register_forward_hook(lambda m, args, out: seen.append(out.shape))
    with_hook = _detect(model, inputs, True)[0]
    assert len(seen) == 1 and seen[0][1] == model.backbone.bottom_up.res3[-1].conv2.out_channels
    assert not detection_differences(reference, with_hook, atol=1e-2)
    handle.remove()
    _detect(model, inputs, True)
    assert len(seen) == 1  # the hook is gone, and the fast path runs again
    assert model.inference_copy is not None


def test_a_submodule_in_training_mode_runs_itself():
    # BatchNorm of a backbone in training mode normalizes with batch statistics: the folded
    # copy (running statistics) would answer differently, so it stands aside.
    model = _model("BN", cls_bias=-1.0)
    inputs = _images(2)
    model.backbone.train()
    reference = _detect(model, inputs, False)
    fast = _detect(model, inputs, True)
    for a, b in zip(reference, fast):
        assert not detection_differences(a, b, atol=1e-2)
    model.backbone.eval()
    assert detection_differences(reference[0], _detect(model, inputs, True)[0])


class _EngineOf:
    """A stand-in engine: a frozen copy of a model's backbone and head."""

    def __init__(self, model):
        import copy

        self.model = copy.deepcopy(model).eval()
        self.model.fast_inference = False
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        return self.model.features_and_predictions(images)


def test_an_attached_engine_refuses_to_answer_for_changed_weights():
    from retina_plugin.modeling import StaleEngineError

    model = _model("FrozenBN", cls_bias=-1.0, seed=0)
    other = _model("FrozenBN", cls_bias=-1.5, seed=1)
    inputs = _images(1)
    engine = _EngineOf(model)
    model.attach_engine(engine)
    _detect(model, inputs, True)
    assert engine.calls == 1
    model.load_state_dict(other.state_dict())
    with pytest.raises(StaleEngineError, match="detach_engine"):
        _detect(model, inputs, True)
    assert model.detach_engine() is engine
    assert not detection_differences(_detect(other, inputs, False)[0], _detect(model, inputs, True)[0], atol=1e-2)
    # Attached by assignment: the weights of the first call are the engine's.
    model.inference_engine = engine
    _detect(model, inputs, True)
    _copy_weights_in_place(_model("FrozenBN", cls_bias=-1.0, seed=2), model)
    with pytest.raises(StaleEngineError):
        _detect(model, inputs, True)


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


def test_bfloat16_fast_path_scores_like_float32_and_follows_its_key(trained_tiny, tmp_path):
    from retina_plugin.deploy.verification import evaluate_ap

    cfg, weights = trained_tiny
    models = {}
    for dtype in ("float32", "bfloat16"):
        dtype_cfg = cfg.clone()
        dtype_cfg.MODEL.FOCAL_RETINANET.INFERENCE_DTYPE = dtype
        models[dtype] = build_model(dtype_cfg).eval()
        DetectionCheckpointer(models[dtype]).load(weights)
    model = models["bfloat16"]
    ap = {dtype: evaluate_ap(m, cfg, "tiny_shapes_val", str(tmp_path / dtype))["AP"] for dtype, m in models.items()}
    assert ap["float32"] > 5 and abs(ap["bfloat16"] - ap["float32"]) < 1.0, ap
    copy = model.inference_copy
    assert copy.dtype == torch.bfloat16 and all(p.dtype == torch.bfloat16 for p in copy.head.parameters())
    inputs = _images(seed=3)
    images = model.preprocess_image(inputs).tensor
    with torch.no_grad():
        features, predictions = model.features_and_predictions(images)
    # What decoding, scores and NMS get is float32 again.
    assert {t.dtype for t in features + predictions[0] + predictions[1]} == {torch.float32}
    float32 = _detect(models["float32"], inputs, fast=True)
    bfloat16 = _detect(model, inputs, fast=True)
    assert any(detection_differences(a, b) for a, b in zip(float32, bfloat16))  # bfloat16 really ran
    # Back to float32 on the same model: the bfloat16 copy must not answer.
    model.inference_dtype = "float32"
    for a, b in zip(float32, _detect(model, inputs, fast=True)):
        assert not detection_differences(a, b)
    assert model.inference_copy.dtype is None and next(model.inference_copy.head.parameters()).dtype == torch.float32
    # The reference path is float32 whatever the key says.
    model.inference_dtype = "bfloat16"
    for a, b in zip(float32, _detect(model, inputs, fast=False)):
        assert not detection_differences(a, b, atol=1e-2)
    with pytest.raises(ValueError, match="MODEL.FOCAL_RETINANET.INFERENCE_DTYPE"):
        build_model(load_cfg(opts=["MODEL.FOCAL_RETINANET.INFERENCE_DTYPE", "float16"]))
