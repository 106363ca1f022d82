"""
Lever trial, the ceiling of batched prediction on a small CPU: the model alone (fast path, images
already decoded and in memory, nothing written) at batch 1, 4 and 8, against the DefaultPredictor
loop (OpenCV read + predictor, one image at a time) over the same images, timed interleaved.
Whatever tools/predict.py adds (decoding, records, chunks) comes on top of the model-alone time,
so the model-alone ratio bounds what batching alone can give on these cores.

    python experiment_records/speed_levers/prediction_ceiling.py output/demo/model_final.pth \
        output/prediction_benchmark/images 200
"""
import glob
import os
import statistics
import sys

import cv2
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from retina_plugin.entry_points.defaults import setup_config, setup_process
from retina_plugin.utils.timing import time_interleaved


def main(weights: str, folder: str, count: int) -> None:
    setup_process()
    cfg = setup_config("configs/demo_R18_cpu.yaml", ["MODEL.WEIGHTS", weights], training=False)
    files = sorted(glob.glob(os.path.join(folder, "*.png")))[:count]
    images = [cv2.imread(path) for path in files]
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(weights)
    inputs = [{"image": torch.as_tensor(image[:, :, ::-1].transpose(2, 0, 1).astype("float32").copy()),
               "height": image.shape[0], "width": image.shape[1]} for image in images]
    predictor = DefaultPredictor(cfg)

    def model_alone(batch_size):
        def run():
            with torch.no_grad():
                for start in range(0, len(inputs), batch_size):
                    model(inputs[start: start + batch_size])
        return run

    def predictor_loop():
        for path in files:
            predictor(cv2.imread(path))

    runners = {"DefaultPredictor loop (read + predict)": predictor_loop}
    runners.update({f"model alone, batch {b}": model_alone(b) for b in (1, 4, 8)})
    times, _ = time_interleaved(runners, repeats=3)
    loop_ms = statistics.median(times["DefaultPredictor loop (read + predict)"])
    print(f"{len(files)} images of {folder}, {torch.get_num_threads()} threads\n")
    print("| way | img/s | vs DefaultPredictor loop |")
    print("|---|---|---|")
    for name, values in times.items():
        ms = statistics.median(values)
        print(f"| {name} | {len(files) / ms * 1000:.1f} | {loop_ms / ms:.2f}x |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 200)
