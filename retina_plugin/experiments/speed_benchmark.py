"""
The speed benchmark's models, inputs and measurements (``tools/benchmark.py`` and the scripts
of ``experiments/speed_levers/``): FocalRetinaNet (fast and reference path), detectron2's
RetinaNet and torchvision's ``retinanet_resnet50_fpn`` built from one config with shared
random weights made to look trained, their inference and training-step runners, the focal
losses, the machine's 3x3-conv throughput and the models' FLOPs.
"""
import contextlib
import copy

import torch

from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from ..modeling.fused_focal_loss import fused_sigmoid_focal_loss_from_labels
from ..utils.timing import median_latency_ms

__all__ = [
    "MODELS",
    "SHORT",
    "LOSSES",
    "build_models",
    "calibrate_head",
    "make_inputs",
    "autocast",
    "runner",
    "precision_runners",
    "loss_runners",
    "conv_gflops_per_s",
    "model_gflops",
    "ENGINE_VARIANTS",
    "engine_variants",
    "build_benchmark_engines",
]

MODELS = ["FocalRetinaNet (fast path)", "FocalRetinaNet (reference path)", "detectron2 RetinaNet", "torchvision retinanet_resnet50_fpn"]
SHORT = {MODELS[0]: "FocalRetinaNet", MODELS[1]: "FocalRetinaNet_reference", MODELS[2]: "RetinaNet", MODELS[3]: "torchvision"}
LOSSES = ["ours", "torchvision", "fvcore"]


def build_models(cfg, size, names=MODELS):
    """The models ``names`` of MODELS; the detectron2-based ones share weights."""
    device = cfg.MODEL.DEVICE
    # Built and initialized on the CPU (one random stream on every device), then moved.
    cfg = cfg.clone()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    torch.manual_seed(0)
    reference = build_model(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # Trained-like norms (folding has something to fold) and spread class logits (decoding
        # and NMS have candidates, as with a trained model).
        for m in reference.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    calibrate_head(reference, make_inputs(size, 1, cfg.MODEL.RETINANET.NUM_CLASSES), g)
    models = {MODELS[2]: reference}
    cfg.MODEL.META_ARCHITECTURE = "FocalRetinaNet"
    for name, fast in ((MODELS[0], True), (MODELS[1], False)):
        if name not in names:
            continue
        cfg.MODEL.FOCAL_RETINANET.FAST_INFERENCE = fast
        cfg.MODEL.FOCAL_RETINANET.FUSED_FOCAL_LOSS = fast
        model = build_model(cfg)
        model.load_state_dict(reference.state_dict())
        models[name] = model
    if MODELS[3] in names:
        from torchvision.models.detection import retinanet_resnet50_fpn

        models[MODELS[3]] = retinanet_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=cfg.MODEL.RETINANET.NUM_CLASSES,
            min_size=min(size), max_size=max(size),
        )
    return {n: models[n].to(device) for n in names}


def calibrate_head(model, inputs, generator):
    """
    Rescale the random predictors so that the outputs look like a trained model's: class logits
    around -4 with std 2 (hundreds of candidates above the score threshold) and box deltas with
    std 0.2. Random backbones give features of any scale (here up to 1e5), which would make every
    box degenerate and leave no detection to compare.
    """
    rms = {}
    hooks = [
        getattr(model.head, name).register_forward_pre_hook(
            lambda module, args, name=name: rms.setdefault(name, []).append(args[0].pow(2).mean())
        )
        for name in ("cls_score", "bbox_pred")
    ]
    model.eval()
    with torch.no_grad():
        model(inputs)
        for name, std, bias in (("cls_score", 2.0, -4.0), ("bbox_pred", 0.2, 0.0)):
            conv = getattr(model.head, name)
            fan_in = conv.weight[0].numel()
            feature_rms = float(torch.stack(rms[name]).mean().sqrt())
            conv.weight.normal_(0, std / (feature_rms * fan_in**0.5 + 1e-12), generator=generator)
            conv.bias.fill_(bias)
    for hook in hooks:
        hook.remove()


def make_inputs(size, num_images, num_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    inputs = []
    for _ in range(num_images):
        xy = torch.rand(20, 2, generator=g) * torch.tensor([w, h]) * 0.8
        wh = 16 + torch.rand(20, 2, generator=g) * min(h, w) * 0.3
        boxes = torch.cat([xy, torch.min(xy + wh, torch.tensor([w - 1.0, h - 1.0]))], 1)
        classes = torch.randint(0, num_classes, (20,), generator=g)
        inputs.append({
            "image": torch.rand(3, h, w, generator=g) * 255,
            "instances": Instances((h, w), gt_boxes=Boxes(boxes), gt_classes=classes),
        })
    return inputs


def autocast(device, dtype=None):
    """``dtype`` autocast on ``device`` (float16, bfloat16), or nothing when ``dtype`` is None."""
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def runner(name, model, inputs, kind, autocast_dtype=None):
    """
    A no-argument callable: one inference (batch 1) or one training step (batch 2), under
    ``autocast_dtype`` autocast if given (float16 with a grad scaler, as detectron2's AMPTrainer).
    """
    torchvision = name == MODELS[3]
    device = next(model.parameters()).device
    if torchvision:
        images = [(x["image"][[2, 1, 0]] / 255.0).to(device) for x in inputs]
    if kind == "inference":
        model.eval()
        images = images[:1] if torchvision else inputs[:1]

        def run():
            with torch.no_grad(), autocast(device, autocast_dtype):
                return model(images)

        return run
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6, momentum=0.9)
    if torchvision:
        targets = [
            {"boxes": x["instances"].gt_boxes.tensor.to(device), "labels": x["instances"].gt_classes.to(device)}
            for x in inputs
        ]
    storage = EventStorage()
    scaler = torch.amp.GradScaler(device.type) if autocast_dtype == torch.float16 else None

    def step():
        with storage, autocast(device, autocast_dtype):
            losses = model(images, targets) if torchvision else model(inputs)
        optimizer.zero_grad()
        loss = sum(losses.values())
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


def precision_runners(cfg, size, precisions, device="cpu"):
    """
    {"<precision> inference" / "<precision> train": run} for FocalRetinaNet's fast path, one
    model's weights in every row: inference with the fast path's copy in that dtype
    (``inference_dtype``; float16 under autocast, GPU only) and training steps under autocast in
    it, as :class:`~retina_plugin.training.mixed_precision.MixedPrecisionTrainer` runs them.
    """
    base = build_models(cfg, size, [MODELS[0]])[MODELS[0]]
    inputs = make_inputs(size, 2, cfg.MODEL.RETINANET.NUM_CLASSES)
    runs = {}
    for precision in precisions:
        dtype = getattr(torch, precision)
        inference_model, train_model = copy.deepcopy(base), copy.deepcopy(base)
        inference_autocast = None
        if precision == "bfloat16":
            inference_model.inference_dtype = "bfloat16"
        elif precision == "float16":
            inference_autocast = torch.float16
        runs[f"{precision} inference"] = runner(MODELS[0], inference_model, inputs, "inference", inference_autocast)
        runs[f"{precision} train"] = runner(MODELS[0], train_model, inputs, "train",
                                            None if precision == "float32" else dtype)
    return runs


def loss_runners(num_anchors, num_classes=80, seed=0, device="cpu"):
    from fvcore.nn import sigmoid_focal_loss as fvcore_focal_loss
    from torchvision.ops import sigmoid_focal_loss as torchvision_focal_loss

    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_anchors, num_classes, generator=g) * 2 - 4
    labels = torch.randint(0, num_classes + 1, (num_anchors,), generator=g)
    labels[torch.rand(num_anchors, generator=g) < 0.99] = num_classes  # ~1% foreground
    logits, labels = logits.to(device), labels.to(device)

    def make(fn):
        def run():
            x = logits.detach().requires_grad_()
            fn(x).backward()

        return run

    def one_hot(x):
        # What a dense-target loss needs from the labels: part of its cost and memory.
        return torch.nn.functional.one_hot(labels, num_classes + 1)[:, :num_classes].to(x.dtype)

    return {
        "ours": make(lambda x: fused_sigmoid_focal_loss_from_labels(x, labels, 0.25, 2.0, "sum")),
        "torchvision": make(lambda x: torchvision_focal_loss(x, one_hot(x), 0.25, 2.0, "sum")),
        "fvcore": make(lambda x: fvcore_focal_loss(x, one_hot(x), 0.25, 2.0, "sum")),
    }


def conv_gflops_per_s(repeats=5, device="cpu", autocast_dtype=None):
    """Best 3x3 conv throughput (256 -> 256 channels, 100x152) of NCHW and channels_last."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).eval().to(device)
    x = torch.randn(1, 256, 100, 152, device=device)
    flops = 2 * 256 * 256 * 9 * 100 * 152
    best = 0.0
    with torch.no_grad(), autocast(device, autocast_dtype):
        for fmt in (torch.contiguous_format, torch.channels_last):
            c, xx = conv.to(memory_format=fmt), x.contiguous(memory_format=fmt)
            ms = median_latency_ms(lambda: c(xx), repeats, device, warmup=3)
            best = max(best, flops / ms / 1e6)
    return best


def model_gflops(model, size):
    """FLOPs (2 per multiply-add, fvcore's count x 2) of backbone + head for one image."""
    from fvcore.nn import FlopCountAnalysis

    class BackboneAndHead(torch.nn.Module):
        def __init__(self, detector):
            super().__init__()
            self.detector = detector

        def forward(self, x):
            return self.detector.features_and_predictions(x)[1]

    device = next(model.parameters()).device
    analysis = FlopCountAnalysis(BackboneAndHead(model).eval(), torch.randn(1, 3, *size, device=device))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return 2 * analysis.total() / 1e9


# Deployment engines the benchmark builds, where their backend runs (see engine_variants).
ENGINE_VARIANTS = (
    ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
    ("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "bf16"), ("openvino", "int8"),
    ("tensorrt", "fp32"), ("tensorrt", "fp16"), ("tensorrt", "int8"),
)


def engine_variants(device: str = "cpu", cpu_flags=None):
    """
    The (backend, precision) pairs of ENGINE_VARIANTS this machine runs for ``device``; bf16
    only on a CPU with native bfloat16 (``cpu_flags``, default: this CPU's): elsewhere the build
    refuses it.
    """
    from ..deploy.engines import available_backends
    from ..utils.cpu_features import native_bfloat16_flags

    backends = set(available_backends())
    on_gpu = torch.device(device).type == "cuda"
    wanted = {"tensorrt"} if on_gpu else {"onnxruntime", "openvino"}
    native_bfloat16 = bool(native_bfloat16_flags(cpu_flags))
    return [(b, p) for b, p in ENGINE_VARIANTS if b in backends & wanted and (p != "bf16" or native_bfloat16)]


def build_benchmark_engines(model, cfg, size, workdir: str, calibration, variants, max_batch: int = 8):
    """
    Build each (backend, precision) engine of ``model`` into ``workdir`` for inputs up to
    ``size`` (padded to 32) and ``max_batch`` images; int8 calibrated on ``calibration``
    (normalized, padded batches). Returns {"<backend>-<precision>": folder}.
    """
    import os

    from ..deploy.build import build_engine
    from ..deploy.engines import InputProfile

    padded = [-(-s // 32) * 32 for s in size]
    folders = {}
    for backend, precision in variants:
        name = f"{backend}-{precision}"
        folder = os.path.join(workdir, name)
        build_engine(model, cfg, folder, backend, precision, InputProfile(max_batch, (32, 32), padded),
                     calibration if precision == "int8" else None)
        folders[name] = folder
    return folders
