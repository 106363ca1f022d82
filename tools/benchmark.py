#!/usr/bin/env python
"""
Speed of FocalRetinaNet (fast path and reference path) against detectron2's RetinaNet and
torchvision's ``retinanet_resnet50_fpn`` (random weights), same config, same weights for the
detectron2-based models, batch 1 inference and batch 2 training steps, and of the focal loss
(ours / torchvision's / fvcore's). Prints markdown tables; ``--json FILE`` writes the figures.

    python tools/benchmark.py --config-file configs/retina_R50.yaml --size 800 1216 --json out.json

Models are interleaved within each repeat, so that load from other jobs hits all of them alike.
On the CPU, peak memory is the peak resident set size of a fresh subprocess during one call
minus its resident set size before the call, after the model and inputs are built (Linux: VmHWM
of /proc/self/status, reset through /proc/self/clear_refs): what the call adds to the process.
With ``--device cuda`` it is the CUDA allocator's peak during the call above what was allocated
before it, each call timed between device synchronizations; ``--amp`` runs the models and their
training steps under float16 autocast (detectron2's AMPTrainer does the same).

    python tools/benchmark.py --device cuda --size 800 1216 --repeats 50 --train-repeats 20
    python tools/benchmark.py --device cuda --amp --size 800 1216 --repeats 50 --train-repeats 20
"""
import contextlib
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import retina_plugin  # noqa: F401
from retina_plugin import add_retina_config
from retina_plugin.modeling.fused_focal_loss import fused_sigmoid_focal_loss_from_labels

MODELS = ["FocalRetinaNet (fast path)", "FocalRetinaNet (reference path)", "detectron2 RetinaNet", "torchvision retinanet_resnet50_fpn"]
SHORT = {MODELS[0]: "FocalRetinaNet", MODELS[1]: "FocalRetinaNet_reference", MODELS[2]: "RetinaNet", MODELS[3]: "torchvision"}
LOSSES = ["ours", "torchvision", "fvcore"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default="configs/retina_R50.yaml")
    parser.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5, help="timed inference runs per model")
    parser.add_argument("--train-repeats", type=int, default=3, help="timed training steps per model")
    parser.add_argument("--loss-anchors", type=int, default=120000)
    parser.add_argument("--no-model-memory", action="store_true", help="skip the models' peak-memory subprocesses (8 of them)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", action="store_true", help="float16 autocast for models and training steps (cuda)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)  # internal: (kind, name)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return parser.parse_args(argv)


def load_cfg(args):
    cfg = get_cfg()
    add_retina_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.WEIGHTS = ""
    return cfg


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


def autocast(device, amp):
    """float16 autocast on ``device`` when ``amp``, else nothing."""
    return torch.autocast(torch.device(device).type, dtype=torch.float16) if amp else contextlib.nullcontext()


def runner(name, model, inputs, kind, amp=False):
    """A no-argument callable: one inference (batch 1) or one training step (batch 2)."""
    torchvision = name == MODELS[3]
    device = next(model.parameters()).device
    if torchvision:
        images = [(x["image"][[2, 1, 0]] / 255.0).to(device) for x in inputs]
    if kind == "inference":
        model.eval()
        images = images[:1] if torchvision else inputs[:1]

        def run():
            with torch.no_grad(), autocast(device, amp):
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
    scaler = torch.amp.GradScaler(device.type) if amp else None

    def step():
        with storage, autocast(device, amp):
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


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(runners, repeats, device="cpu", warmup=1):
    """
    ``warmup`` calls each, then ``repeats`` rounds over all runners. Returns ({name: [ms, ...]},
    {name: minor page faults per call}): the faults are the fresh memory pages the call touched,
    which the kernel zeroes (glibc hands allocations above 32 MB back to it on free).
    """
    for run in runners.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in runners}
    faults = {name: 0 for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            synchronize(device)
            faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            run()
            synchronize(device)
            times[name].append((time.perf_counter() - start) * 1000)
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    return times, {name: count / max(repeats, 1) for name, count in faults.items()}


def allocator_setting():
    """glibc malloc's settings from the environment (docs/speed.md: keeping freed memory)."""
    names = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    settings = [f"{n}={os.environ[n]}" for n in names if n in os.environ]
    return " ".join(settings) if settings else "default allocator"


def p90(values):
    values = sorted(values)
    return values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss():
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; returns that RSS in MB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mb("VmRSS")


def measure_in_this_process(args, kind, name):
    """Peak RSS growth (MB) of one call, printed for the parent process."""
    if kind == "loss":
        run = loss_runners(args.loss_anchors)[name]
    else:
        cfg = load_cfg(args)
        model = build_models(cfg, args.size, [name])[name]
        run = runner(name, model, make_inputs(args.size, 2, cfg.MODEL.RETINANET.NUM_CLASSES), kind)
    before = reset_peak_rss()
    run()
    print(json.dumps({"peak_mb": _status_mb("VmHWM") - before}))


def cuda_peak_mb(run):
    """CUDA memory (MB) that one call of ``run`` allocates at its peak above what was there."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def peak_mb(argv, kind, name):
    cmd = [sys.executable, __file__, "--measure", kind, name] + argv
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement of {name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def conv_gflops_per_s(repeats=5, device="cpu", amp=False):
    """Best 3x3 conv throughput (256 -> 256 channels, 100x152) of NCHW and channels_last."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).eval().to(device)
    x = torch.randn(1, 256, 100, 152, device=device)
    flops = 2 * 256 * 256 * 9 * 100 * 152
    best = 0.0
    with torch.no_grad(), autocast(device, amp):
        for fmt in (torch.contiguous_format, torch.channels_last):
            c, xx = conv.to(memory_format=fmt), x.contiguous(memory_format=fmt)
            ms = statistics.median(time_interleaved({"conv": lambda: c(xx)}, repeats, device, warmup=3)[0]["conv"])
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
            features = self.detector.backbone(x)
            return self.detector.head([features[f] for f in self.detector.head_in_features])

    device = next(model.parameters()).device
    analysis = FlopCountAnalysis(BackboneAndHead(model).eval(), torch.randn(1, 3, *size, device=device))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return 2 * analysis.total() / 1e9


def same_detections(a, b):
    """
    Same detections: same count, and each detection of ``a`` matched to its own detection of
    ``b`` with the same class, score within 1e-3 relative and box within 1e-3 relative. Near-equal
    scores (a trained model has many) may come out of the top-k in another order, so the match
    does not go by position.
    """
    if len(a) != len(b):
        return False
    close = (
        (a.pred_classes[:, None] == b.pred_classes[None, :])
        & torch.isclose(a.scores[:, None], b.scores[None, :], rtol=1e-3, atol=1e-6)
        & torch.isclose(a.pred_boxes.tensor[:, None], b.pred_boxes.tensor[None, :], rtol=1e-3, atol=1e-3).all(-1)
    )
    used = torch.zeros(len(b), dtype=torch.bool)
    for row in close:
        free = (row & ~used).nonzero()
        if len(free) == 0:
            return False
        used[free[0, 0]] = True
    return True


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_grad_enabled(True)
    if args.measure:
        return measure_in_this_process(args, *args.measure)
    memory_argv = list(argv)
    if "--json" in memory_argv:
        i = memory_argv.index("--json")
        del memory_argv[i:i + 2]

    cfg = load_cfg(args)
    size = tuple(args.size)
    models = build_models(cfg, size)
    inputs = make_inputs(size, 2, cfg.MODEL.RETINANET.NUM_CLASSES)

    device, amp = args.device, args.amp
    cuda = torch.device(device).type == "cuda"
    warmup = 3 if cuda else 1  # cuDNN picks its algorithms in the first calls

    # Detections of the three detectron2-based models (same weights), in float32.
    detections = {}
    for name in MODELS[:3]:
        detections[name] = runner(name, models[name], inputs, "inference")()[0]["instances"].to("cpu")
    equal_reference = same_detections(detections[MODELS[0]], detections[MODELS[1]])
    equal_detectron2 = same_detections(detections[MODELS[0]], detections[MODELS[2]])

    log("timing inference")
    inference, inference_faults = time_interleaved(
        {n: runner(n, m, inputs, "inference", amp) for n, m in models.items()}, args.repeats, device, warmup
    )
    log("timing training steps")
    train, _ = time_interleaved(
        {n: runner(n, m, inputs, "train", amp) for n, m in models.items()}, args.train_repeats, device, warmup
    )
    log("timing focal losses")
    loss_runs = loss_runners(args.loss_anchors, device=device)
    losses, _ = time_interleaved(loss_runs, args.repeats, device, warmup)
    memory = {}
    if cuda:
        log("peak CUDA memory of one call each")
        if not args.no_model_memory:
            for name in MODELS:
                memory[name] = {
                    kind: cuda_peak_mb(runner(name, models[name], inputs, kind, amp)) for kind in ("inference", "train")
                }
        for name, run in loss_runs.items():
            memory[name] = cuda_peak_mb(run)
    else:
        log("peak memory, one subprocess per figure")
        if not args.no_model_memory:
            for name in MODELS:
                memory[name] = {kind: peak_mb(memory_argv, kind, name) for kind in ("inference", "train")}
        for name in LOSSES:
            memory[name] = peak_mb(memory_argv, "loss", name)

    log("conv throughput and model FLOPs")
    conv_rate = conv_gflops_per_s(device=device, amp=amp)
    gflops = model_gflops(models[MODELS[1]], size)
    floor_ms = gflops / conv_rate * 1000
    median = {n: statistics.median(t) for n, t in inference.items()}
    detectron2_ms = median[MODELS[2]]

    where = torch.cuda.get_device_name() if cuda else f"CPU threads {torch.get_num_threads()}"
    print(f"\n{args.config_file}, {size[0]}x{size[1]}, {where}, {'float16 autocast' if amp else 'float32'}, "
          f"inference batch 1 ({args.repeats} runs), training step batch 2 ({args.train_repeats} runs), "
          f"models interleaved, glibc {allocator_setting()}\n")
    print("| model | inference median ms | p90 ms | vs detectron2 | % of floor | images/s | page faults / image "
          "| train step ms | vs detectron2 | train images/s | peak MB inference / train |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    train_median = {n: statistics.median(t) for n, t in train.items()}
    for name in MODELS:
        mem = memory.get(name)
        mem_text = f"{mem['inference']:.0f} / {mem['train']:.0f}" if mem else "-"
        print(f"| {name} | {median[name]:.1f} | {p90(inference[name]):.1f} | "
              f"{median[name] / detectron2_ms:.2f}x | {100 * median[name] / floor_ms:.0f} % | "
              f"{1000 / median[name]:.1f} | {inference_faults[name]:.0f} | {train_median[name]:.1f} | "
              f"{train_median[name] / train_median[MODELS[2]]:.2f}x | {2000 / train_median[name]:.1f} | {mem_text} |")
    print(f"\nfloor: {gflops:.0f} GFLOP (backbone + head, fvcore x 2) at {conv_rate:.0f} GFLOP/s "
          f"(this machine's best 3x3 conv) = {floor_ms:.0f} ms")
    print(f"detections equal: fast vs reference path {equal_reference}, fast path vs detectron2 {equal_detectron2} "
          f"({len(detections[MODELS[0]])} detections)")

    loss_median = {n: statistics.median(t) for n, t in losses.items()}
    print(f"\nfocal loss forward + backward, {args.loss_anchors} anchors x 80 classes ({args.repeats} runs)\n")
    print("| loss | median ms | vs torchvision | peak MB | vs torchvision |")
    print("|---|---|---|---|---|")
    for name in LOSSES:
        mem = memory.get(name)
        mem_text = f"{mem:.0f} | {mem / memory['torchvision']:.2f}x" if mem is not None else "- | -"
        print(f"| {name} | {loss_median[name]:.2f} | {loss_median[name] / loss_median['torchvision']:.2f}x | {mem_text} |")

    if args.json:
        figures = {
            "size": list(size),
            "config": args.config_file,
            "device": where,
            "amp": amp,
            "inference_ms": {SHORT[n]: median[n] for n in MODELS},
            "inference_p90_ms": {SHORT[n]: p90(inference[n]) for n in MODELS},
            "inference_page_faults": {SHORT[n]: inference_faults[n] for n in MODELS},
            "allocator": allocator_setting(),
            "train_step_ms": {SHORT[n]: train_median[n] for n in MODELS},
            "peak_mb": {SHORT[n]: memory[n] for n in MODELS if n in memory},
            "focal_loss": {n: {"ms": loss_median[n], "peak_mb": memory.get(n)} for n in LOSSES},
            "detections_equal": equal_reference,
            "detections_equal_detectron2": equal_detectron2,
            "conv3x3_gflops_per_s": conv_rate,
            "model_gflop": gflops,
            "floor_ms": floor_ms,
        }
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
