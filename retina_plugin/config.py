"""
Config keys of retina_plugin.

Everything whose meaning is identical to detectron2's built-in RetinaNet stays under
``cfg.MODEL.RETINANET`` (NUM_CLASSES, IN_FEATURES, NUM_CONVS, IOU_THRESHOLDS, IOU_LABELS,
PRIOR_PROB, FOCAL_LOSS_ALPHA, FOCAL_LOSS_GAMMA, SMOOTH_L1_LOSS_BETA, BBOX_REG_WEIGHTS,
BBOX_REG_LOSS_TYPE, SCORE_THRESH_TEST, TOPK_CANDIDATES_TEST, NMS_THRESH_TEST, NORM), so a
detectron2 RetinaNet yaml keeps working after changing only META_ARCHITECTURE.
What is new lives under ``cfg.MODEL.FOCAL_RETINANET`` (model) and ``cfg.DATASETS.REGISTER``
(datasets registered from yaml / command line, see :mod:`retina_plugin.data.register`).
"""
import ast
import os
from typing import List, Sequence, Tuple

from detectron2.config import CfgNode
from detectron2.config import CfgNode as CN
from detectron2.config import LazyConfig, get_cfg
from detectron2.data import transforms as T

__all__ = [
    "ConfigError",
    "add_retina_config",
    "load_config",
    "merge_overrides",
    "config_value",
    "build_any_model",
    "model_weights",
    "inference_resize",
    "test_resize",
]


class ConfigError(ValueError):
    """
    A config file, key or value that cannot be loaded; the message names it.
    """


def add_retina_config(cfg):
    """
    Add retina_plugin's config keys, with their defaults, to ``cfg`` (in place).
    Call it on ``get_cfg()`` before ``merge_from_file``; :func:`load_config` does both.
    """
    _C = cfg

    _C.MODEL.FOCAL_RETINANET = CN()
    # Head, by name in retina_plugin.modeling.head.FOCAL_RETINANET_HEAD_REGISTRY.
    _C.MODEL.FOCAL_RETINANET.HEAD_NAME = "FocalRetinaNetHead"
    # Channels of the head's 3x3 convs; 0 means "same as the FPN output" (the paper: 256).
    # A narrower head is cheaper on CPU; its state_dict then no longer matches detectron2's.
    _C.MODEL.FOCAL_RETINANET.HEAD_CONV_DIM = 0
    # Classification loss, by name in retina_plugin.modeling.losses.CLASSIFICATION_LOSS_REGISTRY:
    # "SigmoidFocalLoss" (the paper; uses MODEL.RETINANET.FOCAL_LOSS_ALPHA/GAMMA) or
    # "SigmoidBCELoss" (alpha-balanced binary cross entropy, i.e. focal loss with gamma=0)
    # or "OHEMLoss" (the paper's Table 1d baseline: cross entropy over the hardest anchors only,
    # see retina_plugin/modeling/ohem.py and the OHEM keys below), or "QualityFocalLoss" (a
    # quality-aware target, Li et al. 2020: a foreground anchor's class target is the IoU of its
    # predicted box with its ground truth; FOCAL_LOSS_GAMMA is its exponent, alpha unused).
    _C.MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS = "SigmoidFocalLoss"
    # Compute the focal / BCE losses with one autograd function and a closed-form gradient
    # (retina_plugin/modeling/fused_focal_loss.py): same values and gradients, faster, and no
    # (anchors x classes) intermediates kept for backward. False: the reference autograd path.
    _C.MODEL.FOCAL_RETINANET.FUSED_FOCAL_LOSS = True
    # The box loss is chosen by MODEL.RETINANET.BBOX_REG_LOSS_TYPE, as in detectron2:
    # "smooth_l1" (uses SMOOTH_L1_LOSS_BETA), "l1", "giou", "diou", "ciou", or the name of any
    # class in retina_plugin.modeling.losses.BOX_LOSS_REGISTRY.
    # Weight of the box loss relative to the classification loss (the paper: 1).
    _C.MODEL.FOCAL_RETINANET.BOX_LOSS_WEIGHT = 1.0
    # What both losses are divided by:
    #   "num_foreground": the number of anchors assigned to a ground-truth box in the whole
    #       batch (summed over all workers), as in the paper;
    #   "ema": detectron2's exponential moving average of that number per worker
    #       (starts at 100, momentum LOSS_NORMALIZER_MOMENTUM); steadier with 1-2 images/GPU.
    _C.MODEL.FOCAL_RETINANET.LOSS_NORMALIZER = "num_foreground"
    _C.MODEL.FOCAL_RETINANET.LOSS_NORMALIZER_MOMENTUM = 0.9
    # Each ground-truth box also keeps the anchors of highest IoU with it, even below the
    # foreground threshold (the paper's low-quality matches).
    _C.MODEL.FOCAL_RETINANET.ALLOW_LOW_QUALITY_MATCHES = True
    # How anchors get their training labels, by name in
    # retina_plugin.modeling.assigners.ANCHOR_ASSIGNER_REGISTRY:
    #   "IoU": the paper (MODEL.RETINANET.IOU_THRESHOLDS / IOU_LABELS and the low-quality
    #       matches above);
    #   "ATSS": adaptive training sample selection (Zhang et al. 2020): per level the
    #       ATSS_TOPK locations closest to the box center are candidates, foreground where
    #       IoU >= mean + std of the candidates' IoUs and the anchor center is inside the box.
    _C.MODEL.FOCAL_RETINANET.ANCHOR_ASSIGNER = "IoU"
    # ATSS: candidate locations per level and box (x A anchors per location); the paper: 9, with
    # one anchor a location. With detectron2's 9 anchors a location, 3 trains far better in a
    # crowd of small objects (docs/accuracy.md).
    _C.MODEL.FOCAL_RETINANET.ATSS_TOPK = 9
    # Input of the P6/P7 block of the backbone "build_focal_retinanet_resnet_fpn_backbone":
    # "res5" (the paper: C5, as detectron2's build_retinanet_resnet_fpn_backbone) or "p5"
    # (the FPN's P5 output, as torchvision's retinanet_resnet50_fpn_v2).
    _C.MODEL.FOCAL_RETINANET.TOP_BLOCK_IN_FEATURE = "res5"

    # Optimizer of Trainer (train_net.py): "SGD" (detectron2's, the paper: SOLVER.MOMENTUM,
    # NESTEROV, WEIGHT_DECAY, WEIGHT_DECAY_NORM, WEIGHT_DECAY_BIAS) or "AdamW" (SOLVER.BASE_LR,
    # WEIGHT_DECAY and ADAMW_BETAS; no weight decay on norm layers and biases).
    # SOLVER.CLIP_GRADIENTS applies to both.
    _C.SOLVER.OPTIMIZER = "SGD"
    # AdamW's (beta1, beta2).
    _C.SOLVER.ADAMW_BETAS = (0.9, 0.999)
    # With SOLVER.AMP.ENABLED (detectron2's key), the autocast dtype, on CPU and GPU
    # (retina_plugin/training/mixed_precision.py): "bfloat16" (no grad scaler), "float16" (GPU
    # only, with detectron2's grad scaler), or "auto": bfloat16 on a CPU with AMX or AVX512-BF16
    # and on a GPU that supports it, float16 on older GPUs, float32 on a CPU where bfloat16
    # would be emulated. The losses stay float32. The choice is named in log.txt.
    _C.SOLVER.AMP.PRECISION = "auto"

    # Inference fast path (eval mode, no autograd: DefaultPredictor, --eval-only, demo.py): a
    # copy of the backbone and head with FrozenBN / eval-mode BN folded into the preceding
    # convs, in channels_last memory format, rebuilt whenever a weight changes. Same
    # detections; False runs the reference path (detectron2's modules as they are).
    _C.MODEL.FOCAL_RETINANET.FAST_INFERENCE = True
    # The fast path's dtype: "float32", or "bfloat16" (weights and activations; on CPUs with AMX
    # or AVX512-BF16, or GPUs; elsewhere emulated and slower). Not the same detections as float32:
    # compare AP. Decoding, scores and NMS stay float32; the reference path (FAST_INFERENCE
    # False, or while the fast path stands aside) always runs float32.
    _C.MODEL.FOCAL_RETINANET.INFERENCE_DTYPE = "float32"

    # Online hard example mining, used when CLASSIFICATION_LOSS is "OHEMLoss".
    _C.MODEL.FOCAL_RETINANET.OHEM = CN()
    # Anchors kept per image, the hardest by loss (the paper's Table 1d: 128, 256, 512).
    _C.MODEL.FOCAL_RETINANET.OHEM.BATCH_SIZE_PER_IMAGE = 128
    # Negatives per positive among them (3 = the paper's "1:3"); <= 0: no ratio, the hardest
    # anchors whatever their label.
    _C.MODEL.FOCAL_RETINANET.OHEM.NEG_POS_RATIO = 3.0
    # IoU of NMS over the anchors, scored by loss, before picking (the paper: 0.5 or 0.7);
    # <= 0 or >= 1 disables it.
    _C.MODEL.FOCAL_RETINANET.OHEM.NMS_THRESH = 0.7

    # Datasets registered from the config, so that custom data needs no Python.
    _C.DATASETS.REGISTER = CN()
    # COCO-format json datasets: a list of [name, json_file, image_root].
    _C.DATASETS.REGISTER.COCO = []
    # Pascal VOC-style folders (Annotations/*.xml, JPEGImages/*, ImageSets/Main/<split>.txt):
    # a list of [name, dirname, split].
    _C.DATASETS.REGISTER.VOC = []
    # Class names of the VOC datasets above, in label order.
    _C.DATASETS.REGISTER.VOC_CLASS_NAMES = []

    # What training does with an image that cannot be decoded (truncated, corrupt, missing):
    #   "error": stop with an error naming the file (the default);
    #   "skip": log a WARNING naming the file and train on another image instead.
    # Evaluation and demo.py always name the file; demo.py goes on with the other inputs.
    _C.DATASETS.ON_UNREADABLE_IMAGE = "error"

    # Training augmentations applied after detectron2's resize and flip, by name (see
    # retina_plugin/data/augmentation.py): "VerticalFlip", "Rotate90" (quarter turns),
    # "ColorJitter" (brightness, contrast, saturation x [0.8, 1.2]). The paper: none.
    _C.INPUT.EXTRA_AUGMENTATIONS = []

    # When a loss or the gradient turns NaN/inf, stop with a diagnosis (which loss term, the
    # iteration, learning rates, the batch's file names, what looks wrong: degenerate or huge
    # target boxes, huge predicted deltas, gradient norm history, non-finite parameters) and
    # save the batch and model state for tools/replay_batch.py. Costs one gradient-norm
    # computation per iteration; False leaves detectron2's plain FloatingPointError.
    _C.SOLVER.DIAGNOSE_NONFINITE = True

    # Large images (retina_plugin/slicing, docs/prediction.md "Large images"): predict and
    # evaluate an image window by window, so that small objects stay at the scale the model was
    # trained on, instead of resizing the whole image to INPUT.MIN_SIZE_TEST.
    _C.TEST.SLICE = CN()
    # Evaluation (train_net.py --eval-only, and the periodic evaluation) and tools/predict.py
    # slice every image (predict.py's --slice H W sets this and SIZE); SlicedPredictor always.
    _C.TEST.SLICE.ENABLED = False
    # Window (height, width) in pixels of the image. A window larger than the image is an
    # error (predict that image whole).
    _C.TEST.SLICE.SIZE = (512, 512)
    # The factor every window is resized by: the scale the model saw its training tiles at
    # (512-px tiles trained at INPUT.MIN_SIZE_TRAIN ~256: 0.5), so that a window may be larger
    # than a tile (fewer objects cut) without shrinking the objects. 0: each window resized by
    # INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST as a test image is (SIZE must then be the tile size).
    _C.TEST.SLICE.SCALE = 0.0
    # Fraction of a window that its neighbour also covers: an object smaller than the overlap
    # is whole in some window.
    _C.TEST.SLICE.OVERLAP = 0.25
    # How the windows' detections become one set (retina_plugin/slicing/merge.py): a box that
    # touches an inner window edge is a partial view, dropped when another window saw that
    # object whole; when every view is cut, "MERGE" joins them into their union box, "NMS"
    # keeps the best one (a part, for an object larger than the overlap; never a box the model
    # did not make). "NMS" never lost to "MERGE" on the reef models measured. Whole views of one
    # object: NMS at MERGE_IOU_THRESH.
    _C.TEST.SLICE.MERGE = "NMS"
    _C.TEST.SLICE.MERGE_IOU_THRESH = 0.5
    # A partial view and another view of its class are one object when, clipped to the area
    # both windows see, their boxes have at least this IoU. Of 0.5 / 0.7 / 0.9, only 0.9 was
    # ahead of plain class-wise NMS for both reef models measured (docs/prediction.md "Large
    # images"); lower values join touching neighbours of one class into one detection.
    _C.TEST.SLICE.PARTIAL_IOU_THRESH = 0.9
    # A box within this many pixels (of the resized window the model sees) of an inner window
    # edge is a partial view.
    _C.TEST.SLICE.EDGE_MARGIN = 2.0
    # Also run the whole image, resized to the test size, for objects larger than a window.
    _C.TEST.SLICE.FULL_IMAGE = False
    # Windows per model call.
    _C.TEST.SLICE.BATCH_SIZE = 4
    # Detections kept per image after merging (0: all); also COCOEvaluator's maxDets when
    # evaluating sliced (COCO's 100 would cut a large image's recall).
    _C.TEST.SLICE.DETECTIONS_PER_IMAGE = 1000


def load_config(config_file: str, opts: Sequence[str] = (), where: str = "command line"):
    """
    The one config loader of the package and its tools. A yaml file gives a CfgNode:
    ``get_cfg()`` + :func:`add_retina_config` + the file + ``opts`` (KEY VALUE pairs, see
    :func:`merge_overrides`). A ``.py`` file gives a LazyConfig with ``opts`` as ``key=value``
    overrides (detectron2's lazy-config convention). Errors name the file, key and value.
    """
    if not config_file.endswith((".yaml", ".yml", ".py")):
        raise ConfigError(f"config file {config_file!r}: expected a .yaml or .py file")
    if not os.path.isfile(config_file):
        raise ConfigError(f"config file {config_file!r} does not exist")
    if config_file.endswith(".py"):
        cfg = LazyConfig.load(config_file)
        return LazyConfig.apply_overrides(cfg, list(opts))
    cfg = get_cfg()
    add_retina_config(cfg)
    try:
        cfg.merge_from_file(config_file)
    except (KeyError, AssertionError, ValueError, TypeError) as e:
        raise ConfigError(f"{config_file}: {type(e).__name__}: {e}") from None
    merge_overrides(cfg, opts, where)
    return cfg


def _coerce(cfg: CfgNode, key: str, value: str) -> str:
    """
    An int given for a float key (GAMMA=0) becomes that float ("0.0"), as a user means it;
    yacs would reject the type.
    """
    node = cfg
    for part in key.split(".")[:-1]:
        node = node.get(part) if isinstance(node, CfgNode) else None
        if node is None:
            return value
    original = node.get(key.split(".")[-1]) if isinstance(node, CfgNode) else None
    if isinstance(original, float):
        try:
            decoded = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        if isinstance(decoded, int) and not isinstance(decoded, bool):
            return repr(float(decoded))
    return value


def merge_overrides(cfg: CfgNode, opts: Sequence[str], where: str = "command line") -> List[str]:
    """
    ``cfg.merge_from_list(opts)`` pair by pair, an int given for a float key taken as that
    float; returns the opts as merged. Raises :class:`ConfigError` naming ``where``, the key
    and the value.
    """
    opts = [str(o) for o in opts]
    if len(opts) % 2:
        raise ConfigError(f"{where}: overrides must be KEY VALUE pairs, got {opts}")
    merged = []
    for key, value in zip(opts[0::2], opts[1::2]):
        value = _coerce(cfg, key, value)
        try:
            cfg.merge_from_list([key, value])
        except (AssertionError, KeyError) as e:
            raise ConfigError(f"{where}: unknown config key {key!r} ({e})") from None
        except (ValueError, TypeError, SyntaxError) as e:
            raise ConfigError(f"{where}: bad value {value!r} for {key}: {e}") from None
        merged += [key, value]
    return merged


def config_value(cfg, key: str):
    """The value of a dotted key (``"MODEL.RETINANET.NUM_CLASSES"``) of a CfgNode."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def build_any_model(cfg):
    """
    The model of either config kind (yaml CfgNode or LazyConfig), randomly initialized.
    """
    from detectron2.config import instantiate
    from detectron2.modeling import build_model

    if isinstance(cfg, CfgNode):
        return build_model(cfg)
    return instantiate(cfg.model)


def model_weights(cfg) -> str:
    """
    The checkpoint a config names: MODEL.WEIGHTS, or train.init_checkpoint for LazyConfig.
    """
    if isinstance(cfg, CfgNode):
        return cfg.MODEL.WEIGHTS
    return cfg.train.get("init_checkpoint", "")


def inference_resize(cfg) -> Tuple[int, int, str]:
    """
    (shortest edge, max size, input format) of the config's test-time resize.
    """
    if isinstance(cfg, CfgNode):
        return cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.FORMAT
    resizes = [a for a in cfg.dataloader.test.mapper.augmentations if "short_edge_length" in a]
    if not resizes:
        raise ConfigError("dataloader.test.mapper.augmentations has no ResizeShortestEdge")
    return resizes[0].short_edge_length, resizes[0].max_size, cfg.model.input_format


def test_resize(cfg):
    """The config's test-time resize as an augmentation (DefaultPredictor's ResizeShortestEdge)."""
    min_size, max_size, _ = inference_resize(cfg)
    return T.ResizeShortestEdge(min_size, max_size)
