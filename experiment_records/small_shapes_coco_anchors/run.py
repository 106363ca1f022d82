"""
Fitted anchors against the COCO anchor set that issue 28 names (its +3 AP target): the 6-12 px
shapes of ../small_shapes_anchors, trained with configs/demo_R18_cpu.yaml but the anchor sizes of
configs/retina_R50.yaml (Base-RetinaNet.yaml: 32-512 px, what a user of the GPU configs gets;
the CPU configs' 16-406 px anchors are measured in ../small_shapes_anchors), against the anchors
tools/fit_anchors.py fits from there, the rest equal. The R18 backbone and the demo schedule
stand in for R50 to keep a run on a CPU; the anchors are what is compared.

    python experiment_records/small_shapes_coco_anchors/run.py [SEEDS] [JOBS]
"""
import os
import sys

from retina_plugin.config import load_config
from retina_plugin.experiments.fitted_anchors import run_out_of_anchor_shapes

if __name__ == "__main__":
    coco_sizes = [list(s) for s in load_config("configs/retina_R50.yaml").MODEL.ANCHOR_GENERATOR.SIZES]
    sys.exit(run_out_of_anchor_shapes("small_shapes", os.path.dirname(os.path.abspath(__file__)),
                                      *map(int, sys.argv[1:]),
                                      extra_opts=["MODEL.ANCHOR_GENERATOR.SIZES", str(coco_sizes)]))
