#!/usr/bin/env python
"""
tools/predict.py against a DefaultPredictor loop: the same retina_shapes-sized images, the same
cores; img/s of each way and how many images' detections differ from the loop's (as sets).

    python tools/benchmark_prediction.py --weights output/demo/model_final.pth --images 1000

See retina_plugin/experiments/prediction_benchmark.py.
"""
import sys

from retina_plugin.experiments.prediction_benchmark import main

if __name__ == "__main__":
    sys.exit(main())
