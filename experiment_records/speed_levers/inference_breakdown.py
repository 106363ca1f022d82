"""
Where the fast path's inference time goes: preprocessing, backbone + head, and
decoding + NMS, timed separately (median of 5), then the decoding profiled by operator.

    python experiment_records/speed_levers/inference_breakdown.py 800 1216
"""
import sys

import torch

from _common import benchmark, median_ms, models


def main(height, width):
    _, built = models((height, width), [benchmark.MODELS[0], benchmark.MODELS[2]])
    model = built[benchmark.MODELS[0]].eval()
    inputs = benchmark.make_inputs((height, width), 1, 80)
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        features, predictions = model.features_and_predictions(images.tensor)
        parts = {
            "preprocess": lambda: model.preprocess_image(inputs),
            "backbone + head": lambda: model.features_and_predictions(images.tensor),
            "decode + NMS": lambda: model.forward_inference(images, features, predictions),
            "whole call": lambda: model(inputs),
        }
        for name, part in parts.items():
            print(f"{name}: {median_ms(part, 5):.1f} ms")
        with torch.profiler.profile() as profile:
            model.forward_inference(images, features, predictions)
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
