#!/usr/bin/env python
"""
Train / evaluate FocalRetinaNet from a LazyConfig (configs/*.py) with detectron2's lazy-config
training loop and command line (overrides are key=value):

    python tools/lazyconfig_train_net.py --config-file configs/demo_R18_cpu.py
    python tools/lazyconfig_train_net.py --config-file configs/retina_R50.py --num-gpus 8
    python tools/lazyconfig_train_net.py --config-file configs/demo_R18_cpu.py --eval-only \\
        train.init_checkpoint=output/demo_lazy/model_final.pth
"""
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import default_argument_parser, default_setup, launch

import retina_plugin  # noqa: F401  (registers FocalRetinaNet, its parts and the datasets)
from retina_plugin.training.lazy_training import do_test, do_train


def main(args):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    default_setup(cfg, args)
    if args.eval_only:
        model = instantiate(cfg.model).to(cfg.train.device).eval()
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    do_train(cfg, resume=args.resume)
    return None


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(
        main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
        dist_url=args.dist_url, args=(args,),
    )
