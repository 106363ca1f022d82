"""
Fitted anchors on objects outside the shipped anchors' ratios (issue 28's target), with the class
question taken away: the thin shapes of ../thin_shapes_anchors (24-64 px long, 4-8 times as long
as wide, along x or y) as one class, so that AP measures finding and placing the boxes. Trained
with configs/demo_R18_cpu.yaml as shipped (NUM_CLASSES 1) and with anchors from
tools/fit_anchors.py, the rest equal.

    python experiment_records/thin_shapes_one_class_anchors/run.py [SEEDS] [JOBS]

Data under $DETECTRON2_DATASETS/thin_shapes_one_class (default ./datasets);
runs, results.md/json here.
"""
import os
import sys

from retina_plugin.experiments.fitted_anchors import run_out_of_anchor_shapes

if __name__ == "__main__":
    sys.exit(run_out_of_anchor_shapes("thin_shapes_one_class", os.path.dirname(os.path.abspath(__file__)),
                                      *map(int, sys.argv[1:])))
