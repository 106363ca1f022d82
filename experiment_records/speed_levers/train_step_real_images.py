"""
Lever trial, the training step on real images: FocalRetinaNet (fused and reference focal loss)
against detectron2's RetinaNet with the same weights, on batches of a registered dataset, timed
interleaved (forward + backward, no optimizer step). Checks whether the speed benchmark's
training-step gap (random R50 weights, noise images) holds for real training.

    python experiment_records/speed_levers/train_step_real_images.py configs/demo_R18_cpu.yaml \
        output/demo/model_final.pth
    python experiment_records/speed_levers/train_step_real_images.py configs/retina_R50.yaml none \
        MODEL.DEVICE cpu MODEL.WEIGHTS "" DATASETS.TRAIN "('retina_shapes_train',)" \
        MODEL.RETINANET.NUM_CLASSES 3 INPUT.MIN_SIZE_TRAIN "(512,)" INPUT.MAX_SIZE_TRAIN 512 \
        SOLVER.IMS_PER_BATCH 2
"""
import itertools
import statistics
import sys

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import retina_plugin  # noqa: F401  (registers FocalRetinaNet)
from retina_plugin.config import load_config
from retina_plugin.utils.timing import time_interleaved

SETTINGS = {
    "FocalRetinaNet, fused focal loss": ["MODEL.FOCAL_RETINANET.FUSED_FOCAL_LOSS", "True"],
    "FocalRetinaNet, reference focal loss": ["MODEL.FOCAL_RETINANET.FUSED_FOCAL_LOSS", "False"],
    "detectron2 RetinaNet": ["MODEL.META_ARCHITECTURE", "RetinaNet"],
}


def main(config_file, weights, opts, num_batches=4):
    models = {}
    for name, setting in SETTINGS.items():
        cfg = load_config(config_file, opts + setting)
        torch.manual_seed(0)
        model = build_model(cfg)
        if weights != "none":
            DetectionCheckpointer(model).load(weights)
        models[name] = model.train()
    cfg = load_config(config_file, opts + ["DATALOADER.NUM_WORKERS", "0"])
    batches = list(itertools.islice(iter(build_detection_train_loader(cfg)), num_batches))

    def step(model):
        def run():
            for batch in batches:
                sum(model(batch).values()).backward()
                model.zero_grad(set_to_none=True)
        return run

    with EventStorage(0):
        times, _ = time_interleaved({n: step(m) for n, m in models.items()}, 3, warmup=1)
    reference = statistics.median(times["detectron2 RetinaNet"])
    print(f"| model | ms / step (median of {num_batches}-batch rounds) | vs detectron2 |")
    print("|---|---|---|")
    for name, t in times.items():
        ms = statistics.median(t) / num_batches
        print(f"| {name} | {ms:.0f} | {statistics.median(t) / reference:.2f}x |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
