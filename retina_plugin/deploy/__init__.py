"""
Deployment: export of a trained FocalRetinaNet to TorchScript and ONNX.
"""
