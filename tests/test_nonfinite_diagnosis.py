"""
A NaN/inf loss or gradient stops training with a diagnosis naming its cause, and the saved
batch replays the same step (issue 9).
"""
import importlib.util
import math

import pytest
import torch

from detectron2.utils.events import EventStorage

from retina_plugin.data import register_coco_json
from retina_plugin.data.shapes import generate_shapes_split
from retina_plugin.training.nonfinite_diagnosis import NonFiniteLossError, _grad_norm_findings
from retina_plugin.training.trainer import Trainer

from .conftest import REPO_ROOT, load_cfg


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("nonfinite_data")
    json_file = generate_shapes_split(str(root), 4, seed=3, image_size=96)
    name = "nonfinite_train"
    register_coco_json(name, json_file, str(root))
    return name, str(root)


def make_trainer(dataset, output_dir, *opts, resume=False):
    """A Trainer of the tiny config on ``dataset`` ((name, root)), 3 iterations of batch 2 at 96 px."""
    cfg = load_cfg(opts=[
        "DATASETS.TRAIN", f"('{dataset[0]}',)", "DATASETS.TEST", "()", "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "3", "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "OUTPUT_DIR", str(output_dir), *opts,
    ])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    return trainer


def train_until_error(trainer) -> NonFiniteLossError:
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    return info.value


def test_inf_box_loss_is_diagnosed_saved_and_replayed(dataset, tmp_path, capsys):
    trainer = make_trainer(dataset, tmp_path)
    trainer.checkpointer.save("model_0000000")  # a "last good" checkpoint to keep
    with torch.no_grad():
        trainer.model.head.bbox_pred.bias.fill_(math.inf)
    error = train_until_error(trainer)
    message = str(error)
    assert "Training stopped at iteration 0 (rank 0): non-finite loss: loss_box_reg = inf" in message
    assert "(finite: loss_cls = " in message
    assert "learning rate: " in message and "parameter groups" in message
    assert dataset[1] in message and ".png" in message  # the batch's file names
    assert "predictions on p3 have NaN/inf values" in message
    assert "last good checkpoint is model_0000000.pth" in message
    assert error.replay_file and error.replay_file in message
    # The checkpoint on disk is untouched: no model_final.pth with the broken weights.
    assert not (tmp_path / "model_final.pth").exists()

    # tools/replay_batch.py (over diagnostics.replay) re-runs the same step.
    spec = importlib.util.spec_from_file_location("replay_batch", REPO_ROOT / "tools" / "replay_batch.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([error.replay_file]) == 1  # still non-finite
    printed = capsys.readouterr().out
    assert "loss_box_reg = inf" in printed and "predictions on p3 have NaN/inf values" in printed


def test_degenerate_target_boxes_and_nan_parameters_are_named(dataset, tmp_path):
    trainer = make_trainer(dataset, tmp_path)
    with torch.no_grad():
        trainer.model.head.cls_score.weight.view(-1)[0] = math.nan
    watch = trainer.nonfinite_watch
    batch = next(trainer._trainer._data_loader_iter)
    batch[0]["instances"].gt_boxes.tensor[0] = torch.tensor([5.0, 5.0, 5.2, 30.0])
    watch.grad_norms.extend([1.0, 1.2, 0.9, 50.0])
    with pytest.raises(NonFiniteLossError) as info, EventStorage(0):
        trainer.model(batch)
    message = str(info.value)
    assert "non-finite loss: loss_cls = nan" in message
    assert "head.cls_score.weight" in message and "already NaN/inf" in message
    assert "1 degenerate target box(es) (width or height < 1 px" in message
    assert batch[0]["file_name"] in message
    assert "exploding gradient" in message


def test_non_finite_gradient_stops_before_the_update(dataset, tmp_path):
    trainer = make_trainer(dataset, tmp_path)
    weight = trainer.model.head.cls_score.weight
    before = weight.detach().clone()
    weight.register_hook(lambda grad: grad * math.inf)
    message = str(train_until_error(trainer))
    assert "non-finite gradient (the losses were finite) in 1 parameter tensor(s), first head.cls_score.weight" in message
    # The optimizer never stepped with it: the weights are still finite and unchanged.
    torch.testing.assert_close(weight.detach(), before)


def test_grad_norm_history_reads_as_explosion_or_not():
    assert "exploding gradient" in _grad_norm_findings([1.0, 1.1, 0.9, 1.0, 40.0])[0]
    assert "no explosion" in _grad_norm_findings([1.0, 1.1, 0.9, 1.0, 1.2])[0]
    assert _grad_norm_findings([1.0]) == []
    # The last norm is not its own baseline: a 10,000x jump after one iteration is an explosion.
    assert "exploding gradient" in _grad_norm_findings([27.0, 2.641e5])[0]
    assert "exploding gradient" in _grad_norm_findings([27.0, 30.0, 2.641e5])[0]
    assert "no explosion" in _grad_norm_findings([27.0, 30.0])[0]


def test_diagnosis_can_be_turned_off(dataset, tmp_path):
    trainer = make_trainer(dataset, tmp_path, "SOLVER.DIAGNOSE_NONFINITE", "False")
    assert not hasattr(trainer, "nonfinite_watch")
    with torch.no_grad():
        trainer.model.head.bbox_pred.bias.fill_(math.inf)
    with pytest.raises(FloatingPointError) as info:
        trainer.train()
    assert not isinstance(info.value, NonFiniteLossError)
