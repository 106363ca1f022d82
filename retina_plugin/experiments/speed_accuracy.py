"""
The paper's Figure 2 for a user's own model: COCO AP against time per image over the test
scales (INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST scaled with it), one curve for eager mode and
one per deployment engine, so that a deployer picks a point on the curve instead of guessing.

Each point runs the model on the same images of a registered dataset, resized for that scale;
the time is the median of the per-image model calls (pre- and post-processing included,
decoding of the files not), the AP COCOEvaluator's over all those images.
"""
import argparse
import copy
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch

from detectron2.data import DatasetCatalog
from detectron2.evaluation import COCOEvaluator

from ..data.mapper import CheckedDatasetMapper

__all__ = ["scaled_config", "eager_models", "measure_point", "speed_accuracy_curve", "curve_markdown", "plot_curve",
           "main"]

SHORT_DTYPES = {"float32": "fp32", "bfloat16": "bf16"}


def scaled_config(cfg, min_size: int):
    """``cfg`` with INPUT.MIN_SIZE_TEST ``min_size`` and MAX_SIZE_TEST scaled in proportion."""
    scaled = cfg.clone()
    scaled.defrost()
    ratio = cfg.INPUT.MAX_SIZE_TEST / max(cfg.INPUT.MIN_SIZE_TEST, 1)
    scaled.INPUT.MIN_SIZE_TEST = int(min_size)
    scaled.INPUT.MAX_SIZE_TEST = int(round(min_size * ratio))
    return scaled


def eager_models(model, dtypes: Sequence[str]) -> Dict[str, torch.nn.Module]:
    """
    {"eager <dtype> (fast path)": model} for each of ``dtypes`` (MODEL.FOCAL_RETINANET.INFERENCE_DTYPE
    values): ``model`` itself for the first, a copy for each other, so every row keeps its own
    folded copy.
    """
    models = {}
    for i, dtype in enumerate(dtypes):
        row = model if i == 0 else copy.deepcopy(model)
        if dtype != getattr(row, "inference_dtype", "float32"):
            if not hasattr(row, "inference_dtype"):
                raise ValueError(f"{type(row).__name__} has no INFERENCE_DTYPE: it runs in float32 only, not {dtype}")
            row.inference_dtype = dtype
        models[f"eager {SHORT_DTYPES[dtype]} (fast path)"] = row
    return models


@torch.no_grad()
def measure_point(model, cfg, dataset: str, images: Sequence[Dict], output_dir: str) -> Dict:
    """
    ms/img (median over ``images``, mapped for ``cfg``'s test size) and COCO box AP of
    ``model`` on them.
    """
    evaluator = COCOEvaluator(dataset, tasks=("bbox",), output_dir=output_dir)
    evaluator.reset()
    model([images[0]])  # warm-up: allocations, lazy compilation
    times = []
    for image in images:
        start = time.perf_counter()
        outputs = model([image])
        times.append((time.perf_counter() - start) * 1000)
        evaluator.process([image], outputs)
    results = evaluator.evaluate() or {}
    return {"ms": statistics.median(times), "AP": float(results.get("bbox", {}).get("AP", float("nan")))}


def speed_accuracy_curve(models: Dict[str, torch.nn.Module], cfg, dataset: str, sizes: Sequence[int],
                         output_dir: str, max_images: Optional[int] = None, log=print) -> List[Dict]:
    """
    One row per (model name, test size): {"model", "size", "max_size", "ms", "AP"}. A model
    that refuses a size (an engine whose input profile is smaller) gets no row there.
    """
    from ..deploy.engines import EngineError

    records = DatasetCatalog.get(dataset)[: max_images or None]
    rows = []
    for size in sizes:
        scaled = scaled_config(cfg, size)
        mapper = CheckedDatasetMapper(scaled, False)
        images = [mapper(r) for r in records]
        for name, model in models.items():
            try:
                point = measure_point(model, scaled, dataset, images, os.path.join(output_dir, f"{name}_{size}"))
            except EngineError as e:
                log(f"{name} at {size}: skipped ({e})")
                continue
            rows.append({"model": name, "size": size, "max_size": scaled.INPUT.MAX_SIZE_TEST, **point})
            log(f"{name} at {size}: {point['ms']:.1f} ms/img, AP {point['AP']:.1f}")
    return rows


def curve_markdown(rows: List[Dict]) -> str:
    sizes = sorted({r["size"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    cell = {(r["model"], r["size"]): r for r in rows}
    lines = ["| model | " + " | ".join(f"{s} px: ms / AP" for s in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for m in models:
        cells = [f"{cell[m, s]['ms']:.1f} / {cell[m, s]['AP']:.1f}" if (m, s) in cell else "-" for s in sizes]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curve(rows: List[Dict], path: str, title: str = ""):
    """
    AP against ms/img, one curve per model, each point labelled with its test size. Returns
    the matplotlib Figure (saved to ``path``, closed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for model in dict.fromkeys(r["model"] for r in rows):
        points = sorted((r for r in rows if r["model"] == model), key=lambda r: r["size"])
        ax.plot([p["ms"] for p in points], [p["AP"] for p in points], marker="o", label=model)
        for p in points:
            ax.annotate(str(p["size"]), (p["ms"], p["AP"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("time per image (ms)")
    ax.set_ylabel("COCO box AP")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Speed against accuracy over test scales (the paper's Figure 2) for a trained model: "
        "eager mode and each engine given. Writes speed_accuracy.md, .json and .png.")
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 500, 600, 700, 800],
                        help="INPUT.MIN_SIZE_TEST values (MAX_SIZE_TEST scales with them)")
    parser.add_argument("--engines", nargs="*", default=[], metavar="DIR",
                        help="engine folders (tools/export_model.py; --max-size must cover the largest size)")
    parser.add_argument("--eager-dtypes", nargs="+", choices=list(SHORT_DTYPES), metavar="DTYPE",
                        help="one eager row per dtype of the fast path: float32, bfloat16 (default: "
                        "MODEL.FOCAL_RETINANET.INFERENCE_DTYPE)")
    parser.add_argument("--dataset", help="registered dataset (default: the first of DATASETS.TEST)")
    parser.add_argument("--max-images", type=int, default=0, help="its first N images (0: all)")
    parser.add_argument("--output", default="output/speed_accuracy", metavar="DIR")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHTS output/demo/model_final.pth")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from ..deploy.predictor import build_engine_model
    from ..entry_points.defaults import setup_config, setup_logging, setup_process
    from ..data import register_datasets_from_config

    args = argument_parser().parse_args(argv)
    setup_process()
    setup_logging()
    cfg = setup_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"], training=False)
    if not cfg.MODEL.WEIGHTS:
        print("speed_accuracy: error: MODEL.WEIGHTS is empty; give a trained model", file=sys.stderr)
        return 2
    register_datasets_from_config(cfg)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    eager = build_model(cfg).eval()
    DetectionCheckpointer(eager).load(cfg.MODEL.WEIGHTS)
    models = eager_models(eager, args.eager_dtypes or [cfg.MODEL.FOCAL_RETINANET.INFERENCE_DTYPE])
    for folder in args.engines:
        engine_model = build_engine_model(cfg, folder)
        engine = engine_model.inference_engine
        models[f"{engine.backend} {engine.precision}"] = engine_model
    os.makedirs(args.output, exist_ok=True)
    rows = speed_accuracy_curve(models, cfg, dataset, args.sizes, args.output, args.max_images or None)
    header = (f"{os.path.basename(cfg.MODEL.WEIGHTS)} on {dataset}"
              f"{f' (first {args.max_images} images)' if args.max_images else ''}, "
              f"CPU threads {torch.get_num_threads()}")
    table = curve_markdown(rows)
    with open(os.path.join(args.output, "speed_accuracy.md"), "w") as f:
        f.write(f"{header}\n\n{table}")
    with open(os.path.join(args.output, "speed_accuracy.json"), "w") as f:
        json.dump({"config": args.config_file, "dataset": dataset, "rows": rows}, f, indent=1)
    plot_curve(rows, os.path.join(args.output, "speed_accuracy.png"), header)
    print(f"\n{header}\n\n{table}\nWrote {args.output}/speed_accuracy.md, .json, .png")
    return 0
