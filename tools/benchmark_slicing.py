#!/usr/bin/env python
"""
Sliced prediction on large synthetic images: time against (windows) x (one window), and peak
memory against the image's size, PNG and .npy (docs/prediction.md "Large images"):

    python tools/benchmark_slicing.py --config-file configs/reef_R18_cpu_v2_adamw.yaml --sides 2048 5000 10000 20000 \
        MODEL.WEIGHTS output/reef_v2_adamw/model_final.pth

See retina_plugin/experiments/slicing_benchmark.py.
"""
import sys

from retina_plugin.experiments.slicing_benchmark import main

if __name__ == "__main__":
    sys.exit(main())
