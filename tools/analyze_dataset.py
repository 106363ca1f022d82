#!/usr/bin/env python
"""
A dataset as the config's model sees it: images, boxes per class and image, box sizes and aspect
ratios at the train and test scale, the FPN level each box falls to, and anchor coverage (the
share of boxes whose best anchor reaches the foreground IoU), per class and size, with the
model's own anchor generator and assigner.

    python tools/analyze_dataset.py --config-file configs/reef_R18_cpu.yaml --plot output/reef_boxes.png
    python tools/analyze_dataset.py --config-file my.yaml --dataset my_train --json \
        MODEL.ANCHOR_GENERATOR.SIZES "[[16], [32], [64], [128], [256]]"   # anchors to try

See retina_plugin/analysis/.
"""
import sys

from retina_plugin.analysis.command_line import main

if __name__ == "__main__":
    sys.exit(main())
