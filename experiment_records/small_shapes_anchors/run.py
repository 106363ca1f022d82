"""
Fitted anchors on objects outside the shipped anchors (issue 28's target): retina_shapes drawn
with 6-12 px objects (the CPU configs' smallest anchor is 16 px), trained with
configs/demo_R18_cpu.yaml as shipped and with anchors from tools/fit_anchors.py, the rest equal.

    python experiment_records/small_shapes_anchors/run.py [SEEDS] [JOBS]

Data under $DETECTRON2_DATASETS/small_shapes (default ./datasets); runs, results.md/json here.
"""
import os
import sys

from retina_plugin.experiments.fitted_anchors import run_out_of_anchor_shapes

if __name__ == "__main__":
    sys.exit(run_out_of_anchor_shapes("small_shapes", os.path.dirname(os.path.abspath(__file__)),
                                      *map(int, sys.argv[1:])))
