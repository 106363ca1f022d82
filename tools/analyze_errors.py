#!/usr/bin/env python
"""
Why AP is low: every detection sorted into TIDE's error types (classification, localization,
both, duplicate, background, missed) with the AP50 that fixing each would gain, PR curves per
class and per object size at IoU 0.5 / 0.75, and a gallery of the worst false positives and
missed objects.

    python tools/analyze_errors.py --config-file configs/demo_R18_cpu.yaml --output output/demo/errors \
        MODEL.WEIGHTS output/demo/model_final.pth          # runs the model
    python tools/analyze_errors.py --config-file configs/demo_R18_cpu.yaml --output output/demo/errors \
        --predictions output/demo/inference/retina_shapes_val/coco_instances_results.json

See retina_plugin/analysis/errors.py.
"""
import sys

from retina_plugin.analysis.command_line import analyze_errors_main

if __name__ == "__main__":
    sys.exit(analyze_errors_main())
