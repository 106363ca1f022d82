"""
Lever trial (issue 7): ``torch.compile`` (inductor, freezing) of the fast path's backbone + head
inside the full FocalRetinaNet inference, as DefaultPredictor would meet it: three input sizes
(the second makes Dynamo recompile with dynamic shapes), then the first size timed against the
eager fast path and detectron2's RetinaNet, interleaved.

    python docs/speed_levers/inference_compile_shapes.py 512 512 5
"""
import statistics
import sys
import time

import torch
import torch._inductor.config as inductor_config

import retina_plugin.modeling.fast_inference as fast_inference
from _common import benchmark, models
from inference_compile import BackboneAndHead

# Weights become constants of the graph (oneDNN can prepack them): inference only.
inductor_config.freezing = True


def main(height, width, repeats):
    _, built = models((height, width), [benchmark.MODELS[0], benchmark.MODELS[2]])
    ours, detectron2 = built[benchmark.MODELS[0]].eval(), built[benchmark.MODELS[2]].eval()
    eager_features = fast_inference.inference_features
    compiled = {}

    def compiled_features(model, images):
        backbone, head = model._fast_modules.get(model.backbone, model.head)
        if "net" not in compiled:
            net = BackboneAndHead(backbone, head, model.head_in_features)
            compiled["net"] = torch.compile(net)
        outputs = compiled["net"](model._fast_modules.prepare_input(images))
        levels = len(outputs) // 2
        return None, [list(outputs[:levels]), list(outputs[levels:])]

    def features_for_anchors(model, images):
        # forward_inference needs the features only for their sizes (anchors).
        _, predictions = compiled_features(model, images)
        return [p for p in predictions[1]], predictions

    inputs = benchmark.make_inputs((height, width), 1, 80)
    with torch.no_grad():
        expected = ours(inputs)[0]["instances"]
        fast_inference.inference_features = features_for_anchors
        for i, (h, w) in enumerate([(height, width), (height - 64, width - 96), (height - 128, width - 32)]):
            start = time.perf_counter()
            out = ours(benchmark.make_inputs((h, w), 1, 80))[0]["instances"]
            print(f"input {h}x{w}: first call {time.perf_counter() - start:.1f} s")
            if i == 0:
                print("same detections as eager:", benchmark.same_detections(expected, out), len(out))
        times = {"compiled": [], "eager": [], "detectron2": []}
        for _ in range(repeats):
            for name, features in (("compiled", features_for_anchors), ("eager", eager_features)):
                fast_inference.inference_features = features
                start = time.perf_counter()
                ours(inputs)
                times[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            detectron2(inputs)
            times["detectron2"].append(time.perf_counter() - start)
    median = {k: 1000 * statistics.median(v) for k, v in times.items()}
    print("median ms:", {k: round(v) for k, v in median.items()})
    print(f"compiled / eager {median['compiled'] / median['eager']:.3f}, "
          f"compiled / detectron2 {median['compiled'] / median['detectron2']:.3f}, "
          f"eager / detectron2 {median['eager'] / median['detectron2']:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
