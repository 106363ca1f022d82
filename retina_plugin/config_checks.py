"""
Domain checks of the config keys FocalRetinaNet reads: each value outside its domain is a
ValueError naming the key and the value, before anything is built. Called by
``FocalRetinaNet.from_config`` (so Python users of ``build_model`` get them too) and by
``train_net.py`` (which also checks the solver and input keys).
"""
import math
from numbers import Real
from typing import Callable, List

__all__ = ["check_config", "check_model_config", "check_training_config"]


def _is_number(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x)


def _check(errors: List[str], cfg, key: str, ok: Callable, domain: str) -> None:
    node = cfg
    for part in key.split("."):
        node = node[part]
    try:
        good = ok(node)
    except (TypeError, ValueError):
        good = False
    if not good:
        errors.append(f"{key} = {node!r}: expected {domain}")


def _raise(errors: List[str]) -> None:
    if errors:
        raise ValueError("Invalid config value(s):\n  " + "\n  ".join(errors))


def _model_errors(cfg) -> List[str]:
    e: List[str] = []
    r = "MODEL.RETINANET."
    f = "MODEL.FOCAL_RETINANET."
    n = _is_number
    _check(e, cfg, r + "NUM_CLASSES", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
    _check(e, cfg, r + "NUM_CONVS", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
    _check(e, cfg, r + "FOCAL_LOSS_GAMMA", lambda v: n(v) and v >= 0,
           "gamma >= 0 (0 = alpha-balanced cross entropy)")
    _check(e, cfg, r + "FOCAL_LOSS_ALPHA", lambda v: n(v) and v <= 1,
           "alpha in [0, 1], or < 0 to disable the weighting (alpha > 1 makes the negatives' "
           "loss negative)")
    _check(e, cfg, r + "PRIOR_PROB", lambda v: n(v) and 0 < v < 1, "a probability in (0, 1)")
    _check(e, cfg, r + "SCORE_THRESH_TEST", lambda v: n(v) and 0 <= v <= 1, "a score in [0, 1]")
    _check(e, cfg, r + "NMS_THRESH_TEST", lambda v: n(v) and 0 <= v <= 1, "an IoU in [0, 1]")
    _check(e, cfg, r + "TOPK_CANDIDATES_TEST", lambda v: isinstance(v, int) and v >= 1,
           "an integer >= 1")
    _check(e, cfg, r + "SMOOTH_L1_LOSS_BETA", lambda v: n(v) and v >= 0, "a number >= 0")
    _check(e, cfg, r + "BBOX_REG_WEIGHTS", lambda v: len(v) == 4 and all(n(w) and w > 0 for w in v),
           "4 positive numbers")
    _check(e, cfg, r + "IOU_THRESHOLDS",
           lambda v: len(v) >= 1 and all(n(t) and 0 <= t <= 1 for t in v) and list(v) == sorted(v),
           "increasing IoUs in [0, 1]")
    _check(e, cfg, r + "IOU_LABELS",
           lambda v: len(v) == len(cfg.MODEL.RETINANET.IOU_THRESHOLDS) + 1
           and all(x in (-1, 0, 1) for x in v),
           "one label in {-1, 0, 1} more than MODEL.RETINANET.IOU_THRESHOLDS")
    _check(e, cfg, "MODEL.ANCHOR_GENERATOR.SIZES",
           lambda v: len(v) >= 1 and all(len(s) >= 1 and all(n(x) and x > 0 for x in s) for s in v),
           "per level, a non-empty list of positive sizes")
    _check(e, cfg, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
           lambda v: len(v) >= 1 and all(len(s) >= 1 and all(n(x) and x > 0 for x in s) for s in v),
           "per level, a non-empty list of positive ratios")
    _check(e, cfg, "TEST.DETECTIONS_PER_IMAGE", lambda v: isinstance(v, int) and v >= 1,
           "an integer >= 1")
    _check(e, cfg, f + "HEAD_CONV_DIM", lambda v: isinstance(v, int) and v >= 0,
           "an integer >= 0 (0 = FPN channels)")
    _check(e, cfg, f + "BOX_LOSS_WEIGHT", lambda v: n(v) and v >= 0, "a number >= 0")
    _check(e, cfg, f + "LOSS_NORMALIZER_MOMENTUM", lambda v: n(v) and 0 <= v < 1,
           "a momentum in [0, 1)")
    return e


def _training_errors(cfg) -> List[str]:
    e: List[str] = []
    n = _is_number
    positive_int = (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
    _check(e, cfg, "SOLVER.BASE_LR", lambda v: n(v) and v > 0, "a learning rate > 0")
    _check(e, cfg, "SOLVER.MOMENTUM", lambda v: n(v) and 0 <= v < 1, "a momentum in [0, 1)")
    _check(e, cfg, "SOLVER.WEIGHT_DECAY", lambda v: n(v) and v >= 0, "a number >= 0")
    _check(e, cfg, "SOLVER.GAMMA", lambda v: n(v) and v > 0, "a factor > 0")
    _check(e, cfg, "SOLVER.IMS_PER_BATCH", *positive_int)
    _check(e, cfg, "SOLVER.MAX_ITER", *positive_int)
    _check(e, cfg, "SOLVER.CHECKPOINT_PERIOD", *positive_int)
    _check(e, cfg, "SOLVER.WARMUP_ITERS", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
    _check(e, cfg, "SOLVER.WARMUP_FACTOR", lambda v: n(v) and 0 <= v <= 1, "a factor in [0, 1]")
    _check(e, cfg, "SOLVER.STEPS", lambda v: all(isinstance(s, int) and s > 0 for s in v)
           and list(v) == sorted(v), "increasing positive iterations")
    if cfg.SOLVER.CLIP_GRADIENTS.ENABLED:
        _check(e, cfg, "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", lambda v: n(v) and v > 0, "a number > 0")
    _check(e, cfg, "INPUT.MIN_SIZE_TRAIN",
           lambda v: len(v) >= 1 and all(isinstance(s, int) and s >= 1 for s in v),
           "positive integer sizes")
    _check(e, cfg, "INPUT.MAX_SIZE_TRAIN", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
    _check(e, cfg, "INPUT.MIN_SIZE_TEST", lambda v: isinstance(v, int) and v >= 0,
           "an integer >= 0 (0 = no resizing)")
    _check(e, cfg, "INPUT.MAX_SIZE_TEST", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
    _check(e, cfg, "TEST.EVAL_PERIOD", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
    _check(e, cfg, "DATASETS.ON_UNREADABLE_IMAGE", lambda v: v in ("error", "skip"),
           "'error' or 'skip'")
    return e


def check_model_config(cfg) -> None:
    """
    Raise ValueError listing every model key (MODEL.RETINANET, MODEL.FOCAL_RETINANET, anchors,
    TEST.DETECTIONS_PER_IMAGE) whose value is outside its domain.
    """
    _raise(_model_errors(cfg))


def check_training_config(cfg) -> None:
    """
    Raise ValueError listing every solver / input / data key outside its domain.
    """
    _raise(_training_errors(cfg))


def check_config(cfg) -> None:
    """
    Both checks above, reported together.
    """
    _raise(_model_errors(cfg) + _training_errors(cfg))
