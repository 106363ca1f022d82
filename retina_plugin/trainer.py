"""
The trainer used by ``train_net.py``: detectron2's DefaultTrainer, evaluated with COCOEvaluator.
"""
import contextlib
import os

from detectron2.engine import DefaultTrainer
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

from .optimizer import build_optimizer

__all__ = ["Trainer"]


@contextlib.contextmanager
def _cpu_ddp(device: str):
    """
    DefaultTrainer wraps the model in DDP with ``device_ids=[local_rank]``, which DDP refuses
    for a CPU model. For multi-process CPU training (``--num-gpus N`` on a machine without
    GPUs, gloo backend) build the DDP wrapper without device ids while the trainer is made.
    """
    if device != "cpu" or comm.get_world_size() == 1:
        yield
        return
    original = d2_defaults.create_ddp_model

    def create_cpu_ddp_model(model, **kwargs):
        return original(model, device_ids=None, **kwargs)

    d2_defaults.create_ddp_model = create_cpu_ddp_model
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = original


class Trainer(DefaultTrainer):
    """
    DefaultTrainer whose evaluator is COCOEvaluator (box AP) for every test dataset, COCO-json,
    VOC or built-in alike, and which also trains with several processes on CPU.
    """

    def __init__(self, cfg):
        with _cpu_ddp(cfg.MODEL.DEVICE):
            super().__init__(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        # SOLVER.OPTIMIZER: SGD (detectron2's) or AdamW, see retina_plugin/optimizer.py.
        return build_optimizer(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_folder)
