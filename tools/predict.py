#!/usr/bin/env python
"""
Predict over a collection: image folders, globs, a video or a registered dataset, in batches,
decoded in DataLoader workers, sharded over processes by detectron2's launch (--num-gpus,
--num-machines, --machine-rank, --dist-url), resumable after a kill (--resume), with the eager
model or a deployment engine (--engine DIR).

    python tools/predict.py --config-file configs/demo_R18_cpu.yaml --input photos/ \
        --output predictions/ --batch-size 8 MODEL.WEIGHTS output/demo/model_final.pth
    python tools/predict.py --config-file configs/demo_R18_cpu.yaml --input retina_shapes_val \
        --output predictions/ --engine engines/demo_openvino_int8 --num-gpus 2   # 2 CPU processes

Writes coco_results.json, predictions.jsonl (one line per image: file, size, boxes XYXY and
XYWH, scores, class names), images.json and summary.json; --draw also the pictures. Exit
status 1 when inputs could not be read (they are named and counted).
See retina_plugin/prediction/.
"""
import sys

from retina_plugin.prediction.command_line import main

if __name__ == "__main__":
    sys.exit(main())
