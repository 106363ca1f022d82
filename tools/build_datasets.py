#!/usr/bin/env python
"""
Build the built-in datasets now (they are otherwise built on first use) and print where each
split is, under $DETECTRON2_DATASETS (default ./datasets):

    python tools/build_datasets.py                      # retina_shapes and retina_reef
    python tools/build_datasets.py retina_reef          # downloads its source with pip once
    python tools/build_datasets.py retina_shapes_test   # one split

See retina_plugin/data/shapes.py and retina_plugin/data/reef.py.
"""
import sys

from retina_plugin.data.builtin import main

if __name__ == "__main__":
    sys.exit(main())
