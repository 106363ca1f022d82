#!/usr/bin/env python
"""
Export a trained FocalRetinaNet and check it against eager mode before reporting success.

    # a deployment engine (ONNX Runtime / OpenVINO / TensorRT), fp32, fp16 or int8:
    python tools/export_model.py --config-file configs/demo_R18_cpu.yaml --format openvino \
        --precision int8 --output engines/demo_openvino_int8 MODEL.WEIGHTS output/demo/model_final.pth
    # one standalone file, image in, detections out (NMS inside):
    python tools/export_model.py --config-file configs/demo_R18_cpu.yaml --format torchscript \
        --output exported/ MODEL.WEIGHTS output/demo/model_final.pth
    python tools/export_model.py --verify engines/demo_openvino_int8   # its check again, here

Run an engine with retina_plugin.deploy.EnginePredictor(cfg, DIR), train_net.py --eval-only
--engine DIR, demo.py --engine DIR or tools/predict.py --engine DIR.
See retina_plugin/deploy/export_command.py for every option.
"""
from retina_plugin.deploy.export_command import main

if __name__ == "__main__":
    main()
