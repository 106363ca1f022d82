from setuptools import find_packages, setup

# detectron2 is deliberately not in install_requires: it has no official PyPI release, and users
# who built it from source must not get a second copy. scripts/setup_env.sh installs the
# `sal-detectron2` wheel; `pip install -e .[wheel]` does the same from here.
setup(
    name="retina_plugin",
    version="0.1.0",
    description="RetinaNet and the focal loss (Lin et al., 2017) as a detectron2 plugin",
    packages=find_packages(include=["retina_plugin", "retina_plugin.*"]),
    python_requires=">=3.8",
    install_requires=["fvcore", "iopath", "pycocotools", "opencv-python-headless", "tqdm", "matplotlib"],
    extras_require={
        "wheel": ["sal-detectron2==0.7.2", "setuptools<81"],
        "test": ["pytest", "hypothesis"],
        # Export and the CPU deployment engines (tools/export_model.py): ONNX, ONNX Runtime,
        # OpenVINO with NNCF for int8. ml-dtypes 0.6 (an onnx dependency) needs numpy 2, which
        # the detectron2 wheel does not allow. TensorRT: pip install tensorrt on a CUDA machine.
        "deploy": ["onnx", "onnxruntime", "ml-dtypes<0.6", "openvino==2026.4.1", "nncf==3.4.0"],
    },
)
