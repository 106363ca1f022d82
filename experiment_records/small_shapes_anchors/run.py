"""
Fitted anchors on objects outside the shipped anchors (issue 28's target): retina_shapes drawn
with 6-12 px objects (the CPU configs' smallest anchor is 16 px), trained with
configs/demo_R18_cpu.yaml as shipped and with anchors from tools/fit_anchors.py, the rest equal.

    python experiment_records/small_shapes_anchors/run.py [SEEDS] [JOBS]

Data under $DETECTRON2_DATASETS/small_shapes (default ./datasets); runs, results.md/json here.
"""
import os
import sys

from retina_plugin.analysis import fit_anchors
from retina_plugin.config import load_config
from retina_plugin.data import register_datasets_from_config
from retina_plugin.data.shapes import generate_shapes_split
from retina_plugin.experiments import ablation

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = "configs/demo_R18_cpu.yaml"
OBJECT_SIZE = (6, 12)


def main(seeds: int = 1, jobs: int = 2) -> int:
    data = os.path.abspath(os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "small_shapes"))
    for split, count, seed in (("train", 600, 1), ("val", 100, 2)):
        if not os.path.isfile(os.path.join(data, split, "annotations.json")):
            generate_shapes_split(os.path.join(data, split), count, seed, object_size=OBJECT_SIZE)
    opts = ["DATASETS.REGISTER.COCO",
            str([[f"small_shapes_{s}", os.path.join(data, s, "annotations.json"), os.path.join(data, s)]
                 for s in ("train", "val")]),
            "DATASETS.TRAIN", "('small_shapes_train',)", "DATASETS.TEST", "('small_shapes_val',)"]
    cfg = load_config(CONFIG, opts)
    register_datasets_from_config(cfg)
    fit = fit_anchors(cfg, seed=0)
    print(f"coverage {fit['coverage_before']:.3f} -> {fit['coverage_after']:.3f}: SIZES {fit['sizes']}, "
          f"ASPECT_RATIOS [{fit['ratios']}]")
    fitted = ["--variant", "fitted_anchors", f"MODEL.ANCHOR_GENERATOR.SIZES={fit['sizes']}",
              f"MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS=[{fit['ratios']}]"]
    return ablation.main(["--config-file", CONFIG, "--seeds", str(seeds), "--jobs", str(jobs),
                          "--output", HERE, *fitted, *opts])


if __name__ == "__main__":
    sys.exit(main(*map(int, sys.argv[1:])))
