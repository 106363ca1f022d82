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
import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

import retina_plugin  # noqa: F401
from retina_plugin.config import load_config
from retina_plugin.engine.allocator import allocator_setting, configure_allocator
from retina_plugin.experiments.speed_benchmark import (
    LOSSES,
    MODELS,
    SHORT,
    build_models,
    conv_gflops_per_s,
    loss_runners,
    make_inputs,
    model_gflops,
    runner,
)
from retina_plugin.utils.detection_sets import same_detections
from retina_plugin.utils.timing import cuda_peak_mb, p90, reset_peak_rss, status_mb, time_interleaved


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
    cfg = load_config(args.config_file, args.opts)
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.WEIGHTS = ""
    return cfg


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
    print(json.dumps({"peak_mb": status_mb("VmHWM") - before}))


def peak_mb(argv, kind, name):
    cmd = [sys.executable, __file__, "--measure", kind, name] + argv
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement of {name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    configure_allocator()
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
