"""
The domain of each config value, written once in :data:`DOMAINS`, and the checks that need
nothing but the config: a value outside its domain, keys that contradict each other.

A leaf of the package (it imports only :mod:`retina_plugin.config`), so that the modules that
build models and data can check their arguments with :func:`check_value`: constructors that take
these values as plain arguments (LazyConfig users never go through a CfgNode) name the key the
value stands for, and give the message :mod:`retina_plugin.config_checks` gives for a whole
config. Registered names are checked there, above ``modeling/`` and ``data/``.
"""
import math
from numbers import Real
from typing import Callable, Dict, List, Tuple

from .config import config_value

__all__ = [
    "AMP_PRECISIONS",
    "DOMAINS",
    "EXTRA_AUGMENTATION_NAMES",
    "TRAINING_PREFIXES",
    "in_domain",
    "check_value",
    "value_errors",
    "raise_errors",
    "check_model_values",
    "anchors_per_location",
]


def _number(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x)


def _integer(minimum: int) -> Tuple[Callable, str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
            f"an integer >= {minimum}")


def _one_of(*choices) -> Tuple[Callable, str]:
    return (lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


def _sizes_per_level(v) -> bool:
    return len(v) >= 1 and all(len(s) >= 1 and all(_number(x) and x > 0 for x in s) for s in v)


# INPUT.EXTRA_AUGMENTATIONS: what retina_plugin.data.augmentation builds.
EXTRA_AUGMENTATION_NAMES = ("VerticalFlip", "Rotate90", "ColorJitter")


# SOLVER.AMP.PRECISION: what retina_plugin.training.mixed_precision resolves.
AMP_PRECISIONS = ("auto", "bfloat16", "float16")


# key -> (does this value belong to the domain, the domain in words)
DOMAINS: Dict[str, Tuple[Callable, str]] = {
    # ------------------------------------------------------------------ model
    "MODEL.RETINANET.NUM_CLASSES": _integer(1),
    "MODEL.RETINANET.NUM_CONVS": _integer(0),
    "MODEL.RETINANET.FOCAL_LOSS_GAMMA": (
        lambda v: _number(v) and v >= 0, "gamma >= 0 (0 = alpha-balanced cross entropy)"),
    "MODEL.RETINANET.FOCAL_LOSS_ALPHA": (
        lambda v: _number(v) and v <= 1,
        "alpha in [0, 1], or < 0 to disable the weighting (alpha > 1 makes the negatives' loss "
        "negative)"),
    "MODEL.RETINANET.PRIOR_PROB": (lambda v: _number(v) and 0 < v < 1, "a probability in (0, 1)"),
    "MODEL.RETINANET.SCORE_THRESH_TEST": (lambda v: _number(v) and 0 <= v <= 1, "a score in [0, 1]"),
    "MODEL.RETINANET.NMS_THRESH_TEST": (lambda v: _number(v) and 0 <= v <= 1, "an IoU in [0, 1]"),
    "MODEL.RETINANET.TOPK_CANDIDATES_TEST": _integer(1),
    "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "MODEL.RETINANET.BBOX_REG_WEIGHTS": (
        lambda v: len(v) == 4 and all(_number(w) and w > 0 for w in v), "4 positive numbers"),
    "MODEL.RETINANET.IOU_THRESHOLDS": (
        lambda v: len(v) >= 1 and all(_number(t) and 0 <= t <= 1 for t in v) and list(v) == sorted(v),
        "increasing IoUs in [0, 1]"),
    "MODEL.ANCHOR_GENERATOR.SIZES": (_sizes_per_level, "per level, a non-empty list of positive sizes"),
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": (
        _sizes_per_level, "per level, a non-empty list of positive ratios"),
    "TEST.DETECTIONS_PER_IMAGE": _integer(1),
    "MODEL.FOCAL_RETINANET.HEAD_CONV_DIM": (
        lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0 = FPN channels)"),
    "MODEL.FOCAL_RETINANET.BOX_LOSS_WEIGHT": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "MODEL.FOCAL_RETINANET.LOSS_NORMALIZER": _one_of("num_foreground", "ema"),
    "MODEL.FOCAL_RETINANET.LOSS_NORMALIZER_MOMENTUM": (
        lambda v: _number(v) and 0 <= v < 1, "a momentum in [0, 1)"),
    "MODEL.FOCAL_RETINANET.ATSS_TOPK": _integer(1),
    "MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE": _one_of("res5", "p5"),
    "MODEL.FOCAL_RETINANET.INFERENCE_DTYPE": _one_of("float32", "bfloat16"),
    "MODEL.FOCAL_RETINANET.OHEM.BATCH_SIZE_PER_IMAGE": _integer(1),
    "MODEL.FOCAL_RETINANET.OHEM.NEG_POS_RATIO": (lambda v: _number(v), "a number (<= 0: no ratio)"),
    "MODEL.FOCAL_RETINANET.OHEM.NMS_THRESH": (lambda v: _number(v), "an IoU (<= 0 or >= 1: no NMS)"),
    # --------------------------------------------------------------- training
    "SOLVER.OPTIMIZER": _one_of("SGD", "AdamW"),
    "SOLVER.AMP.PRECISION": _one_of(*AMP_PRECISIONS),
    "SOLVER.ADAMW_BETAS": (lambda v: len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v),
                           "two betas in [0, 1)"),
    "SOLVER.BASE_LR": (lambda v: _number(v) and v > 0, "a learning rate > 0"),
    "SOLVER.MOMENTUM": (lambda v: _number(v) and 0 <= v < 1, "a momentum in [0, 1)"),
    "SOLVER.WEIGHT_DECAY": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "SOLVER.GAMMA": (lambda v: _number(v) and v > 0, "a factor > 0"),
    "SOLVER.IMS_PER_BATCH": _integer(1),
    "SOLVER.MAX_ITER": _integer(1),
    "SOLVER.CHECKPOINT_PERIOD": _integer(1),
    "SOLVER.WARMUP_ITERS": _integer(0),
    "SOLVER.WARMUP_FACTOR": (lambda v: _number(v) and 0 <= v <= 1, "a factor in [0, 1]"),
    "SOLVER.STEPS": (lambda v: all(isinstance(s, int) and s > 0 for s in v) and list(v) == sorted(v),
                     "increasing positive iterations"),
    "INPUT.MIN_SIZE_TRAIN": (lambda v: len(v) >= 1 and all(isinstance(s, int) and s >= 1 for s in v),
                             "positive integer sizes"),
    "INPUT.MAX_SIZE_TRAIN": _integer(1),
    "INPUT.MIN_SIZE_TEST": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0 = no resizing)"),
    "INPUT.MAX_SIZE_TEST": _integer(1),
    "TEST.EVAL_PERIOD": _integer(0),
    "DATASETS.ON_UNREADABLE_IMAGE": _one_of("error", "skip"),
    "INPUT.EXTRA_AUGMENTATIONS": (
        lambda v: all(n in EXTRA_AUGMENTATION_NAMES for n in v),
        "a list of 'VerticalFlip', 'Rotate90', 'ColorJitter'"),
    # ----------------------------------------------------------- large images
    "TEST.SLICE.SIZE": (lambda v: len(v) == 2 and all(isinstance(s, int) and s >= 1 for s in v),
                        "(height, width): two positive integers (pixels of the image)"),
    "TEST.SLICE.SCALE": (lambda v: _number(v) and 0 <= v <= 16,
                         "a resize factor in (0, 16], or 0 for the test resize"),
    "TEST.SLICE.OVERLAP": (lambda v: _number(v) and 0 <= v < 1,
                           "a fraction in [0, 1) of a window that its neighbour also covers"),
    "TEST.SLICE.MERGE": _one_of("MERGE", "NMS"),
    "TEST.SLICE.MERGE_IOU_THRESH": (lambda v: _number(v) and 0 < v <= 1, "an IoU in (0, 1]"),
    "TEST.SLICE.PARTIAL_IOU_THRESH": (lambda v: _number(v) and 0 < v <= 1,
                                      "an IoU in (0, 1]"),
    "TEST.SLICE.EDGE_MARGIN": (lambda v: _number(v) and v >= 0, "pixels >= 0"),
    "TEST.SLICE.BATCH_SIZE": _integer(1),
    "TEST.SLICE.DETECTIONS_PER_IMAGE": _integer(0),
}

# Checked by check_config only when a training run will use them.
TRAINING_PREFIXES = ("SOLVER.", "INPUT.MIN_SIZE_TRAIN", "INPUT.MAX_SIZE_TRAIN", "TEST.EVAL_PERIOD",
                      "DATASETS.", "INPUT.EXTRA_AUGMENTATIONS")


def in_domain(key: str, value) -> bool:
    ok, _ = DOMAINS[key]
    try:
        return bool(ok(value))
    except (TypeError, ValueError):
        return False


def _message(key: str, value) -> str:
    return f"{key} = {value!r}: expected {DOMAINS[key][1]}"


def check_value(key: str, value) -> None:
    """
    Raise ValueError if ``value`` is outside the domain of config key ``key`` (a key of
    :data:`DOMAINS`); the message names both, as :func:`check_config` does.
    """
    if not in_domain(key, value):
        raise ValueError(_message(key, value))


# Backbone builders that read MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE.
BUILDERS_WITH_TOP_BLOCK_CHOICE = ("build_focal_retinanet_resnet_fpn_backbone",)


def _cross_key_errors(cfg) -> List[str]:
    errors = []
    top_block = cfg.MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE
    if top_block == "p5" and cfg.MODEL.BACKBONE.NAME not in BUILDERS_WITH_TOP_BLOCK_CHOICE:
        errors.append(
            f"MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE = 'p5' needs MODEL.BACKBONE.NAME "
            f"'build_focal_retinanet_resnet_fpn_backbone'; {cfg.MODEL.BACKBONE.NAME!r} always "
            "computes P6 from res5"
        )
    labels = cfg.MODEL.RETINANET.IOU_LABELS
    if len(labels) != len(cfg.MODEL.RETINANET.IOU_THRESHOLDS) + 1 or not all(x in (-1, 0, 1) for x in labels):
        errors.append(f"MODEL.RETINANET.IOU_LABELS = {labels!r}: expected one label in {{-1, 0, 1}} "
                      "more than MODEL.RETINANET.IOU_THRESHOLDS")
    if cfg.TEST.SLICE.ENABLED and cfg.TEST.AUG.ENABLED:
        errors.append("TEST.SLICE.ENABLED and TEST.AUG.ENABLED: test-time augmentation of sliced "
                      "images is not supported; enable one of them")
    sizes, ratios = cfg.MODEL.ANCHOR_GENERATOR.SIZES, cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS
    if in_domain("MODEL.ANCHOR_GENERATOR.SIZES", sizes) and in_domain("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", ratios):
        try:
            anchors_per_location(cfg)
        except ValueError as e:
            errors.append(str(e))
    return errors


def anchors_per_location(cfg) -> int:
    """
    A, the anchors per feature-map location of MODEL.ANCHOR_GENERATOR (SIZES x ASPECT_RATIOS
    per level; detectron2 repeats a single entry over all levels). Raises ValueError when it
    differs between levels: the head shares its weights across levels and needs one A.
    """
    sizes, ratios = cfg.MODEL.ANCHOR_GENERATOR.SIZES, cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS
    levels = max(len(sizes), len(ratios))
    counts = {len(sizes[i if len(sizes) > 1 else 0]) * len(ratios[i if len(ratios) > 1 else 0])
              for i in range(levels)}
    if len(counts) > 1:
        raise ValueError(
            f"MODEL.ANCHOR_GENERATOR gives different numbers of anchors per location on "
            f"different levels ({sorted(counts)}); the head shares its weights across levels "
            "and needs one"
        )
    return counts.pop()


def value_errors(cfg, training: bool = True) -> List[str]:
    """
    Every value of ``cfg`` outside its domain and every pair of keys that contradict each
    other, each naming the key and the value. ``training=False`` leaves out the solver,
    training-input and dataset keys.
    """
    errors = []
    for key in DOMAINS:
        if not training and key.startswith(TRAINING_PREFIXES):
            continue
        if key == "SOLVER.ADAMW_BETAS" and cfg.SOLVER.OPTIMIZER != "AdamW":
            continue
        value = config_value(cfg, key)
        if not in_domain(key, value):
            errors.append(_message(key, value))
    if training and cfg.SOLVER.CLIP_GRADIENTS.ENABLED:
        value = cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE
        if not (_number(value) and value > 0):
            errors.append(f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE = {value!r}: expected a number > 0")
    return errors + _cross_key_errors(cfg)


def raise_errors(errors: List[str]) -> None:
    """Raise ValueError listing ``errors``, if any."""
    if errors:
        raise ValueError("Invalid config value(s):\n  " + "\n  ".join(errors))


def check_model_values(cfg) -> None:
    """What building the model needs: :func:`value_errors` without the training keys."""
    raise_errors(value_errors(cfg, training=False))
