#!/usr/bin/env python
"""
Export a FocalRetinaNet to TorchScript (traced or scripted) or ONNX, then check the written
file against eager mode on the sample image and on resized copies of it:

    python tools/export_model.py --config-file configs/demo_R18_cpu.yaml --format torchscript \
        --output exported/ --sample-image photo.jpg MODEL.WEIGHTS output/demo/model_final.pth
    python tools/export_model.py --config-file configs/demo_R18_cpu.yaml --format onnx \
        --output exported/ MODEL.WEIGHTS output/demo/model_final.pth   # needs .[export]

The exported model takes one image (3, H, W), float, in the config's INPUT.FORMAT, already
resized as the config's test resize does, and returns boxes (M, 4) in that image's pixels,
scores (M,) and classes (M,). Without --sample-image the first image of DATASETS.TEST is used.
"""
import argparse
import sys

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image

import retina_plugin  # noqa: F401  (registers FocalRetinaNet, its parts and the datasets)
from retina_plugin.deploy.export import (
    FORMATS,
    METHODS,
    export_model,
    load_exported,
    resized_copies,
    run_eager,
    run_exported,
    verify_exported,
)
from retina_plugin.utils.timing import median_latency_ms
from retina_plugin.config import build_any_model, load_config, model_weights, test_resize


def get_parser():
    parser = argparse.ArgumentParser(description="Export FocalRetinaNet and check it against eager mode")
    parser.add_argument("--config-file", required=True, metavar="FILE", help=".yaml or .py config")
    parser.add_argument("--format", choices=FORMATS, default="torchscript")
    parser.add_argument("--export-method", choices=METHODS, default="tracing",
                        help="torchscript only; onnx is always traced")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the exported file")
    parser.add_argument("--sample-image", metavar="IMG",
                        help="image used to trace and to check (default: first of DATASETS.TEST)")
    parser.add_argument("--benchmark", type=int, default=0, metavar="N",
                        help="also print the median latency of eager vs exported over N runs")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return parser


def sample_image(cfg, path: str) -> torch.Tensor:
    """
    ``path`` (or the first image of the config's test set), resized as DefaultPredictor does:
    a float (3, H, W) tensor in INPUT.FORMAT.
    """
    min_size, max_size, image_format = test_resize(cfg)
    if not path:
        test_sets = cfg.DATASETS.TEST if hasattr(cfg, "DATASETS") else [cfg.dataloader.test.dataset.names]
        if not test_sets:
            raise SystemExit("export_model.py: give --sample-image (the config has no test set)")
        path = DatasetCatalog.get(test_sets[0])[0]["file_name"]
    image = read_image(path, format=image_format)
    resize = T.ResizeShortestEdge([min_size] * 2, max_size)
    image = resize.get_transform(image).apply_image(image)
    return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))


def main(argv=None) -> str:
    args = get_parser().parse_args(argv)
    if args.format == "onnx" and args.export_method != "tracing":
        raise SystemExit("export_model.py: ONNX export is traced; use --export-method tracing")
    cfg = load_config(args.config_file, args.opts)
    if hasattr(cfg, "MODEL"):  # yaml; export on the CPU
        cfg.MODEL.DEVICE = "cpu"
    model = build_any_model(cfg).to("cpu").eval()
    DetectionCheckpointer(model).load(model_weights(cfg))
    image = sample_image(cfg, args.sample_image)

    path = export_model(model, image, args.output, args.format, args.export_method)
    exported = load_exported(path)
    report = verify_exported(model, exported, [image] + resized_copies(image))
    print(f"{'input H x W':>12} | detections | agrees with eager")
    for (height, width), count, problems in report:
        print(f"{height:>5} x {width:<4} | {count:>10} | {'yes' if not problems else '; '.join(problems)}")
    if any(problems for _, _, problems in report):
        sys.exit(f"export_model.py: {path} does NOT match eager mode (see above)")
    print(f"Wrote {path}; it gives eager mode's detections on all {len(report)} images above.")
    if args.benchmark:
        height, width = image.shape[1:]
        eager_ms = median_latency_ms(lambda: run_eager(model, image), args.benchmark)
        exported_ms = median_latency_ms(lambda: run_exported(exported, image), args.benchmark)
        kind = f"{args.format} ({args.export_method})"
        print(f"Median latency over {args.benchmark} runs at {height} x {width}, "
              f"{torch.get_num_threads()} threads: eager {eager_ms:.1f} ms, {kind} {exported_ms:.1f} ms")
    return path


if __name__ == "__main__":
    main()
