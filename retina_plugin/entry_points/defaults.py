"""
The set-up that every entry point of the project shares (train_net.py, the ablation runs,
tools/predict.py): the config checked before anything is built, detectron2's default set-up,
retina_plugin's own log lines in the run's log.txt, and the datasets the config registers.
"""
import logging
import warnings
from typing import Sequence

from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import load_config
from ..config_checks import check_config
from ..data import check_num_classes, register_datasets_from_config

from .allocator import configure_allocator

__all__ = ["setup_process", "setup_config", "setup_logging", "setup_run"]


def setup_process() -> str:
    """
    What a process of ours sets for itself, first thing in ``main``: glibc keeps freed memory
    (:mod:`retina_plugin.entry_points.allocator`, opt out with RETINA_PLUGIN_ALLOCATOR=default), and
    detectron2's call of ``torch.meshgrid`` without ``indexing`` (its "ij" default is what it
    means) does not warn in every run. Returns the allocator setting in effect.
    """
    warnings.filterwarnings(
        "ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning
    )
    return configure_allocator()


def setup_config(config_file: str, opts: Sequence[str] = (), register_coco: Sequence = (),
                 register_voc: Sequence = (), voc_class_names: str = "", training: bool = True):
    """
    The frozen, checked yaml config of a run: ``config_file`` + ``opts``, plus datasets given
    on the command line (``--register-coco NAME JSON ROOT``, ``--register-voc NAME DIR SPLIT``,
    ``--voc-class-names a,b``). ``training=False`` leaves the solver keys unchecked.
    """
    cfg = load_config(config_file, opts)
    cfg.DATASETS.REGISTER.COCO = list(cfg.DATASETS.REGISTER.COCO) + [list(x) for x in register_coco]
    cfg.DATASETS.REGISTER.VOC = list(cfg.DATASETS.REGISTER.VOC) + [list(x) for x in register_voc]
    if voc_class_names:
        cfg.DATASETS.REGISTER.VOC_CLASS_NAMES = voc_class_names.split(",")
    cfg.freeze()
    check_config(cfg, training=training)
    return cfg


def setup_logging(output_dir: str = "") -> logging.Logger:
    """
    retina_plugin's loggers to the console and, on rank 0, to ``output_dir``/log.txt beside
    detectron2's (a WARNING about a dataset's boxes belongs in the run's log).
    """
    return setup_logger(output_dir or None, distributed_rank=comm.get_rank(), name="retina_plugin",
                        abbrev_name="rp")


def setup_run(cfg, args) -> None:
    """
    In each process of a run: detectron2's ``default_setup`` (logging, seeds, config.yaml in
    OUTPUT_DIR), retina_plugin's logging, then the datasets of ``cfg.DATASETS.REGISTER`` and
    the check that MODEL.RETINANET.NUM_CLASSES fits them.
    """
    default_setup(cfg, args)
    setup_logging(cfg.OUTPUT_DIR)
    register_datasets_from_config(cfg)
    check_num_classes(cfg)
