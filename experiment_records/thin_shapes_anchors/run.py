"""
Fitted anchors on objects outside the shipped anchors' ratios (issue 28's target): retina_shapes
drawn thin, 24-64 px long and 4-8 times as long as wide, lying along x or y (the configs' ratios
are 1:2 / 1:1 / 2:1), trained with configs/demo_R18_cpu.yaml as shipped and with anchors from
tools/fit_anchors.py, the rest equal.

    python experiment_records/thin_shapes_anchors/run.py [SEEDS] [JOBS]

Data under $DETECTRON2_DATASETS/thin_shapes (default ./datasets); runs, results.md/json here.
"""
import os
import sys

from retina_plugin.experiments.fitted_anchors import run_out_of_anchor_shapes

if __name__ == "__main__":
    sys.exit(run_out_of_anchor_shapes("thin_shapes", os.path.dirname(os.path.abspath(__file__)),
                                      *map(int, sys.argv[1:])))
