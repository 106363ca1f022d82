#!/usr/bin/env python
"""
Speed of FocalRetinaNet (fast path and reference path) against detectron2's RetinaNet and
torchvision's ``retinanet_resnet50_fpn`` (random weights), same config, same weights for the
detectron2-based models, batch 1 inference and batch 2 training steps, and of the focal loss
(ours / torchvision's / fvcore's). Prints markdown tables; ``--json FILE`` writes the figures.

    python tools/benchmark.py --config-file configs/retina_R50.yaml --size 800 1216 --json out.json

Models are interleaved within each repeat, so that load from other jobs hits all of them alike.
The process keeps freed memory (retina_plugin.entry_points.allocator; RETINA_PLUGIN_ALLOCATOR=default
times glibc's default). On the CPU, peak memory is the peak resident set size of a fresh
subprocess (glibc's default allocator) during one call minus its resident set size before the
call, after the model and inputs are built and, for engines, one warm-up call (Linux: VmHWM of
/proc/self/status, reset through /proc/self/clear_refs): what the call adds to the process.
With ``--device cuda`` it is the CUDA allocator's peak during the call above what was allocated
before it, each call timed between device synchronizations; ``--amp`` runs the models and their
training steps under float16 autocast (detectron2's AMPTrainer does the same).

    python tools/benchmark.py --device cuda --size 800 1216 --repeats 50 --train-repeats 20
    python tools/benchmark.py --device cuda --amp --size 800 1216 --repeats 50 --train-repeats 20

``--precisions float32 bfloat16`` times only FocalRetinaNet's fast path in each dtype, rows
interleaved: inference with the folded copy in that dtype (MODEL.FOCAL_RETINANET.INFERENCE_DTYPE)
and training steps under that autocast (SOLVER.AMP); ``--json`` writes them under "precisions".

    python tools/benchmark.py --config-file configs/demo_R18_cpu.yaml --size 256 256 --precisions float32 bfloat16

``--engines`` (or ``--engines-only``) adds the deployment engines this machine runs (ONNX
Runtime and OpenVINO on the CPU, TensorRT with ``--device cuda``), built from the same model,
against eager mode: ms/img at batch 1, img/s at ``--throughput-batch``, peak memory, and with
``--ap-weights`` the COCO AP of the demo model and its engines on retina_shapes_val.

    python tools/benchmark.py --engines-only --size 800 1216 --ap-weights output/demo/model_final.pth
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import retina_plugin  # noqa: F401
from retina_plugin.config import load_config
from retina_plugin.entry_points.allocator import allocator_setting, configure_allocator
from retina_plugin.deploy import build_engine_model
from retina_plugin.experiments.speed_benchmark import (
    LOSSES,
    MODELS,
    SHORT,
    build_benchmark_engines,
    build_models,
    engine_variants,
    conv_gflops_per_s,
    loss_runners,
    make_inputs,
    model_gflops,
    precision_runners,
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
    parser.add_argument("--precisions", nargs="+", choices=["float32", "bfloat16", "float16"], metavar="DTYPE",
                        help="only FocalRetinaNet's fast path in each of these dtypes, rows interleaved: inference "
                        "(INFERENCE_DTYPE) and training steps (SOLVER.AMP autocast); float16 needs --device cuda")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--inference-only", action="store_true", help="skip the training steps and the focal losses")
    parser.add_argument("--engines", action="store_true",
                        help="also time the deployment engines present on this machine (ONNX Runtime, OpenVINO; "
                        "TensorRT with --device cuda) against eager mode")
    parser.add_argument("--engines-only", action="store_true", help="only the engines table")
    parser.add_argument("--throughput-batch", type=int, default=8, help="engines table: images per call for img/s")
    parser.add_argument("--throughput-repeats", type=int, default=2, help="engines table: timed batched calls")
    parser.add_argument("--ap-weights", metavar="FILE",
                        help="engines table: trained weights of --ap-config, for an AP column on its DATASETS.TEST")
    parser.add_argument("--ap-config", default="configs/demo_R18_cpu.yaml", metavar="FILE")
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
    elif kind == "engine":
        cfg = load_cfg(args)
        model = build_engine_model(cfg, name)
        inputs = make_inputs(args.size, 1, cfg.MODEL.RETINANET.NUM_CLASSES)
        run = lambda: model(inputs)  # noqa: E731
        torch.set_grad_enabled(False)
        run()  # engines allocate their arenas on the first call
    else:
        cfg = load_cfg(args)
        model = build_models(cfg, args.size, [name])[name]
        run = runner(name, model, make_inputs(args.size, 2, cfg.MODEL.RETINANET.NUM_CLASSES), kind)
    before = reset_peak_rss()
    run()
    print(json.dumps({"peak_mb": status_mb("VmHWM") - before}))


def peak_mb(argv, kind, name):
    cmd = [sys.executable, __file__, "--measure", kind, name] + argv
    # glibc's default allocator: memory a call frees goes back to the kernel, so the growth of
    # the resident set during the call is what the call needs (kept memory would hide it).
    env = dict(os.environ, RETINA_PLUGIN_ALLOCATOR="default")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement of {name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def engine_ap(args, variants, workdir):
    """{row: AP} of the --ap-config model (eager and each engine) on its DATASETS.TEST[0]."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from retina_plugin.data import register_datasets_from_config
    from retina_plugin.deploy.verification import calibration_batches, evaluate_ap

    cfg = load_config(args.ap_config, ["MODEL.WEIGHTS", args.ap_weights, "MODEL.DEVICE", "cpu"])
    register_datasets_from_config(cfg)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(args.ap_weights)
    dataset = cfg.DATASETS.TEST[0]
    # Calibrated on training images: the AP is on images calibration never saw.
    calibration, _ = calibration_batches(model, cfg, cfg.DATASETS.TRAIN[0], 64)
    size = (cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    folders = build_benchmark_engines(model, cfg, size, os.path.join(workdir, "ap"), calibration, variants)
    ap = {"eager": evaluate_ap(model, cfg, dataset, os.path.join(workdir, "ap_eager"))["AP"]}
    for name, folder in folders.items():
        ap[name] = evaluate_ap(build_engine_model(cfg, folder), cfg, dataset, os.path.join(workdir, f"ap_{name}"))["AP"]
    return ap, dataset


def engines_section(args, memory_argv):
    """The engines table: eager rows and one row per engine, batch 1 and batched."""
    cfg = load_cfg(args)
    size = tuple(args.size)
    variants = engine_variants(args.device)
    models = build_models(cfg, size, [MODELS[0], MODELS[2]])
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    one = make_inputs(size, 1, num_classes)
    batch = make_inputs(size, args.throughput_batch, num_classes, seed=1)
    workdir = tempfile.mkdtemp(prefix="engines-")
    log(f"building {len(variants)} engines in {workdir}")
    with torch.no_grad():
        calibration = [models[MODELS[0]].eval().preprocess_image([x]).tensor for x in make_inputs(size, 8, num_classes, seed=2)]
    folders = build_benchmark_engines(models[MODELS[0]], cfg, size, workdir, calibration, variants,
                                      max_batch=args.throughput_batch)
    rows = {"detectron2 RetinaNet (eager fp32)": models[MODELS[2]].eval(),
            "FocalRetinaNet fast path (eager fp32)": models[MODELS[0]].eval()}
    rows.update({name: build_engine_model(cfg, folder) for name, folder in folders.items()})
    torch.set_grad_enabled(False)
    log("timing batch 1")
    single, _ = time_interleaved({n: (lambda m=m: m(one)) for n, m in rows.items()}, args.repeats, args.device)
    log(f"timing batch {args.throughput_batch}")
    batched, _ = time_interleaved({n: (lambda m=m: m(batch)) for n, m in rows.items()}, args.throughput_repeats,
                                  args.device)
    torch.set_grad_enabled(True)
    memory = {}
    if not args.no_model_memory and torch.device(args.device).type == "cpu":
        log("peak memory, one subprocess per row")
        memory[list(rows)[0]] = peak_mb(memory_argv, "inference", MODELS[2])
        memory[list(rows)[1]] = peak_mb(memory_argv, "inference", MODELS[0])
        memory.update({n: peak_mb(memory_argv, "engine", folder) for n, folder in folders.items()})
    ap, ap_dataset = engine_ap(args, variants, workdir) if args.ap_weights else ({}, None)
    ap_rows = {list(rows)[0]: ap.get("eager"), list(rows)[1]: ap.get("eager"), **ap}
    ms = {n: statistics.median(t) for n, t in single.items()}
    base = ms[list(rows)[0]]
    print(f"\nEngines: {args.config_file} (random weights), {size[0]}x{size[1]}, CPU threads "
          f"{torch.get_num_threads()}, glibc {allocator_setting()}; batch 1 ({args.repeats} runs) and batch "
          f"{args.throughput_batch} ({args.throughput_repeats} runs), interleaved"
          + (f"; AP: {args.ap_config} with {args.ap_weights} on {ap_dataset}" if ap else "") + "\n")
    print(f"| model | ms/img, batch 1 | vs detectron2 | img/s, batch {args.throughput_batch} | peak MB, batch 1 | AP |")
    print("|---|---|---|---|---|---|")
    figures = {}
    for name in rows:
        img_s = args.throughput_batch * 1000 / statistics.median(batched[name])
        peak = memory.get(name)
        ap_value = ap_rows.get(name)
        print(f"| {name} | {ms[name]:.1f} | {ms[name] / base:.2f}x | {img_s:.1f} | "
              f"{'-' if peak is None else f'{peak:.0f}'} | {'-' if ap_value is None else f'{ap_value:.1f}'} |")
        figures[name] = {"ms": ms[name], "img_s": img_s, "peak_mb": peak, "ap": ap_value}
    shutil.rmtree(workdir, ignore_errors=True)
    return {name: figures[name] for name in folders}, {
        "RetinaNet": figures[list(rows)[0]], "FocalRetinaNet": figures[list(rows)[1]]}


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
    for flag in ("--engines", "--engines-only"):
        if flag in memory_argv:
            memory_argv.remove(flag)
    if args.precisions:
        figures = precisions_section(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"size": list(args.size), "config": args.config_file, "allocator": allocator_setting(),
                           "precisions": figures}, f, indent=2)
        return None
    if args.engines_only:
        engines, eager = engines_section(args, memory_argv)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"size": list(args.size), "config": args.config_file, "allocator": allocator_setting(),
                           "engines": engines, "eager": eager}, f, indent=2)
        return None

    cfg = load_cfg(args)
    size = tuple(args.size)
    models = build_models(cfg, size)
    inputs = make_inputs(size, 2, cfg.MODEL.RETINANET.NUM_CLASSES)

    device, amp = args.device, args.amp
    amp_dtype = torch.float16 if amp else None
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
        {n: runner(n, m, inputs, "inference", amp_dtype) for n, m in models.items()}, args.repeats, device, warmup
    )
    train, losses, loss_runs = {n: [float("nan")] for n in models}, {n: [float("nan")] for n in LOSSES}, {}
    if not args.inference_only:
        log("timing training steps")
        train, _ = time_interleaved(
            {n: runner(n, m, inputs, "train", amp_dtype) for n, m in models.items()}, args.train_repeats, device, warmup
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
                    kind: cuda_peak_mb(runner(name, models[name], inputs, kind, amp_dtype)) for kind in ("inference", "train")
                }
        for name, run in loss_runs.items():
            memory[name] = cuda_peak_mb(run)
    else:
        log("peak memory, one subprocess per figure")
        if not args.no_model_memory:
            kinds = ("inference",) if args.inference_only else ("inference", "train")
            for name in MODELS:
                memory[name] = {kind: peak_mb(memory_argv, kind, name) for kind in kinds}
        for name in LOSSES if not args.inference_only else ():
            memory[name] = peak_mb(memory_argv, "loss", name)

    log("conv throughput and model FLOPs")
    conv_rate = conv_gflops_per_s(device=device, autocast_dtype=amp_dtype)
    gflops = model_gflops(models[MODELS[1]], size)
    floor_ms = gflops / conv_rate * 1000
    median = {n: statistics.median(t) for n, t in inference.items()}
    detectron2_ms = median[MODELS[2]]

    where = torch.cuda.get_device_name() if cuda else f"CPU threads {torch.get_num_threads()}"
    training = "" if args.inference_only else f", training step batch 2 ({args.train_repeats} runs)"
    print(f"\n{args.config_file}, {size[0]}x{size[1]}, {where}, {'float16 autocast' if amp else 'float32'}, "
          f"inference batch 1 ({args.repeats} runs){training}, models interleaved, glibc {allocator_setting()}\n")
    columns = ["model", "inference median ms", "p90 ms", "vs detectron2", "% of floor", "images/s", "page faults / image"]
    columns += [] if args.inference_only else ["train step ms", "vs detectron2", "train images/s"]
    columns += ["peak MB inference" + ("" if args.inference_only else " / train")]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    train_median = {n: statistics.median(t) for n, t in train.items()}
    for name in MODELS:
        mem = memory.get(name)
        mem_text = "-" if not mem else (f"{mem['inference']:.0f}" if args.inference_only
                                         else f"{mem['inference']:.0f} / {mem['train']:.0f}")
        cells = [name, f"{median[name]:.1f}", f"{p90(inference[name]):.1f}", f"{median[name] / detectron2_ms:.2f}x",
                 f"{100 * median[name] / floor_ms:.0f} %", f"{1000 / median[name]:.1f}", f"{inference_faults[name]:.0f}"]
        if not args.inference_only:
            cells += [f"{train_median[name]:.1f}", f"{train_median[name] / train_median[MODELS[2]]:.2f}x",
                      f"{2000 / train_median[name]:.1f}"]
        print("| " + " | ".join(cells + [mem_text]) + " |")
    print(f"\nfloor: {gflops:.0f} GFLOP (backbone + head, fvcore x 2) at {conv_rate:.0f} GFLOP/s "
          f"(this machine's best 3x3 conv) = {floor_ms:.0f} ms")
    print(f"detections equal: fast vs reference path {equal_reference}, fast path vs detectron2 {equal_detectron2} "
          f"({len(detections[MODELS[0]])} detections)")

    loss_median = {n: statistics.median(t) for n, t in losses.items()}
    if not args.inference_only:
        print_losses(args, loss_median, memory)
    engines = engines_section(args, memory_argv)[0] if args.engines else None
    if args.json:
        write_figures(args, size, where, amp, median, inference, inference_faults, train_median, memory,
                      loss_median, equal_reference, equal_detectron2, conv_rate, gflops, floor_ms, engines)


def precisions_section(args):
    """FocalRetinaNet's fast path in each of ``--precisions``, rows interleaved; returns the figures."""
    from retina_plugin.utils.cpu_features import native_bfloat16_flags

    cfg = load_cfg(args)
    device = args.device
    cuda = torch.device(device).type == "cuda"
    runs = precision_runners(cfg, tuple(args.size), args.precisions, device)
    log("timing each precision")
    inference, _ = time_interleaved({k: v for k, v in runs.items() if k.endswith("inference")}, args.repeats,
                                    device, 3 if cuda else 1)
    train, _ = time_interleaved({k: v for k, v in runs.items() if k.endswith("train")}, args.train_repeats,
                                device, 3 if cuda else 1)
    where = torch.cuda.get_device_name() if cuda else (
        f"CPU threads {torch.get_num_threads()}, native bfloat16: {', '.join(native_bfloat16_flags()) or 'none'}")
    print(f"\n{args.config_file}, {args.size[0]}x{args.size[1]}, {where}, FocalRetinaNet fast path, inference batch 1 "
          f"({args.repeats} runs), training step batch 2 ({args.train_repeats} runs), precisions interleaved\n")
    print("| precision | inference median ms | vs float32 | train step ms | vs float32 |")
    print("|---|---|---|---|---|")
    figures = {}
    for precision in args.precisions:
        figures[precision] = {"inference_ms": statistics.median(inference[f"{precision} inference"]),
                              "train_step_ms": statistics.median(train[f"{precision} train"])}
    reference = figures.get("float32")
    for precision, row in figures.items():
        ratio = {k: row[k] / reference[k] if reference else float("nan") for k in row}
        row.update({f"{k[:-3]}_vs_float32": v for k, v in ratio.items()})
        print(f"| {precision} | {row['inference_ms']:.1f} | {ratio['inference_ms']:.2f}x | "
              f"{row['train_step_ms']:.1f} | {ratio['train_step_ms']:.2f}x |")
    return figures


def print_losses(args, loss_median, memory):
    print(f"\nfocal loss forward + backward, {args.loss_anchors} anchors x 80 classes ({args.repeats} runs)\n")
    print("| loss | median ms | vs torchvision | peak MB | vs torchvision |")
    print("|---|---|---|---|---|")
    for name in LOSSES:
        mem = memory.get(name)
        mem_text = f"{mem:.0f} | {mem / memory['torchvision']:.2f}x" if mem is not None else "- | -"
        print(f"| {name} | {loss_median[name]:.2f} | {loss_median[name] / loss_median['torchvision']:.2f}x | {mem_text} |")


def write_figures(args, size, where, amp, median, inference, inference_faults, train_median, memory,
                  loss_median, equal_reference, equal_detectron2, conv_rate, gflops, floor_ms, engines):
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
    if engines is not None:
        figures["engines"] = engines
    with open(args.json, "w") as f:
        json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
