#!/usr/bin/env python
"""
The paper's Table 1 as a tool: train + evaluate a config under a grid of settings and/or named
variants, several seeds each, resumable; writes DIR/results.md, results.json, results.png.

    python tools/ablate.py --config-file configs/demo_R18_cpu.yaml \
        --grid MODEL.RETINANET.FOCAL_LOSS_GAMMA=0,0.5,1,2,5 MODEL.RETINANET.FOCAL_LOSS_ALPHA=.25,.5,.75 \
        --seeds 2 --output output/ablation SOLVER.MAX_ITER 300
    python tools/ablate.py --config-file configs/demo_R18_cpu.yaml --seeds 3 --output output/ohem \
        --variant ohem13 MODEL.FOCAL_RETINANET.CLASSIFICATION_LOSS=OHEMLoss \
        --variant no_prior MODEL.RETINANET.PRIOR_PROB=0.5

See retina_plugin/ablation.py.
"""
import sys

from retina_plugin.experiments.ablation import main

if __name__ == "__main__":
    sys.exit(main())
