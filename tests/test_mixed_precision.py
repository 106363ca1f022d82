"""
Mixed-precision training on CPU (SOLVER.AMP.PRECISION, issue 30): "auto" picks bfloat16 by the
CPU's flags and float32 where bfloat16 would be emulated; bfloat16 trains with float32 losses and
weights, and the NaN diagnosis, gradient clipping and resume keep working.
"""
import logging
import math

import pytest
import torch

from detectron2.engine import SimpleTrainer

from retina_plugin.data import register_coco_json
from retina_plugin.data.shapes import generate_shapes_split
from retina_plugin.training import mixed_precision
from retina_plugin.training.mixed_precision import MixedPrecisionTrainer, resolve_amp_precision
from retina_plugin.training.nonfinite_diagnosis import NonFiniteLossError

from .test_nonfinite_diagnosis import make_trainer

AMX = {"fpu", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
AVX2_ONLY = {"fpu", "sse4_2", "avx", "avx2", "fma"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed_precision_data")
    json_file = generate_shapes_split(str(root), 4, seed=3, image_size=96)
    register_coco_json("mixed_precision_train", json_file, str(root))
    return "mixed_precision_train", str(root)


def test_auto_picks_bfloat16_by_the_cpu_flags_and_explicit_choices_are_checked(caplog):
    with caplog.at_level(logging.INFO):
        assert resolve_amp_precision("cpu", "auto", AMX) == torch.bfloat16
        assert "the CPU has amx_bf16, avx512_bf16" in caplog.text
        caplog.clear()
        assert resolve_amp_precision("cpu", "auto", AVX2_ONLY) is None  # float32: nothing changes
        assert "float32 on cpu" in caplog.text and "no amx_bf16 or avx512_bf16 flag" in caplog.text
        caplog.clear()
        # Asked for explicitly, bfloat16 is given, with a warning that names the missing flags.
        assert resolve_amp_precision("cpu", "bfloat16", AVX2_ONLY) == torch.bfloat16
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "no amx_bf16 or avx512_bf16 flag in /proc/cpuinfo" in caplog.text
    assert resolve_amp_precision("cpu", "bfloat16", {"avx512_bf16"}) == torch.bfloat16
    with pytest.raises(ValueError, match="SOLVER.AMP.PRECISION 'float16' is for GPUs"):
        resolve_amp_precision("cpu", "float16", AMX)
    with pytest.raises(ValueError, match="SOLVER.AMP.PRECISION 'fp16': expected one of 'auto', 'bfloat16', 'float16'"):
        resolve_amp_precision("cpu", "fp16", AMX)
    flags = mixed_precision.cpu_flags()
    assert isinstance(flags, set) and (not flags or "fpu" in flags)  # read off this machine


def test_bfloat16_training_on_cpu_keeps_losses_and_weights_in_float32(dataset, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(mixed_precision, "cpu_flags", lambda: AMX)
    with caplog.at_level(logging.INFO):
        trainer = make_trainer(dataset, tmp_path, "SOLVER.AMP.ENABLED", "True")
    assert "torch.bfloat16 autocast on cpu (SOLVER.AMP.PRECISION 'auto': the CPU has amx_bf16" in caplog.text
    assert isinstance(trainer._trainer, MixedPrecisionTrainer) and trainer._trainer.precision == torch.bfloat16
    assert not trainer._trainer.grad_scaler.is_enabled()
    seen = {"conv": [], "losses": []}
    trainer.model.backbone.bottom_up.stem.conv1.register_forward_hook(
        lambda m, i, o: seen["conv"].append(o.dtype))
    trainer.model.register_forward_hook(
        lambda m, i, o: seen["losses"].extend(v.dtype for v in o.values()) if m.training else None)
    trainer.train()
    assert seen["conv"] and set(seen["conv"]) == {torch.bfloat16}  # the convs ran in bfloat16
    assert seen["losses"] and set(seen["losses"]) == {torch.float32}
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trainer.model.parameters())
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 3 and all(math.isfinite(v) for v, _ in losses)


def test_auto_on_a_cpu_without_native_bfloat16_trains_in_float32_as_without_amp(dataset, tmp_path, monkeypatch,
                                                                                  caplog):
    monkeypatch.setattr(mixed_precision, "cpu_flags", lambda: AVX2_ONLY)
    with caplog.at_level(logging.INFO):
        trainer = make_trainer(dataset, tmp_path, "SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", "1")
    assert type(trainer._trainer) is SimpleTrainer  # the trainer detectron2 uses without AMP
    assert "Mixed precision: none, float32 on cpu" in caplog.text
    seen = []
    trainer.model.backbone.bottom_up.stem.conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer.train()
    assert seen == [torch.float32]


def test_nan_diagnosis_under_bfloat16_names_losses_and_gradients(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(mixed_precision, "cpu_flags", lambda: AMX)
    trainer = make_trainer(dataset, tmp_path / "loss", "SOLVER.AMP.ENABLED", "True")
    with torch.no_grad():
        trainer.model.head.bbox_pred.bias.fill_(math.inf)
    with pytest.raises(NonFiniteLossError, match="non-finite loss: loss_box_reg = inf"):
        trainer.train()
    # No grad scaler skips a bfloat16 step: a non-finite gradient is an error, checked as in float32.
    trainer = make_trainer(dataset, tmp_path / "gradient", "SOLVER.AMP.ENABLED", "True")
    weight = trainer.model.head.cls_score.weight
    before = weight.detach().clone()
    weight.register_hook(lambda grad: grad * math.inf)
    with pytest.raises(NonFiniteLossError, match="non-finite gradient .* first head.cls_score.weight"):
        trainer.train()
    torch.testing.assert_close(weight.detach(), before)


def test_gradient_clipping_holds_under_bfloat16(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(mixed_precision, "cpu_flags", lambda: AMX)
    clip = 1e-4
    trainer = make_trainer(dataset, tmp_path, "SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", "1",
                           "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "value", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", str(clip),
                           "SOLVER.WEIGHT_DECAY", "0.0", "SOLVER.WEIGHT_DECAY_NORM", "0.0")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    lr = trainer.cfg.SOLVER.BASE_LR  # the first step's lr is at most BASE_LR (warm-up)
    moved = max((p.detach() - before[n]).abs().max().item() for n, p in trainer.model.named_parameters())
    # One SGD step (the momentum buffer is the gradient): each element moved at most lr x clip,
    # and some gradient was larger than the clip (the step reached it, within warm-up's factor).
    assert 0 < moved <= lr * clip * 1.001
    assert moved >= lr * clip * trainer.cfg.SOLVER.WARMUP_FACTOR * 0.999


def test_resume_a_float32_checkpoint_in_bfloat16(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(mixed_precision, "cpu_flags", lambda: AMX)
    make_trainer(dataset, tmp_path, "SOLVER.MAX_ITER", "1").train()  # float32, checkpoint at the end
    trainer = make_trainer(dataset, tmp_path, "SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", "2", resume=True)
    assert trainer.start_iter == 1 and isinstance(trainer._trainer, MixedPrecisionTrainer)
    trainer.train()
    assert trainer.iter == 2


def test_the_lazy_loop_builds_its_step_trainer_the_same_way(monkeypatch):
    import itertools

    from detectron2.utils.events import EventStorage

    from retina_plugin.training.mixed_precision import build_step_trainer

    class Regression(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 1)

        def forward(self, batch):
            out = self.linear(batch)
            self.seen = out.dtype
            return {"loss": (out.float() - 1).pow(2).mean()}

    monkeypatch.setattr(mixed_precision, "cpu_flags", lambda: AMX)
    model = Regression().train()
    loader = itertools.repeat(torch.ones(8, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert type(build_step_trainer(model, loader, optimizer, "cpu", False, "bfloat16")) is SimpleTrainer
    trainer = build_step_trainer(model, loader, optimizer, "cpu", True, "auto", key="train.amp.precision")
    assert isinstance(trainer, MixedPrecisionTrainer) and trainer.precision == torch.bfloat16
    before = model.linear.weight.detach().clone()
    with EventStorage(0) as storage:
        trainer.storage = storage
        trainer.iter = 0
        trainer.run_step()
    assert model.seen == torch.bfloat16 and model.linear.weight.dtype == torch.float32
    assert not torch.equal(before, model.linear.weight)
    with pytest.raises(ValueError, match="train.amp.precision 'float16' is for GPUs"):
        build_step_trainer(model, loader, optimizer, "cpu", True, "float16", key="train.amp.precision")
