"""
Why fitted anchors gain so little AP on thin shapes (issue 28): the thin one-class shapes of
../thin_shapes_one_class_anchors, shipped against fitted anchors, with the matcher's low-quality
matches off (MODEL.FOCAL_RETINANET.ALLOW_LOW_QUALITY_MATCHES False: only anchors at IoU >= 0.5
are foreground), float32, the rest of configs/demo_R18_cpu.yaml as it is. With the paper's
low-quality matches every box keeps its best anchor whatever its IoU; without them a box that no
anchor covers is never trained, so the gap between the two anchor sets is what the coverage
figure predicts.

    python experiment_records/thin_shapes_one_class_strict_matching/run.py [SEEDS] [JOBS]
"""
import os
import sys

from retina_plugin.experiments.fitted_anchors import run_out_of_anchor_shapes

if __name__ == "__main__":
    sys.exit(run_out_of_anchor_shapes("thin_shapes_one_class", os.path.dirname(os.path.abspath(__file__)),
                                      *map(int, sys.argv[1:]),
                                      extra_opts=["MODEL.FOCAL_RETINANET.ALLOW_LOW_QUALITY_MATCHES", "False",
                                                  "SOLVER.AMP.ENABLED", "False"]))
