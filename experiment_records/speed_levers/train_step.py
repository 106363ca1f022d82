"""
Lever trial, the training step (batch 2, forward + backward + SGD step):
  profile  - where the fast path's step goes, by operator (torch.profiler, 2 steps);
  compile  - torch.compile of the backbone and of the head against detectron2's RetinaNet,
             interleaved, with the compile time.

    python experiment_records/speed_levers/train_step.py profile 512 512
    python experiment_records/speed_levers/train_step.py compile 512 512 3
"""
import sys
import time

import torch

from _common import benchmark, interleaved_medians, models


def main(mode, height, width, repeats=3):
    _, built = models((height, width), [benchmark.MODELS[0], benchmark.MODELS[2]])
    ours, detectron2 = built[benchmark.MODELS[0]], built[benchmark.MODELS[2]]
    inputs = benchmark.make_inputs((height, width), 2, 80)
    if mode == "profile":
        step = benchmark.runner(benchmark.MODELS[0], ours, inputs, "train")
        step()
        with torch.profiler.profile() as profile:
            step()
            step()
        print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        return
    ours.backbone = torch.compile(ours.backbone)
    ours.head = torch.compile(ours.head)
    steps = {name: benchmark.runner(name, m, inputs, "train") for name, m in built.items()}
    start = time.perf_counter()
    steps[benchmark.MODELS[0]]()
    steps[benchmark.MODELS[0]]()
    print(f"compile + 2 steps: {time.perf_counter() - start:.0f} s")
    steps[benchmark.MODELS[2]]()
    median = interleaved_medians(steps, repeats, warmup=0)
    print("median ms:", {name: round(ms) for name, ms in median.items()})
    print(f"compiled / detectron2: {median[benchmark.MODELS[0]] / median[benchmark.MODELS[2]]:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *map(int, sys.argv[4:]))
