"""
Lever trial: the fast path's folded, channels_last backbone + head, eager against
``torch.jit`` trace + freeze + optimize_for_inference and ``torch.compile`` (inductor, freezing),
at one fixed input size, interleaved. Prints preparation time, error and median ms.

    python experiment_records/speed_levers/inference_compile.py {jit,compile} 512 512 5
"""
import sys
import time

import torch
import torch._inductor.config as inductor_config
from torch import nn

from _common import benchmark, interleaved_medians, models


class BackboneAndHead(nn.Module):
    def __init__(self, backbone, head, in_features):
        super().__init__()
        self.backbone, self.head, self.in_features = backbone, head, in_features

    def forward(self, x):
        features = self.backbone(x)
        features = [features[f] for f in self.in_features]
        logits, deltas = self.head(features)
        return tuple(logits) + tuple(deltas)


def main(mode, height, width, repeats):
    _, built = models((height, width), [benchmark.MODELS[0], benchmark.MODELS[2]])
    model = built[benchmark.MODELS[0]].eval()
    folded = model.prepare_for_inference()
    net = BackboneAndHead(folded.backbone, folded.head, model.head_in_features).eval()
    x = torch.randn(1, 3, height, width).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = net(x)
        start = time.perf_counter()
        if mode == "jit":
            fast = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, x)))
        else:
            # Weights become constants of the graph (oneDNN can prepack them): inference only.
            inductor_config.freezing = True
            fast = torch.compile(net)
        actual = fast(x)
        print(f"{mode}: preparation + first call {time.perf_counter() - start:.1f} s")
        error = max(float((a - e).abs().max() / e.abs().max()) for a, e in zip(actual, expected))
        print(f"max error relative to each output's largest value: {error:.1e}")
        median = interleaved_medians({"eager": lambda: net(x), mode: lambda: fast(x)}, repeats, warmup=0)
    eager, other = median["eager"], median[mode]
    print(f"median ms: eager {eager:.0f}, {mode} {other:.0f}, ratio {other / eager:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
