"""
The command line of ``tools/predict.py``: batched, sharded, resumable prediction over folders,
globs, videos and registered datasets, on one machine or many (detectron2's ``launch`` and its
flags), with the eager model or a deployment engine.
"""
import argparse
import json
import os
import re
import sys
import time
from typing import Optional, Sequence

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, launch
from detectron2.modeling import build_model
from detectron2.utils import comm

from ..entry_points.defaults import setup_config, setup_logging, setup_process
from ..data import register_datasets_from_config

__all__ = ["argument_parser", "apply_slice_arguments", "default_num_workers", "main", "predict"]


def argument_parser() -> argparse.ArgumentParser:
    parser = default_argument_parser(
        "Predict over a collection (folders, globs, a video or a registered dataset) in batches, sharded "
        "over processes, resumable; writes coco_results.json, predictions.jsonl and summary.json")
    parser.add_argument("--input", nargs="+", required=True,
                        help="image files, folders, glob patterns; or one video file; or one registered dataset name")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model call")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="DataLoader workers decoding and resizing (default: see default_num_workers)")
    parser.add_argument("--engine", metavar="DIR", help="a deployment engine (tools/export_model.py) instead of MODEL.WEIGHTS")
    parser.add_argument("--draw", action="store_true", help="also write the detections drawn (images, or the video)")
    parser.add_argument("--draw-threshold", type=float, default=0.0, metavar="SCORE",
                        help="with --draw on images: draw only detections scoring at least this")
    parser.add_argument("--video-frames", action="store_true", help="with --draw on a video: PNG frames instead of an mp4")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per process (0: cores / processes)")
    parser.add_argument("--slice", type=int, nargs=2, metavar=("H", "W"),
                        help="large images: predict each window by window of H x W image pixels, merged "
                             "(TEST.SLICE, docs/prediction.md 'Large images'); resumable per window")
    parser.add_argument("--overlap", type=float, metavar="F",
                        help="with --slice: the fraction of a window its neighbour also covers (TEST.SLICE.OVERLAP)")
    return parser


def apply_slice_arguments(cfg, size, overlap) -> None:
    """``--slice H W`` / ``--overlap F`` into ``cfg.TEST.SLICE`` (checked, errors name the flag)."""
    from ..config_domains import in_domain

    if size is None:
        if overlap is not None:
            raise SystemExit("predict.py: --overlap needs --slice H W")
        return
    if not in_domain("TEST.SLICE.SIZE", list(size)):
        raise SystemExit(f"predict.py: --slice {size[0]} {size[1]}: expected two positive integers (window height and width)")
    if overlap is not None and not in_domain("TEST.SLICE.OVERLAP", overlap):
        raise SystemExit(f"predict.py: --overlap {overlap}: expected a fraction in [0, 1)")
    cfg.defrost()
    cfg.TEST.SLICE.ENABLED = True
    cfg.TEST.SLICE.SIZE = tuple(size)
    if overlap is not None:
        cfg.TEST.SLICE.OVERLAP = overlap
    cfg.freeze()


def default_num_workers(device: str, threads: int, processes_per_machine: int = 1) -> int:
    """
    DataLoader workers per process when --num-workers is not given. On CPU the workers take
    cores from the model: with 2 threads or fewer, decoding in the main process is faster
    (docs/prediction.md); with more, 2 workers. On GPUs, the machine's cores shared by its
    processes, at most 8, to keep up with the GPU.
    """
    if torch.device(device).type == "cpu":
        return 0 if threads <= 2 else 2
    return max(1, min(8, (os.cpu_count() or 1) // max(1, processes_per_machine)))


def _model(cfg, engine: str):
    from ..deploy import build_engine_model

    if engine:
        return build_engine_model(cfg, engine)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model


def predict(args) -> Optional[dict]:
    """One process of a run (what ``launch`` calls); returns the summary on rank 0."""
    from .runner import finish, predict_on_rank
    from .sources import resolve_source

    setup_process()
    setup_logging(args.output if comm.is_main_process() else "")
    if args.batch_size < 1 or (args.num_workers is not None and args.num_workers < 0):
        raise SystemExit("predict.py: --batch-size must be >= 1 and --num-workers >= 0")
    cfg = setup_config(args.config_file, args.opts, training=False)
    apply_slice_arguments(cfg, args.slice, args.overlap)
    if not args.engine and not cfg.MODEL.WEIGHTS:
        raise SystemExit("predict.py: give MODEL.WEIGHTS path/to/model_final.pth, or --engine DIR")
    register_datasets_from_config(cfg)
    if cfg.MODEL.DEVICE == "cpu":
        local = max(1, comm.get_local_size())
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // local))
    source = resolve_source(args.input)
    model = _model(cfg, args.engine)
    num_workers = args.num_workers
    if num_workers is None:
        num_workers = default_num_workers(cfg.MODEL.DEVICE, torch.get_num_threads(), comm.get_local_size())
    start = time.perf_counter()
    if cfg.TEST.SLICE.ENABLED:
        from .sliced_runner import predict_sliced_on_rank

        counts = predict_sliced_on_rank(model, cfg, source, args.output, args.resume, args.draw, args.draw_threshold)
    else:
        counts = predict_on_rank(model, cfg, source, args.output, args.batch_size, num_workers,
                                 args.resume, args.draw, args.draw_threshold)
    all_counts = comm.gather(counts, dst=0)
    if not comm.is_main_process():
        return None
    summary = finish(cfg, source, args.output, all_counts, time.perf_counter() - start, args.draw, args.video_frames)
    return summary


_CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+")


def _split_trailing_opts(args) -> None:
    """``--input a b MODEL.WEIGHTS w``: nargs="+" took the overrides too; give them back."""
    for i, token in enumerate(args.input):
        if _CONFIG_KEY.fullmatch(token) and not os.path.exists(token):
            args.opts = args.input[i:] + list(args.opts)
            args.input = args.input[:i]
            return


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = argument_parser().parse_args(argv)
    _split_trailing_opts(args)
    if not args.input:
        raise SystemExit("predict.py: --input names nothing")
    if not args.config_file:
        raise SystemExit("predict.py: give --config-file")
    os.makedirs(args.output, exist_ok=True)
    launch(predict, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
    # launch returns nothing from its processes: rank 0's summary is on disk.
    with open(os.path.join(args.output, "summary.json")) as f:
        summary = json.load(f)
    run = summary["this_run"]
    print(f"{summary['predicted']} of {summary['inputs']} inputs predicted ({run['images']} in this run, "
          f"{run['images_per_second']:.1f} img/s over {run['ranks']} process(es)); results in {args.output}: "
          "coco_results.json, predictions.jsonl, images.json, summary.json")
    if summary["unreadable"]:
        print(f"{len(summary['unreadable'])} input(s) could not be read and were skipped:", file=sys.stderr)
        for entry in summary["unreadable"][:20]:
            print(f"  {entry['error']}", file=sys.stderr)
        return 1
    return 0
