#!/usr/bin/env python
"""
Train and evaluate FocalRetinaNet with detectron2's standard command line:

    python train_net.py --config-file configs/retina_R50.yaml --num-gpus 8
    python train_net.py --config-file configs/retina_R50.yaml --eval-only MODEL.WEIGHTS model.pth
    python train_net.py --config-file configs/demo_R18_cpu.yaml          # CPU, built-in data
    python train_net.py --config-file configs/demo_R18_cpu.yaml --eval-only --engine engines/demo_int8

Custom datasets without Python (see retina_plugin/data/register.py):

    python train_net.py --config-file configs/retina_R50.yaml \
        --register-coco my_train data/train.json data/train_images \
        --register-coco my_val data/val.json data/val_images \
        DATASETS.TRAIN "('my_train',)" DATASETS.TEST "('my_val',)" MODEL.RETINANET.NUM_CLASSES 3
"""
import logging

from detectron2.engine import default_argument_parser, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import retina_plugin  # noqa: F401  (registers FocalRetinaNet, its parts and the datasets)
from retina_plugin.deploy import build_engine_model
from retina_plugin.training.checkpoint import AtomicDetectionCheckpointer
from retina_plugin.entry_points.defaults import setup_config, setup_process, setup_run
from retina_plugin.training.trainer import Trainer


def setup(args):
    cfg = setup_config(
        args.config_file, args.opts, args.register_coco or (), args.register_voc or (),
        args.voc_class_names, training=not args.eval_only,
    )
    setup_run(cfg, args)
    return cfg


def main(args):
    setup_process()
    cfg = setup(args)
    if args.engine:
        if not args.eval_only:
            raise SystemExit("train_net.py: --engine evaluates an engine; it needs --eval-only")
        # COCOEvaluator's AP of the engine, behind the model's own pre- and post-processing.
        return Trainer.test(cfg, build_engine_model(cfg, args.engine))
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        if not cfg.MODEL.WEIGHTS and not (args.resume and checkpointer.has_checkpoint()):
            raise ValueError(
                "--eval-only with MODEL.WEIGHTS empty would evaluate an untrained model: "
                "give MODEL.WEIGHTS path/to/model_final.pth (or --resume with a checkpoint "
                f"in OUTPUT_DIR {cfg.OUTPUT_DIR!r})"
            )
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, results)
        return results

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    if comm.is_main_process():
        logging.getLogger("detectron2").info(f"Outputs (model_final.pth, metrics.json) in {cfg.OUTPUT_DIR}")
    return results


def argument_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--register-coco", nargs=3, action="append", metavar=("NAME", "JSON_FILE", "IMAGE_ROOT"),
        help="register a COCO-format json dataset (repeatable); same as DATASETS.REGISTER.COCO",
    )
    parser.add_argument(
        "--register-voc", nargs=3, action="append", metavar=("NAME", "DIRNAME", "SPLIT"),
        help="register a Pascal VOC-style folder (repeatable); same as DATASETS.REGISTER.VOC",
    )
    parser.add_argument(
        "--engine", metavar="DIR",
        help="with --eval-only: evaluate this deployment engine (tools/export_model.py) instead of MODEL.WEIGHTS",
    )
    parser.add_argument(
        "--voc-class-names", default="", metavar="A,B,C",
        help="comma-separated class names of the VOC datasets (DATASETS.REGISTER.VOC_CLASS_NAMES)",
    )
    return parser


if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
