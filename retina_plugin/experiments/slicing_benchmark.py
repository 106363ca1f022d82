"""
Sliced prediction's cost on large images (``tools/benchmark_slicing.py``): for each image side,
the windows, the seconds for the whole image against (windows) x (one window's seconds in a
batch), the windows' detections and the seconds of their merge, and the peak resident memory of a process that predicts the image from a file, PNG
(decoded whole by OpenCV) and ``.npy`` (read a band of rows at a time). Each measurement runs
in a fresh process, so its peak is its own.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

__all__ = ["synthetic_large_image", "peak_resident_mb", "measure_one", "main"]


def synthetic_large_image(side: int, folder: str, kinds: Sequence[str]) -> Dict[str, str]:
    """A ``side`` x ``side`` image (smooth color gradients with squares) as PNG and/or .npy."""
    paths = {}
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    image = np.empty((side, side, 3), dtype=np.uint8)
    for row in range(0, side, 2048):
        band = slice(row, min(side, row + 2048))
        image[band, :, 0] = ramp[band, None].astype(np.uint8)
        image[band, :, 1] = ramp[None, :].astype(np.uint8)
        image[band, :, 2] = 128
    for y in range(100, side - 100, 700):
        for x in range(100, side - 100, 900):
            image[y:y + 60, x:x + 80] = (255, 255, 255)
    if "npy" in kinds:
        paths["npy"] = os.path.join(folder, f"large_{side}.npy")
        np.save(paths["npy"], image)
    if "png" in kinds:
        paths["png"] = os.path.join(folder, f"large_{side}.png")
        cv2.imwrite(paths["png"], image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return paths


def peak_resident_mb() -> float:
    """
    This process's peak resident memory in MB: /proc's VmHWM, which starts afresh at exec
    (getrusage's ru_maxrss does not: it keeps the peak of the forked parent's pages).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_one(config_file: str, opts: Sequence[str], image_path: str, threads: int) -> Dict:
    """In this process: predict ``image_path`` sliced; seconds, windows, one window's seconds, peak RSS."""
    import torch

    from ..config import load_config, test_resize
    from ..config_domains import check_model_values
    from ..data.windows import slice_windows
    from ..slicing import SlicedPredictor
    from ..slicing.inference import detect_in_windows, merge_views, read_large_image

    torch.set_num_threads(threads)
    cfg = load_config(config_file, opts)
    cfg.MODEL.DEVICE = "cpu"
    check_model_values(cfg)
    predictor = SlicedPredictor(cfg) if cfg.MODEL.WEIGHTS else None
    if predictor is None:
        from detectron2.modeling import build_model

        predictor = SlicedPredictor(cfg, model=build_model(cfg))
    settings = predictor.settings
    # One batch of windows, repeated: the cost of a window when the model runs full batches.
    probe = np.full((settings.size[0], settings.size[1] * settings.batch_size, 3), 96, np.uint8)
    probe_windows = slice_windows(*probe.shape[:2], settings.size, 0.0)
    resize = test_resize(cfg)
    list(detect_in_windows(predictor.model, probe, probe_windows, settings, resize))
    start = time.perf_counter()
    for _ in range(3):
        list(detect_in_windows(predictor.model, probe, probe_windows, settings, resize))
    per_window = (time.perf_counter() - start) / (3 * len(probe_windows))
    # SlicedPredictor's steps, the merge timed apart.
    start = time.perf_counter()
    image = read_large_image(image_path)
    height, width = image.shape[:2]
    windows = slice_windows(height, width, settings.size, settings.overlap)
    views = [d for batch in detect_in_windows(predictor.model, image, windows, settings, predictor.resize,
                                              predictor.input_format == "RGB") for d in batch]
    merge_start = time.perf_counter()
    instances = merge_views(views, (height, width), settings)
    merge_seconds = time.perf_counter() - merge_start
    seconds = time.perf_counter() - start
    return {"side": height, "windows": len(windows), "seconds": seconds, "window_seconds": per_window,
            "ratio": seconds / (len(windows) * per_window), "detections": len(instances),
            "window_detections": sum(len(v.boxes) for v in views), "merge_seconds": merge_seconds,
            "peak_rss_mb": peak_resident_mb(),
            "image_mb": height * width * 3 / 2 ** 20}


def _in_subprocess(config_file: str, opts: Sequence[str], image_path: str, threads: int) -> Dict:
    command = [sys.executable, "-m", "retina_plugin.experiments.slicing_benchmark", "--measure", image_path,
               "--config-file", config_file, "--threads", str(threads), *opts]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {image_path} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: List[Dict]) -> str:
    lines = ["| image | file | windows | seconds | windows x one window | ratio | window detections | merge seconds "
             "| peak RSS MB | image MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['side']} x {r['side']} | {r['kind']} | {r['windows']} | {r['seconds']:.1f} | "
                     f"{r['windows'] * r['window_seconds']:.1f} | {r['ratio']:.2f} | {r['window_detections']} | "
                     f"{r['merge_seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['image_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config-file", default="configs/reef_R18_cpu_v2_adamw.yaml")
    parser.add_argument("--sides", type=int, nargs="+", default=[2048, 5000, 10000, 20000])
    parser.add_argument("--kinds", nargs="+", default=["png", "npy"], choices=["png", "npy"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--folder", default="", help="where the synthetic images go (default: a temporary folder)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--measure", metavar="IMAGE", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure_one(args.config_file, args.opts, args.measure, args.threads)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(dir=args.folder or None) as folder:
        for side in args.sides:
            paths = synthetic_large_image(side, folder, args.kinds)
            for kind, path in paths.items():
                rows.append(dict(_in_subprocess(args.config_file, args.opts, path, args.threads), kind=kind))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
                os.remove(path)
    print(json.dumps(rows) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
