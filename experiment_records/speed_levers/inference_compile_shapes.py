"""
Lever trial: ``torch.compile`` (inductor, freezing) of the fast path's backbone + head
inside the full FocalRetinaNet inference, as DefaultPredictor would meet it: three input sizes
(the second makes Dynamo recompile with dynamic shapes), then the first size timed against the
eager fast path and detectron2's RetinaNet, interleaved.

    python experiment_records/speed_levers/inference_compile_shapes.py 512 512 5
"""
import sys
import time

import torch
import torch._inductor.config as inductor_config

from retina_plugin.utils.detection_sets import same_detections
from _common import benchmark, interleaved_medians, models
from inference_compile import BackboneAndHead


def main(height, width, repeats):
    _, built = models((height, width), [benchmark.MODELS[0], benchmark.MODELS[2]])
    ours, detectron2 = built[benchmark.MODELS[0]].eval(), built[benchmark.MODELS[2]].eval()
    # Weights become constants of the graph (oneDNN can prepack them): inference only.
    inductor_config.freezing = True
    compiled = {}

    def compiled_features(images):
        folded = ours.prepare_for_inference()
        if "net" not in compiled:
            compiled["net"] = torch.compile(BackboneAndHead(folded.backbone, folded.head, ours.head_in_features))
        outputs = compiled["net"](images.contiguous(memory_format=torch.channels_last))
        levels = len(outputs) // 2
        logits, deltas = list(outputs[:levels]), list(outputs[levels:])
        # forward_inference needs the features only for their sizes (anchors): the deltas have them.
        return deltas, [logits, deltas]

    def with_features(features):
        # An attached engine takes the place of backbone + head (None: the eager fast path).
        def run():
            ours.inference_engine = features
            return ours(inputs)
        return run

    inputs = benchmark.make_inputs((height, width), 1, 80)
    with torch.no_grad():
        expected = ours(inputs)[0]["instances"]
        ours.inference_engine = compiled_features
        for i, (h, w) in enumerate([(height, width), (height - 64, width - 96), (height - 128, width - 32)]):
            start = time.perf_counter()
            out = ours(benchmark.make_inputs((h, w), 1, 80))[0]["instances"]
            print(f"input {h}x{w}: first call {time.perf_counter() - start:.1f} s")
            if i == 0:
                print("same detections as eager:", same_detections(expected, out), len(out))
        median = interleaved_medians({
            "compiled": with_features(compiled_features),
            "eager": with_features(None),
            "detectron2": lambda: detectron2(inputs),
        }, repeats, warmup=0)
    print("median ms:", {k: round(v) for k, v in median.items()})
    print(f"compiled / eager {median['compiled'] / median['eager']:.3f}, "
          f"compiled / detectron2 {median['compiled'] / median['detectron2']:.3f}, "
          f"eager / detectron2 {median['eager'] / median['detectron2']:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
