#!/usr/bin/env python
"""
Time FocalRetinaNet against detectron2's built-in RetinaNet, built from the same config with
the same weights, and print a table (median milliseconds over --repeats runs).

Rows: the whole inference forward; the detector-specific parts alone, which is where the two
implementations differ: decoding + NMS given the head's outputs, and anchor labelling + losses
given the head's outputs.

    python tools/benchmark.py --config-file configs/retina_R50.yaml --size 512 --repeats 5
"""
import argparse
import statistics
import time

import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import retina_plugin  # noqa: F401
from retina_plugin import add_retina_config


def median_ms(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def make_inputs(num_images, size, num_classes, num_boxes, device):
    g = torch.Generator().manual_seed(0)
    inputs = []
    for _ in range(num_images):
        xy = torch.rand(num_boxes, 2, generator=g) * size * 0.8
        wh = 16 + torch.rand(num_boxes, 2, generator=g) * size * 0.3
        instances = Instances((size, size))
        instances.gt_boxes = Boxes(torch.cat([xy, (xy + wh).clamp(max=size - 1)], 1))
        instances.gt_classes = torch.randint(0, num_classes, (num_boxes,), generator=g)
        inputs.append({"image": torch.rand(3, size, size, generator=g) * 255, "instances": instances.to(device)})
    return inputs


def main():
    parser = argparse.ArgumentParser(description="FocalRetinaNet vs detectron2 RetinaNet timings")
    parser.add_argument("--config-file", default="configs/retina_R50.yaml")
    parser.add_argument("--size", type=int, default=512, help="square input side in pixels")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--boxes", type=int, default=20, help="ground-truth boxes per image")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    args = parser.parse_args()

    cfg = get_cfg()
    add_retina_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = args.device
    models = {}
    for arch in ("RetinaNet", "FocalRetinaNet"):
        cfg.MODEL.META_ARCHITECTURE = arch
        models[arch] = build_model(cfg)
    # At initialization every score is ~0.01, below the threshold: spread the logits so that
    # top-k and NMS get candidates to work on, as with a trained model.
    with torch.no_grad():
        models["RetinaNet"].head.cls_score.weight.normal_(0, 0.2)
        models["RetinaNet"].head.cls_score.bias.fill_(-2.0)
    models["FocalRetinaNet"].load_state_dict(models["RetinaNet"].state_dict())
    # detectron2 normalizes by an EMA; compare like with like.
    models["FocalRetinaNet"].loss_normalizer = "ema"

    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    inputs = make_inputs(args.batch, args.size, num_classes, args.boxes, args.device)
    rows = []
    with torch.no_grad(), EventStorage():
        for arch, model in models.items():
            model.eval()
            images = model.preprocess_image(inputs)
            features = model.backbone(images.tensor)
            features = [features[f] for f in model.head_in_features]
            predictions = model.head(features)
            gt = [x["instances"] for x in inputs]

            def decode():
                # detectron2's RetinaNet applies sigmoid_ in place: give each run a fresh copy.
                copies = [[p.clone() for p in level] for level in predictions]
                model.forward_inference(images, features, copies)

            rows.append(
                (
                    arch,
                    median_ms(lambda: model(inputs), args.repeats),
                    median_ms(decode, args.repeats),
                    median_ms(lambda: model.forward_training(images, features, predictions, gt), args.repeats),
                )
            )

    print(
        f"\n{args.config_file}, {args.batch} x {args.size}x{args.size} images, {args.boxes} boxes each, "
        f"{num_classes} classes, device {args.device}, median of {args.repeats} (ms)\n"
    )
    print(f"| {'model':<15} | {'inference':>10} | {'decode+NMS':>10} | {'labels+losses':>13} |")
    print(f"|{'-' * 17}|{'-' * 12}|{'-' * 12}|{'-' * 15}|")
    for arch, total, decode, losses in rows:
        print(f"| {arch:<15} | {total:>10.1f} | {decode:>10.1f} | {losses:>13.1f} |")


if __name__ == "__main__":
    main()
