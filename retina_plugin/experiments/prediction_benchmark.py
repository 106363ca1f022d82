"""
Throughput of tools/predict.py against a ``DefaultPredictor`` loop over the same images, on
the same cores, with the detections compared image by image (as sets) for the fp32 ways and
scored by COCO AP where the images have ground truth (``tools/benchmark_prediction.py``).
"""
import json
import os
import shutil
import time
from typing import Dict, List, Optional, Sequence

import cv2
import torch

from detectron2.engine import DefaultPredictor
from detectron2.structures import Boxes, Instances

from ..prediction.command_line import main as predict_main
from ..prediction.sources import resolve_source
from ..utils.detection_sets import detection_differences

__all__ = ["default_predictor_loop", "predict_run", "record_instances", "compare_runs", "mixed_shape_images",
           "peak_memory_mb", "mixed_shape_memory"]


def default_predictor_loop(cfg, items: Sequence[Dict]) -> Dict:
    """
    Every item's file (``{"key", "file_name"}``, as tools/predict.py lists them) read with
    OpenCV and passed to DefaultPredictor, one after another; detections by key.
    """
    predictor = DefaultPredictor(cfg)
    predictor(cv2.imread(items[0]["file_name"]))  # warm-up: the folded inference copy, allocations
    start = time.perf_counter()
    outputs = {}
    for item in items:
        outputs[item["key"]] = predictor(cv2.imread(item["file_name"]))["instances"].to("cpu")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_second": len(items) / seconds, "instances": outputs}


def record_instances(record: Dict) -> Instances:
    """A predictions.jsonl record as Instances (pred_boxes, scores, pred_classes)."""
    return Instances((record["height"], record["width"]),
                     pred_boxes=Boxes(torch.tensor(record["boxes_xyxy"], dtype=torch.float32).reshape(-1, 4)),
                     scores=torch.tensor(record["scores"], dtype=torch.float32),
                     pred_classes=torch.tensor(record["classes"], dtype=torch.int64))


def predict_run(config_file: str, inputs: Sequence[str], output: str, opts: Sequence[str],
                extra: Sequence[str] = ()) -> Dict:
    """tools/predict.py in this process (or its launch); its summary and records."""
    code = predict_main(["--config-file", config_file, "--input", *inputs, "--output", output, *extra, *opts])
    with open(os.path.join(output, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(output, "predictions.jsonl")) as f:
        records = {r["key"]: r for r in map(json.loads, f)}
    return {"exit_code": code, "seconds": summary["this_run"]["seconds"],
            "images_per_second": summary["this_run"]["images_per_second"], "records": records}


def compare_runs(reference: Dict[str, Instances], records: Dict[str, Dict]) -> int:
    """How many images differ (as sets, within the records' rounding) from the reference."""
    return sum(
        1 for key, expected in reference.items()
        if detection_differences(expected, record_instances(records[key]), atol=0.02, rtol=1e-4)
    )


def mixed_shape_images(folder: str, count: int, short_side: int = 600, seed: int = 0) -> str:
    """
    ``count`` noise images, each of its own aspect ratio (so no two share a resized shape),
    spread evenly over 1:1 to 2:1 whatever ``count``: collections of any size hold images of
    the same range of sizes, so that their peak memory compares.
    """
    import numpy as np

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        width = round(short_side * (1 + i / count))
        cv2.imwrite(os.path.join(folder, f"{i:05d}.jpg"), rng.integers(0, 255, (short_side, width, 3), dtype=np.uint8))
    return folder


def peak_memory_mb(command: Sequence[str]) -> float:
    """Peak resident memory (MB) of ``command`` run to its end in a child process of its own."""
    import subprocess
    import sys

    probe = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def mixed_shape_memory(config_file: str, weights: str, output: str, counts: Sequence[int] = (24, 96),
                       size: int = 800, batch_size: int = 8) -> List[Dict]:
    """
    Peak memory of tools/predict.py over ``counts`` images, each of its own aspect ratio, at
    test size ``size``: it must not grow with the count (images wait at most a batch).
    """
    import sys

    rows = []
    for count in counts:
        images = mixed_shape_images(os.path.join(output, f"mixed_{count}"), count)
        result = os.path.join(output, f"mixed_{count}_predictions")
        shutil.rmtree(result, ignore_errors=True)
        command = [sys.executable, "tools/predict.py", "--config-file", config_file, "--input", images,
                   "--output", result, "--batch-size", str(batch_size), "MODEL.WEIGHTS", weights,
                   "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(2 * size)]
        start = time.perf_counter()
        rows.append({"images": count, "peak_mb": peak_memory_mb(command), "seconds": time.perf_counter() - start})
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    from ..data.shapes import generate_shapes_split
    from ..deploy.export_command import main as export_main
    from ..entry_points.defaults import setup_config, setup_process

    parser = argparse.ArgumentParser(description="tools/predict.py against a DefaultPredictor loop")
    parser.add_argument("--config-file", default="configs/demo_R18_cpu.yaml")
    parser.add_argument("--weights", required=True, help="trained weights of the config")
    parser.add_argument("--images", type=int, default=1000, help="retina_shapes-like images to draw (256 px)")
    parser.add_argument("--output", default="output/prediction_benchmark", metavar="DIR")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=None, help="default: tools/predict.py's")
    parser.add_argument("--engines", nargs="*", default=["onnx:fp32", "openvino:fp32", "openvino:int8"],
                        metavar="FORMAT:PRECISION", help="engines to build with tools/export_model.py and run")
    parser.add_argument("--processes", type=int, default=2, help="also run eager with this many processes (0: no)")
    parser.add_argument("--mixed-shapes", type=int, nargs="*", metavar="N",
                        help="instead: peak memory over N images each of its own aspect ratio, at 800 px (e.g. 24 96)")
    args = parser.parse_args(argv)
    setup_process()
    if args.mixed_shapes:
        rows = mixed_shape_memory(args.config_file, args.weights, args.output, args.mixed_shapes,
                                  batch_size=args.batch_size)
        print(f"\ntools/predict.py at 800 px, batch {args.batch_size}, each image its own aspect ratio\n")
        print("| images | peak memory (MB) | seconds |\n|---|---|---|")
        for row in rows:
            print(f"| {row['images']} | {row['peak_mb']:.0f} | {row['seconds']:.0f} |")
        return 0
    opts = ["MODEL.WEIGHTS", args.weights]
    cfg = setup_config(args.config_file, opts, training=False)
    images = os.path.join(args.output, "images")
    if not os.path.isdir(images):
        generate_shapes_split(images, args.images, seed=5)
        os.remove(os.path.join(images, "annotations.json"))
    items = resolve_source([images]).items
    print(f"{len(items)} images of {images}, {torch.get_num_threads()} threads")
    loop = default_predictor_loop(cfg, items)
    rows = [("DefaultPredictor loop (eager fp32, one image at a time)", loop["images_per_second"], 0)]
    print(f"DefaultPredictor loop: {loop['images_per_second']:.1f} img/s")
    common = ["--batch-size", str(args.batch_size)]
    if args.num_workers is not None:
        common += ["--num-workers", str(args.num_workers)]
    ways = [("tools/predict.py, eager fp32", [])]
    if args.processes > 1:
        ways.append((f"tools/predict.py, eager fp32, --num-gpus {args.processes} (CPU processes)",
                     ["--num-gpus", str(args.processes)]))
    for spec in args.engines:
        fmt, precision = spec.split(":")
        folder = os.path.join(args.output, "engines", f"{fmt}_{precision}")
        if not os.path.isfile(os.path.join(folder, "engine.json")):
            export_main(["--config-file", args.config_file, "--format", fmt, "--precision", precision,
                         "--output", folder, *opts])
        ways.append((f"tools/predict.py, {fmt} {precision} engine", ["--engine", folder]))
    for index, (name, extra) in enumerate(ways):
        output = os.path.join(args.output, f"run{index}")
        shutil.rmtree(output, ignore_errors=True)
        run = predict_run(args.config_file, [images], output, opts, common + list(extra))
        differing = compare_runs(loop["instances"], run["records"])
        rows.append((name, run["images_per_second"], differing))
        print(f"{name}: {run['images_per_second']:.1f} img/s, {differing} image(s) differ")
    base = rows[0][1]
    print(f"\n{len(items)} images (256 x 256), batch {args.batch_size}, {args.num_workers if args.num_workers is not None else 'default'} DataLoader workers, "
          f"CPU threads {torch.get_num_threads()}\n")
    print("| way | img/s | vs DefaultPredictor loop | images whose detections differ (as sets) |")
    print("|---|---|---|---|")
    for name, rate, differing in rows:
        print(f"| {name} | {rate:.1f} | {rate / base:.2f}x | {differing} |")
    return 0
