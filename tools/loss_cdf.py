#!/usr/bin/env python
"""
The paper's Figure 4 for a trained model: cumulative distribution of the focal loss over
positive and negative samples, one curve per gamma, and the loss share of the hardest
20 % of positives / 5 % of negatives.

    python tools/loss_cdf.py --config-file configs/demo_R18_cpu.yaml --gammas 0,0.5,1,2 \
        --output loss_cdf.png MODEL.WEIGHTS output/demo/model_final.pth

See retina_plugin/loss_distribution.py.
"""
import sys

from retina_plugin.experiments.loss_distribution import main

if __name__ == "__main__":
    sys.exit(main())
