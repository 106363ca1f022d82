#!/usr/bin/env python
"""
Tile a registered dataset of large images into a COCO dataset of windows, to train at the
scale sliced prediction runs at (docs/prediction.md "Large images"):

    python tools/slice_dataset.py --dataset my_mosaics --output datasets/my_tiles --size 512 --overlap 0.25 \
        --register-coco my_mosaics mosaics.json mosaic_images/
    python tools/slice_dataset.py --dataset my_mosaics --output datasets/my_tiles --val-rows 2   # split by area

See retina_plugin/data/tiled_dataset.py (the reef builder writes through the same tiler).
"""
import sys

from retina_plugin.data.tiled_dataset import main

if __name__ == "__main__":
    sys.exit(main())
