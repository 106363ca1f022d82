"""
P6/P7 from C5 (the paper) or from P5 (MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE), and the
optimizer choice SOLVER.OPTIMIZER.
"""
import pytest
import torch

from detectron2.modeling import build_backbone, build_model
from detectron2.solver import build_optimizer as detectron2_build_optimizer

from retina_plugin.training.optimizer import build_optimizer
from retina_plugin.training.trainer import Trainer

from .conftest import load_cfg

OURS = ["MODEL.BACKBONE.NAME", "build_focal_retinanet_resnet_fpn_backbone"]
P5 = [*OURS, "MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE", "p5"]


def test_res5_top_block_is_detectron2s_backbone():
    theirs = build_backbone(load_cfg())
    ours = build_backbone(load_cfg(opts=OURS))
    theirs_sd = theirs.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs_sd.items()}
    ours.load_state_dict(theirs_sd)
    ours.eval(), theirs.eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert list(a) == list(b) == ["p3", "p4", "p5", "p6", "p7"]
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_p5_top_block_takes_the_fpn_output():
    cfg = load_cfg(opts=P5)
    backbone = build_backbone(cfg).eval()
    assert backbone.top_block.p6.in_channels == cfg.MODEL.FPN.OUT_CHANNELS
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        out = backbone(x)
        torch.testing.assert_close(out["p6"], backbone.top_block.p6(out["p5"]))
        torch.testing.assert_close(out["p7"], backbone.top_block.p7(torch.relu(out["p6"])))
    # The whole model builds and its checkpoint round-trips.
    model = build_model(cfg)
    fresh = build_model(cfg)
    assert not fresh.load_state_dict(model.state_dict(), strict=True).missing_keys


def test_p5_with_a_backbone_that_ignores_it_is_a_clear_error():
    with pytest.raises(ValueError, match="TOP_BLOCK_IN_FEATURE = 'p5' needs MODEL.BACKBONE.NAME"):
        build_model(load_cfg(opts=["MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE", "p5"]))
    with pytest.raises(ValueError, match="TOP_BLOCK_IN_FEATURE = 'c6': expected one of 'res5', 'p5'"):
        build_model(load_cfg(opts=[*OURS, "MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE", "c6"]))


def _groups_by_param(optimizer):
    return {id(p): g for g in optimizer.param_groups for p in g["params"]}


def test_sgd_is_detectron2s_optimizer():
    cfg = load_cfg()
    model = build_model(cfg)
    ours, theirs = build_optimizer(cfg, model), detectron2_build_optimizer(cfg, model)
    assert type(ours).__mro__[1:] == type(theirs).__mro__[1:]  # SGD (with clipping)
    assert isinstance(ours, torch.optim.SGD)
    strip = lambda o: [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups]  # noqa
    assert strip(ours) == strip(theirs)


def test_adamw_has_no_weight_decay_on_norms_and_biases():
    cfg = load_cfg(opts=["SOLVER.OPTIMIZER", "AdamW", "SOLVER.BASE_LR", 0.001, "SOLVER.WEIGHT_DECAY", 0.05])
    model = build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)  # what train_net.py uses
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = _groups_by_param(optimizer)
    norm_types = (torch.nn.BatchNorm2d, torch.nn.GroupNorm)
    checked = set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            group = groups[id(p)]
            assert group["lr"] == 0.001 and group["betas"] == (0.9, 0.999)
            expected = 0.0 if isinstance(module, norm_types) or name == "bias" else 0.05
            assert group["weight_decay"] == expected, f"{module_name}.{name}"
            checked.add(expected)
    assert checked == {0.0, 0.05}
    # Gradient clipping from SOLVER.CLIP_GRADIENTS still applies (the demo config enables it).
    assert type(optimizer).__name__ != "AdamW"


def test_unknown_optimizer_is_a_clear_error():
    cfg = load_cfg(opts=["SOLVER.OPTIMIZER", "Adam"])
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER = 'Adam': expected one of 'SGD', 'AdamW'"):
        build_optimizer(cfg, torch.nn.Linear(2, 2))
