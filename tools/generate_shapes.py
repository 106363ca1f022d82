#!/usr/bin/env python
"""
Draw the built-in "retina_shapes" dataset now (it is otherwise drawn on first use) and print
where each split is. The root is $DETECTRON2_DATASETS/retina_shapes (default ./datasets).

    python tools/generate_shapes.py                  # all splits
    python tools/generate_shapes.py retina_shapes_test
"""
import argparse
import os

from retina_plugin.data.shapes import SHAPES_SPLITS, ensure_shapes_split, shapes_root


def main(argv=None):
    parser = argparse.ArgumentParser(description="Draw the retina_shapes dataset")
    parser.add_argument("names", nargs="*", help=f"any of {list(SHAPES_SPLITS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in SHAPES_SPLITS]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {list(SHAPES_SPLITS)}")
    for name in args.names or list(SHAPES_SPLITS):
        split, num_images, seed = SHAPES_SPLITS[name]
        json_file = ensure_shapes_split(shapes_root(), split, num_images, seed)
        print(f"{name}: {num_images} images in {os.path.dirname(os.path.abspath(json_file))}")


if __name__ == "__main__":
    main()
