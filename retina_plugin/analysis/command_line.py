"""
The command lines of ``tools/analyze_dataset.py`` (a dataset as the config's model sees it,
printed, as json with ``--json``, and as a plot of box shapes against the anchors),
``tools/fit_anchors.py`` (anchors fitted to it, written as a yaml) and ``tools/analyze_errors.py``
(why AP is low: error types, PR curves, a gallery).
"""
import argparse
import json
import os
import sys
from typing import Optional, Sequence

from ..data import register_datasets_from_config
from ..entry_points.defaults import setup_config, setup_process
from .anchor_fitting import DEFAULT_MIN_COVERAGE_GAIN, anchors_yaml, fit_anchors
from .dataset import analyze_dataset, plot_box_shapes, summary_lines

__all__ = ["argument_parser", "main", "fit_anchors_main", "analyze_errors_main"]


def _parser(description: str, datasets: str = "TRAIN") -> argparse.ArgumentParser:
    """The options the three tools share: the config, and the dataset (default: the config's first)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--dataset", metavar="NAME",
                        help=f"registered dataset (default: the first of DATASETS.{datasets})")
    return parser


def argument_parser() -> argparse.ArgumentParser:
    parser = _parser("Box sizes, aspect ratios, FPN levels and anchor coverage of a dataset, at the scales "
                     "the config's resize gives them, with the config's own anchor generator and assigner")
    parser.add_argument("--json", action="store_true", help="print one json object instead of the summary")
    parser.add_argument("--plot", metavar="PNG", help="also draw box width against height with the anchor shapes")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. anchor sizes to try")
    return parser


def _config_with_a_dataset(args, tool: str, datasets: str = "TRAIN"):
    """
    (the checked config on the CPU with its datasets registered, the dataset to look at:
    ``--dataset`` or the first of ``DATASETS.<datasets>``); (None, "") and said why without one.
    """
    setup_process()
    cfg = setup_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"], training=False)
    register_datasets_from_config(cfg)
    names = cfg.DATASETS[datasets]
    dataset = args.dataset or (names[0] if names else "")
    if not dataset:
        print(f"{tool}: give --dataset NAME (the config's DATASETS.{datasets} is empty)", file=sys.stderr)
        return None, ""
    return cfg, dataset


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = argument_parser().parse_args(argv)
    cfg, dataset = _config_with_a_dataset(args, "analyze_dataset")
    if cfg is None:
        return 2
    analysis = analyze_dataset(cfg, dataset)
    if args.plot:
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        plot_box_shapes(analysis, args.plot)
    if args.json:
        analysis = {k: v for k, v in analysis.items()}
        for scale in ("train", "test"):
            analysis[scale] = {k: v for k, v in analysis[scale].items() if k not in ("box_widths_heights", "boxes_xyxy")}
        print(json.dumps(analysis))
    else:
        print("\n".join(summary_lines(analysis)))
        if args.plot:
            print(f"Wrote {args.plot}")
    return 0


def fit_anchors_main(argv: Optional[Sequence[str]] = None) -> int:
    """``tools/fit_anchors.py``: fitted anchors, coverage before and after, a yaml to merge."""
    parser = _parser("Fit MODEL.ANCHOR_GENERATOR.SIZES and ASPECT_RATIOS to a dataset's boxes at the training "
                     "scale (same anchors per location, one size list per level); never worse than the config's")
    parser.add_argument("--output", required=True, metavar="YAML", help="the anchors, to merge with _BASE_ or cfg")
    parser.add_argument("--seed", type=int, default=0, help="the search's seed: the same seed, the same anchors")
    parser.add_argument("--generations", type=int, default=1000, help="steps of the evolutionary search")
    parser.add_argument("--min-gain", type=float, default=DEFAULT_MIN_COVERAGE_GAIN, metavar="F",
                        help="keep the config's anchors unless the fitted ones cover more than F (a share of the "
                        "boxes) more")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    args = parser.parse_args(argv)
    cfg, dataset = _config_with_a_dataset(args, "fit_anchors")
    if cfg is None:
        return 2
    try:
        fit = fit_anchors(cfg, dataset, args.seed, args.generations, min_gain=args.min_gain)
    except ValueError as e:
        print(f"fit_anchors: {e}", file=sys.stderr)
        return 2
    print("Before:\n  " + "\n  ".join(summary_lines(fit["before"])))
    if fit["changed"]:
        print("After (fitted anchors):\n  " + "\n  ".join(summary_lines(fit["after"])))
        what = (f"anchor coverage {fit['coverage_before']:.3f} -> {fit['coverage_after']:.3f} at the training scale; "
                f"SIZES {fit['sizes']}, ASPECT_RATIOS [{fit['ratios']}]")
    elif fit["coverage_fitted"] > fit["coverage_before"]:
        what = (f"the fitted anchors cover {fit['coverage_fitted']:.3f} against the config's "
                f"{fit['coverage_before']:.3f}, not more than --min-gain {args.min_gain:g} more: the config's anchors "
                "are kept, written unchanged")
    else:
        what = (f"the config's anchors are already the best found (coverage {fit['coverage_before']:.3f}); "
                "written unchanged")
    print(what)
    print("As overrides: MODEL.ANCHOR_GENERATOR.SIZES " + f'"{fit["sizes"]}"'
          + " MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS " + f'"[{fit["ratios"]}]"')
    advice = fit["input_size"]
    if advice:
        keys = " ".join(f'{k} "{v}"' for k, v in advice.items() if k.startswith("INPUT."))
        print(f"Coverage stays under 0.9: the objects are small for this input size. Inputs {advice['factor']}x "
              f"larger give coverage {advice['coverage']:.2f} with the config's anchors: {keys}")
    elif fit["shape_coverage_bound"] is not None and fit["shape_coverage_bound"] < 0.9:
        print(f"Coverage stays under 0.9 at every input size: only {fit['shape_coverage_bound']:.2f} of the boxes have "
              f"a shape that one of the config's ASPECT_RATIOS reaches IoU {fit['before']['foreground_iou']:g} with "
              "(the others are too thin or too wide for them), so larger inputs cannot help: look at the boxes "
              "(tools/analyze_dataset.py --plot)")
    elif fit["coverage_after"] < 0.9:
        print("Coverage stays under 0.9 even with inputs 4x larger: look at the boxes (tools/analyze_dataset.py --plot)")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    comment = (f"Anchors for {fit['before']['dataset']} (tools/fit_anchors.py --seed {args.seed}): {what}")
    with open(args.output, "w") as f:
        f.write(anchors_yaml(fit["sizes"], fit["ratios"], comment))
    print(f"Wrote {args.output}")
    return 0


def analyze_errors_main(argv: Optional[Sequence[str]] = None) -> int:
    """``tools/analyze_errors.py``: the AP each error type costs, PR curves, the worst errors drawn."""
    parser = _parser("Why AP is low: detections sorted into TIDE's error types with the AP50 each costs, PR curves "
                     "per class and size, and a gallery of the worst false positives and missed objects", "TEST")
    parser.add_argument("--predictions", metavar="JSON",
                        help="COCOEvaluator's coco_instances_results.json (default: run the model, MODEL.WEIGHTS)")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--gallery", type=int, default=8, help="false positives and missed objects drawn, each")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    args = parser.parse_args(argv)
    cfg, dataset = _config_with_a_dataset(args, "analyze_errors", "TEST")
    if cfg is None:
        return 2
    os.makedirs(args.output, exist_ok=True)
    predictions = args.predictions
    if not predictions:
        if not cfg.MODEL.WEIGHTS:
            print("analyze_errors: give --predictions JSON or MODEL.WEIGHTS", file=sys.stderr)
            return 2
        predictions = _run_model(cfg, dataset, os.path.join(args.output, "inference"))
    with open(predictions) as f:
        detections = json.load(f)
    from detectron2.data import MetadataCatalog

    from .errors import coco_ground_truth, draw_gallery, error_breakdown, errors_markdown, plot_pr_curves

    coco = coco_ground_truth(dataset)
    breakdown = error_breakdown(coco, detections)
    table = errors_markdown(breakdown, dataset)
    with open(os.path.join(args.output, "errors.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.output, "errors.json"), "w") as f:
        json.dump({k: breakdown[k] for k in ("AP", "AP50", "counts", "delta_AP50")}, f, indent=1)
    if breakdown["evaluation"] is not None:
        names = [c["name"] for c in sorted(coco.dataset["categories"], key=lambda c: c["id"])]
        plot_pr_curves(breakdown["evaluation"], names, os.path.join(args.output, "pr_curves.png"))
    draw_gallery(coco, breakdown, MetadataCatalog.get(dataset), os.path.join(args.output, "gallery"), args.gallery)
    print(table + f"\nWrote {args.output}: errors.md, errors.json, pr_curves.png, gallery/")
    return 0


def _run_model(cfg, dataset: str, folder: str) -> str:
    """COCOEvaluator's results of the config's model (MODEL.WEIGHTS) on ``dataset``; their path."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from ..deploy.verification import evaluate_ap

    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    evaluate_ap(model, cfg, dataset, folder)
    return os.path.join(folder, "coco_instances_results.json")
