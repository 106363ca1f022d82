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

from retina_plugin.experiments.fitted_anchors import OUT_OF_ANCHOR_CONFIG, OUT_OF_ANCHOR_SHAPES, compare_fitted_anchors

if __name__ == "__main__":
    name = "thin_shapes_one_class"
    given = [int(x) for x in sys.argv[1:3]]
    seeds, jobs = given + [1, 2][len(given):]
    object_size, elongation, one_class = OUT_OF_ANCHOR_SHAPES[name]
    root = os.path.abspath(os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), name))
    sys.exit(compare_fitted_anchors(OUT_OF_ANCHOR_CONFIG, root, name, object_size, elongation, seeds, jobs,
                                    os.path.dirname(os.path.abspath(__file__)), one_class,
                                    extra_opts=["MODEL.FOCAL_RETINANET.ALLOW_LOW_QUALITY_MATCHES", "False",
                                                "SOLVER.AMP.ENABLED", "False"])["returncode"])
