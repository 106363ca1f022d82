#!/usr/bin/env python
"""
Anchors fitted to a dataset's boxes at the training scale: the same number of anchors per
location (so the head and checkpoints keep their shapes), one size list per FPN level; coverage
before and after; never worse than the config's anchors; deterministic for a seed.

    python tools/fit_anchors.py --config-file configs/reef_R18_cpu.yaml --output output/reef_anchors.yaml
    python train_net.py --config-file configs/reef_R18_cpu.yaml \
        MODEL.ANCHOR_GENERATOR.SIZES "[[...]]" ...   # or _BASE_ the yaml it wrote

See retina_plugin/analysis/anchor_fitting.py.
"""
import sys

from retina_plugin.analysis.command_line import fit_anchors_main

if __name__ == "__main__":
    sys.exit(fit_anchors_main())
