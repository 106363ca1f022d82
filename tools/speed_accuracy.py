#!/usr/bin/env python
"""
The paper's Figure 2 for your model: COCO AP against time per image over the test scales, one
curve for eager mode and one per deployment engine (tools/export_model.py --max-size must
cover the largest scale).

    python tools/speed_accuracy.py --config-file configs/retina_R50.yaml --sizes 400 500 600 700 800 \
        --engines engines/r50_openvino_int8 --max-images 200 MODEL.WEIGHTS model_final.pth

See retina_plugin/experiments/speed_accuracy.py.
"""
import sys

from retina_plugin.experiments.speed_accuracy import main

if __name__ == "__main__":
    sys.exit(main())
