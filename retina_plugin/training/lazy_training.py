"""
detectron2's lazy-config training loop for FocalRetinaNet (``do_train`` / ``do_test``, as in
detectron2's ``tools/lazyconfig_train_net.py``), used by ``tools/lazyconfig_train_net.py``.
"""
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.engine import create_ddp_model, hooks
from detectron2.engine.defaults import default_writers
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from .mixed_precision import build_step_trainer

__all__ = ["do_train", "do_test"]


def do_test(cfg, model):
    """
    Evaluate ``model`` on ``cfg.dataloader.test`` with ``cfg.dataloader.evaluator``.
    """
    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    print_csv_format(results)
    return results


def do_train(cfg, resume: bool = False):
    """
    Instantiate model, optimizer, train loader and lr schedule from ``cfg``, train for
    ``cfg.train.max_iter`` iterations with periodic checkpoints, evaluation and logging in
    ``cfg.train.output_dir``.
    """
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **cfg.train.ddp)
    # train.amp.precision as SOLVER.AMP.PRECISION: "auto", "bfloat16" or "float16".
    trainer = build_step_trainer(model, train_loader, optimizer, cfg.train.device, cfg.train.amp.enabled,
                                 cfg.train.amp.get("precision", "auto"), key="train.amp.precision")
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
        hooks.PeriodicWriter(
            default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period
        ) if comm.is_main_process() else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)
    return trainer
