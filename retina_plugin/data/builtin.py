"""
The built-in datasets as a whole: their names and splits, and building them ahead of first
use (``tools/build_datasets.py``, ``scripts/run_demo.sh``).
"""
import argparse
import os
from typing import Dict, List, Optional, Sequence

from .reef import REEF_SPLITS, ReefSourceError, ensure_reef_splits, reef_root
from .shapes import SHAPES_SPLITS, ensure_shapes_split, shapes_root

__all__ = ["BUILTIN_DATASETS", "build_builtin", "main"]

# family -> its split names
BUILTIN_DATASETS: Dict[str, List[str]] = {
    "retina_shapes": list(SHAPES_SPLITS),
    "retina_reef": list(REEF_SPLITS),
}


def build_builtin(name: str) -> List[str]:
    """Build a family (``retina_shapes``) or one split; returns a line per split built."""
    names = BUILTIN_DATASETS.get(name, [name])
    lines = []
    for split_name in names:
        if split_name in SHAPES_SPLITS:
            split, num_images, seed = SHAPES_SPLITS[split_name]
            json_file = ensure_shapes_split(shapes_root(), split, num_images, seed)
            lines.append(f"{split_name}: {num_images} images in {os.path.dirname(os.path.abspath(json_file))}")
        elif split_name in REEF_SPLITS:
            root = ensure_reef_splits(reef_root())
            lines.append(f"{split_name}: tiles in {os.path.abspath(os.path.join(root, REEF_SPLITS[split_name]))}")
        else:
            known = sorted(BUILTIN_DATASETS) + sorted(SHAPES_SPLITS) + sorted(REEF_SPLITS)
            raise ValueError(f"unknown built-in dataset {split_name!r}; choose from {known}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Build retina_plugin's built-in datasets")
    parser.add_argument("names", nargs="*", help=f"families {list(BUILTIN_DATASETS)} or split names (default: all)")
    args = parser.parse_args(argv)
    try:
        for name in args.names or list(BUILTIN_DATASETS):
            for line in build_builtin(name):
                print(line)
    except (ValueError, ReefSourceError) as e:
        parser.exit(2, f"build_datasets.py: error: {e}\n")
    return 0
