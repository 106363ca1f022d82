"""
Checkpoints of detectron2's built-in RetinaNet load into FocalRetinaNet and give the same
detections and the same training losses.
"""
import pytest
import torch

from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from retina_plugin import FocalRetinaNet

from .conftest import CONFIGS, load_cfg
from .test_matching_and_losses import batch

# Paper setup (no norm in FPN/head, FrozenBN backbone) and the CPU demo's (BN/GN).
SETUPS = {
    "paper": ["MODEL.RESNETS.NORM", "FrozenBN", "MODEL.FPN.NORM", "", "MODEL.RETINANET.NORM", ""],
    "gn_bn": ["MODEL.RETINANET.NORM", "GN"],
    "bn_head": ["MODEL.RETINANET.NORM", "BN"],
}


def model_pair(opts):
    cfg = load_cfg(opts=["MODEL.RETINANET.NUM_CLASSES", 4, *opts])
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    theirs = build_model(cfg)
    cfg.MODEL.META_ARCHITECTURE = "FocalRetinaNet"
    ours = build_model(cfg)
    assert isinstance(ours, FocalRetinaNet) and type(theirs).__name__ == "RetinaNet"
    # Spread the scores so that thresholding, top-k and NMS all have work to do.
    with torch.no_grad():
        theirs.head.cls_score.weight.normal_(0, 0.2)
        theirs.head.cls_score.bias.fill_(-2.0)
        theirs.head.bbox_pred.weight.normal_(0, 0.05)
    return theirs, ours


def test_model_zoo_r50_state_dict_has_the_same_keys_and_shapes():
    ours = build_model(load_cfg(CONFIGS / "retina_R50.yaml"))
    zoo_cfg = get_cfg()
    zoo_cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml"))
    zoo_cfg.MODEL.DEVICE = "cpu"
    theirs = build_model(zoo_cfg)
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert ours_shapes == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


@pytest.mark.parametrize("setup", list(SETUPS))
def test_detectron2_checkpoint_loads_without_missing_or_unexpected_keys(setup, tmp_path):
    theirs, ours = model_pair(SETUPS[setup])
    DetectionCheckpointer(theirs, save_dir=str(tmp_path)).save("retinanet")
    result = ours.load_state_dict(torch.load(tmp_path / "retinanet.pth")["model"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # detectron2's own loader, as DefaultPredictor / train_net use it.
    fresh = build_model(load_cfg(opts=["MODEL.RETINANET.NUM_CLASSES", 4, *SETUPS[setup]]))
    DetectionCheckpointer(fresh).load(str(tmp_path / "retinanet.pth"))
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, msg=key)


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("fast_inference", [False, True])
def test_same_detections_as_detectron2(setup, fast_inference):
    theirs, ours = model_pair(SETUPS[setup])
    ours.load_state_dict(theirs.state_dict())
    theirs.eval(), ours.eval()
    # The reference path is detectron2's computation, to float rounding; the fast path
    # (folded norms, channels_last) rounds differently: the 1e-3 relative.
    ours.fast_inference = fast_inference
    tolerance = {"rtol": 1e-3, "atol": 1e-3} if fast_inference else {}
    inputs = [
        {"image": x["image"], "height": h, "width": w}
        for x, (h, w) in zip(batch(num_images=2, size=128), [(128, 128), (200, 160)])
    ]
    with torch.no_grad():
        expected, actual = theirs(inputs), ours(inputs)
    for e, a in zip(expected, actual):
        e, a = e["instances"], a["instances"]
        assert len(e) > 10 and len(a) == len(e)
        torch.testing.assert_close(a.pred_boxes.tensor, e.pred_boxes.tensor, **tolerance)
        torch.testing.assert_close(a.scores, e.scores, **tolerance)
        assert torch.equal(a.pred_classes, e.pred_classes)
        assert a.image_size == e.image_size


@pytest.mark.parametrize("box_loss, beta", [("smooth_l1", 0.0), ("smooth_l1", 0.1), ("giou", 0.0)])
@pytest.mark.parametrize("setup", ["paper", "gn_bn"])
def test_same_training_losses_as_detectron2(setup, box_loss, beta):
    opts = SETUPS[setup] + [
        "MODEL.RETINANET.BBOX_REG_LOSS_TYPE", box_loss,
        "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA", beta,
        # detectron2 divides by an EMA of the foreground count.
        "MODEL.FOCAL_RETINANET.LOSS_NORMALIZER", "ema",
    ]
    theirs, ours = model_pair(opts)
    ours.load_state_dict(theirs.state_dict())
    theirs.train(), ours.train()
    inputs = batch(num_images=2, size=128)
    with EventStorage():
        for _ in range(2):  # the second step checks the EMA update too
            expected, actual = theirs(inputs), ours(inputs)
            assert set(actual) == set(expected) == {"loss_cls", "loss_box_reg"}
            for key in expected:
                torch.testing.assert_close(actual[key], expected[key], rtol=1e-4, atol=1e-6)
    # Same gradients, too, up to float summation order (relative to each tensor's scale).
    (sum(expected.values())).backward()
    (sum(actual.values())).backward()
    for (name, p_theirs), p_ours in zip(theirs.named_parameters(), ours.parameters()):
        if p_theirs.grad is not None:
            scale = p_theirs.grad.abs().max().item()
            torch.testing.assert_close(p_ours.grad, p_theirs.grad, rtol=1e-3, atol=1e-5 * scale)
