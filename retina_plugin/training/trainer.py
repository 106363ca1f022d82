"""
The trainer used by ``train_net.py``: detectron2's DefaultTrainer, evaluated with COCOEvaluator,
with atomic checkpoints, image reading that names the file, a NaN/inf diagnosis, a
metrics.json without repeated iterations after ``--resume``, mixed precision on CPU and GPU
(``SOLVER.AMP``), sliced evaluation of large images (``TEST.SLICE``), and in the log before the
first iteration the training data's analysis (anchor coverage) and a warning on a warm-up that
never reaches SOLVER.BASE_LR.
"""
import contextlib
import logging
import os
import weakref
from collections import OrderedDict

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

from ..analysis.dataset import log_training_data_analysis
from ..data.mapper import CheckedDatasetMapper
from ..modeling import FocalRetinaNetWithTTA
from ..slicing import SlicedInference
from .checkpoint import AtomicDetectionCheckpointer
from .metrics_json import drop_records_from
from .mixed_precision import build_step_trainer
from .nonfinite_diagnosis import NonFiniteWatch
from .optimizer import build_optimizer
from .schedule import log_schedule_warnings

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


@contextlib.contextmanager
def _mixed_precision(cfg):
    """
    DefaultTrainer builds detectron2's AMPTrainer for SOLVER.AMP.ENABLED, which runs on CUDA in
    float16 only. While the trainer is made, build ours instead (:func:`build_step_trainer`).
    """
    if not cfg.SOLVER.AMP.ENABLED:
        yield
        return
    original = d2_defaults.AMPTrainer

    def build(model, data_loader, optimizer):
        return build_step_trainer(model, data_loader, optimizer, cfg.MODEL.DEVICE, True, cfg.SOLVER.AMP.PRECISION)

    d2_defaults.AMPTrainer = build
    try:
        yield
    finally:
        d2_defaults.AMPTrainer = original


class Trainer(DefaultTrainer):
    """
    DefaultTrainer whose evaluator is COCOEvaluator (box AP) for every test dataset, COCO-json,
    VOC or built-in alike, and which also trains with several processes on CPU.
    """

    def __init__(self, cfg):
        if comm.is_main_process():
            log_training_data_analysis(cfg, logging.getLogger(__name__))
            log_schedule_warnings(cfg, logging.getLogger(__name__))
        with _cpu_ddp(cfg.MODEL.DEVICE), _mixed_precision(cfg):
            super().__init__(cfg)
        if cfg.SOLVER.DIAGNOSE_NONFINITE:
            # Under float16's grad scaler an inf gradient is normal (the scaler skips that step).
            scaled = getattr(self._trainer, "grad_scaler", None) is not None and self._trainer.grad_scaler.is_enabled()
            self.nonfinite_watch = NonFiniteWatch(
                cfg.OUTPUT_DIR, cfg.dump(), check_gradients=not scaled
            ).attach(self._trainer)

    def build_hooks(self):
        # DefaultTrainer.__init__ made a DetectionCheckpointer just before calling this; the
        # hooks (PeriodicCheckpointer) must get the atomic one.
        self.checkpointer = AtomicDetectionCheckpointer(
            self.checkpointer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        return super().build_hooks()

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if resume and self.start_iter > 0 and comm.is_main_process():
            # The iterations after the checkpoint were logged by the killed run and will be
            # logged again.
            removed = drop_records_from(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.start_iter)
            if removed:
                logging.getLogger(__name__).info(
                    f"Resuming at iteration {self.start_iter}: removed {removed} line(s) of "
                    "metrics.json logged after the checkpoint by the interrupted run"
                )

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=CheckedDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        if cfg.TEST.SLICE.ENABLED:
            # Images at their own size: the sliced model resizes each window.
            return build_detection_test_loader(
                cfg, dataset_name, mapper=CheckedDatasetMapper(cfg, False, augmentations=[]))
        return build_detection_test_loader(cfg, dataset_name, mapper=CheckedDatasetMapper(cfg, False))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """
        detectron2's evaluation; with ``TEST.SLICE.ENABLED`` every test image is predicted
        window by window (:class:`~retina_plugin.slicing.SlicedInference`).
        """
        if cfg.TEST.SLICE.ENABLED:
            model = SlicedInference.from_config(cfg, model)
        return super().test(cfg, model, evaluators)

    @classmethod
    def build_optimizer(cls, cfg, model):
        # SOLVER.OPTIMIZER: SGD (detectron2's) or AdamW, see retina_plugin/training/optimizer.py.
        return build_optimizer(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        max_dets = None
        if cfg.TEST.SLICE.ENABLED:
            max_dets = cfg.TEST.SLICE.DETECTIONS_PER_IMAGE or 10 ** 6
        return COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_folder, max_dets_per_image=max_dets)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """
        Evaluate with test-time augmentation (``TEST.AUG``: MIN_SIZES, MAX_SIZE, FLIP), as
        detectron2's R-CNN example does: results under "<dataset>_TTA", files in inference_TTA/.
        """
        evaluators = [
            cls.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, FocalRetinaNetWithTTA(cfg, model), evaluators)
        return OrderedDict((name + "_TTA", value) for name, value in results.items())
