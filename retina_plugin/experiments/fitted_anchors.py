"""
Do fitted anchors pay in AP? ``retina_shapes`` drawn outside a config's anchors (objects smaller
than the smallest anchor, or thinner than its 1:2 ratio), trained with the config's anchors and
with the anchors :func:`~retina_plugin.analysis.fit_anchors` fits, the rest equal, through the
ablation harness (``experiment_records/*_shapes_anchors/run.py``).
"""
import json
import os
import shutil
from typing import Dict, List, Sequence, Tuple

from ..analysis import fit_anchors
from ..config import load_config
from ..data import register_datasets_from_config
from ..data.shapes import SHAPES_ELONGATION, SHAPES_OBJECT_SIZE, generate_shapes_split
from ..utils.files import atomic_write_json
from . import ablation

__all__ = ["OUT_OF_ANCHOR_SHAPES", "SHAPES_VARIANT_SPLITS", "shapes_variant_opts", "compare_fitted_anchors",
           "run_out_of_anchor_shapes"]

# split -> (number of images, seed): the sizes of retina_shapes' train and val splits.
SHAPES_VARIANT_SPLITS = {"train": (600, 1), "val": (100, 2)}
# name -> (object sizes, elongation, one class) of shapes outside configs/demo_R18_cpu.yaml's anchors:
# under its smallest anchor (16 px), or thinner than its ratios (1:2 / 1:1 / 2:1). With one class
# ("shape" for all four), AP measures finding and placing boxes, what anchors are for: on the four
# classes of thin shapes, confusing the classes costs 46 AP50 and localization 2 (tools/analyze_errors.py).
OUT_OF_ANCHOR_SHAPES = {
    "small_shapes": ((6, 12), (1, 1), False),
    "thin_shapes": ((24, 64), (4, 8), False),
    "thin_shapes_one_class": ((24, 64), (4, 8), True),
}
OUT_OF_ANCHOR_CONFIG = "configs/demo_R18_cpu.yaml"


def _one_class_json(json_file: str) -> str:
    """A copy of a shapes json beside it whose objects all have the one class "shape"."""
    with open(json_file) as f:
        data = json.load(f)
    for annotation in data["annotations"]:
        annotation["category_id"] = 1
    data["categories"] = [{"id": 1, "name": "shape"}]
    one_class = json_file.replace(".json", "_one_class.json")
    atomic_write_json(one_class, data)
    return one_class


def shapes_variant_opts(root: str, name: str, object_size: Tuple[float, float],
                        elongation: Tuple[float, float] = SHAPES_ELONGATION, one_class: bool = False) -> List[str]:
    """
    Draw ``root/train`` and ``root/val`` (unless already there) with these object sizes and
    elongation; returns the config overrides that register them as ``{name}_train`` /
    ``{name}_val`` and train and test on them (``one_class``: as one class, "shape").
    """
    for split, (count, seed) in SHAPES_VARIANT_SPLITS.items():
        json_file = os.path.join(root, split, "annotations.json")
        if os.path.isfile(json_file):
            with open(json_file) as f:
                info = json.load(f).get("info", {})
            drawn = (info.get("num_images"), info.get("seed"), tuple(info.get("object_size", SHAPES_OBJECT_SIZE)),
                     tuple(info.get("elongation", SHAPES_ELONGATION)))
            if drawn == (count, seed, tuple(object_size), tuple(elongation)):
                continue
            shutil.rmtree(os.path.join(root, split))  # drawn with other settings
        generate_shapes_split(os.path.join(root, split), count, seed, object_size=object_size,
                              elongation=elongation)
    registered = []
    for split in SHAPES_VARIANT_SPLITS:
        json_file = os.path.join(root, split, "annotations.json")
        registered.append([f"{name}_{split}", _one_class_json(json_file) if one_class else json_file,
                           os.path.join(root, split)])
    return ["DATASETS.REGISTER.COCO", str(registered), "DATASETS.TRAIN", f"('{name}_train',)",
            "DATASETS.TEST", f"('{name}_val',)", *(["MODEL.RETINANET.NUM_CLASSES", "1"] if one_class else [])]


def compare_fitted_anchors(config_file: str, root: str, name: str, object_size: Tuple[float, float],
                           elongation: Tuple[float, float], seeds: int, jobs: int, output_dir: str,
                           one_class: bool = False, extra_opts: Sequence[str] = ()) -> Dict:
    """
    Fit anchors to ``{name}_train`` at ``config_file``'s training scale, then train and evaluate
    the config as it is ("base") and with the fitted anchors ("fitted_anchors"), ``seeds`` seeds
    each, into ``output_dir`` (resumable: finished runs are kept). Returns the fit and the
    ablation's exit status as {"fit", "returncode"}.
    """
    opts = shapes_variant_opts(root, name, object_size, elongation, one_class) + list(extra_opts)
    cfg = load_config(config_file, opts)
    register_datasets_from_config(cfg)
    fit = fit_anchors(cfg, seed=0)
    print(f"coverage {fit['coverage_before']:.3f} -> {fit['coverage_after']:.3f}: SIZES {fit['sizes']}, "
          f"ASPECT_RATIOS [{fit['ratios']}]")
    fitted = ["--variant", "fitted_anchors", f"MODEL.ANCHOR_GENERATOR.SIZES={fit['sizes']}",
              f"MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS=[{fit['ratios']}]"]
    returncode = ablation.main(["--config-file", config_file, "--seeds", str(seeds), "--jobs", str(jobs),
                                "--output", output_dir, *fitted, *opts])
    return {"fit": fit, "returncode": returncode}


def run_out_of_anchor_shapes(name: str, output_dir: str, seeds: int = 1, jobs: int = 2,
                             extra_opts: Sequence[str] = ()) -> int:
    """
    :func:`compare_fitted_anchors` on one of :data:`OUT_OF_ANCHOR_SHAPES`, drawn under
    ``$DETECTRON2_DATASETS/<name>``, with the demo config and ``extra_opts`` (KEY VALUE ...) on
    both anchor sets; returns the exit status.
    """
    object_size, elongation, one_class = OUT_OF_ANCHOR_SHAPES[name]
    root = os.path.abspath(os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), name))
    return compare_fitted_anchors(OUT_OF_ANCHOR_CONFIG, root, name, object_size, elongation, seeds, jobs,
                                  output_dir, one_class, extra_opts)["returncode"]
