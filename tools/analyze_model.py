#!/usr/bin/env python
"""
Parameters and FLOPs per part (ResNet, FPN, classification subnet, box subnet) and anchors
per level of a FocalRetinaNet, from a yaml or LazyConfig (.py) config:

    python tools/analyze_model.py --config-file configs/retina_R50.yaml --size 800 1216
    python tools/analyze_model.py --config-file configs/demo_R18_cpu.py --size 256 256

Default size: the config's test resize applied to a square image.
"""
import argparse

import retina_plugin  # noqa: F401  (registers FocalRetinaNet, its parts and the datasets)
from retina_plugin.experiments.model_analysis import analyze_model, format_analysis
from retina_plugin.config import build_any_model, inference_resize, load_config


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description="FocalRetinaNet parameters, FLOPs and anchors")
    parser.add_argument("--config-file", required=True, metavar="FILE", help=".yaml or .py config")
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="input image size")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="overrides: KEY VALUE pairs (yaml) or key=value (.py)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    if hasattr(cfg, "MODEL"):
        cfg.MODEL.DEVICE = "cpu"
    model = build_any_model(cfg).to("cpu")
    height, width = args.size if args.size else [min(inference_resize(cfg)[:2])] * 2
    table = format_analysis(analyze_model(model, height, width))
    print(table)
    return table


if __name__ == "__main__":
    main()
