"""
Running an ablation sweep: each (setting, seed) is one train + COCOEvaluator run with the
project's :class:`~retina_plugin.training.trainer.Trainer`, in a subprocess
(``python -m retina_plugin.experiments.ablation --worker``), in its own folder
``OUTPUT/runs/<setting>/seed<k>/`` that ends with a ``result.json``. A run whose
``result.json`` exists is skipped, so a killed sweep resumes where it stopped.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Dict, List, Optional, Sequence, Tuple

from .settings import AblationError, Setting

__all__ = ["METRICS", "RESULT_FILE", "run_one", "run_sweep", "worker", "format_duration"]

# COCOEvaluator's box metrics kept per run.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
RESULT_FILE = "result.json"


def run_one(
    config_file: str,
    opts: Sequence[str],
    output_dir: str,
    seed: int,
    num_gpus: int = 1,
    log_file: Optional[str] = None,
    threads: Optional[int] = None,
) -> Dict:
    """
    Train + evaluate one (setting, seed) in a subprocess; returns its result.json content.
    A subprocess keeps runs independent (memory, registries, global seeds) and lets a sweep
    survive a run that crashes. ``threads`` caps its CPU threads (OMP_NUM_THREADS).
    """
    os.makedirs(output_dir, exist_ok=True)
    command = [
        sys.executable, "-m", "retina_plugin.experiments.ablation", "--worker",
        "--config-file", config_file, "--num-gpus", str(num_gpus),
        *opts, "SEED", str(seed), "OUTPUT_DIR", output_dir,
    ]
    log_file = log_file or os.path.join(output_dir, "stdout.log")
    # The subprocess imports this very package, also where it is not pip-installed.
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    with open(log_file, "w") as log:
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    result_path = os.path.join(output_dir, RESULT_FILE)
    if proc.returncode != 0 or not os.path.isfile(result_path):
        with open(log_file) as f:
            tail = "".join(f.readlines()[-25:])
        raise RuntimeError(
            f"run in {output_dir} failed (exit code {proc.returncode}); log {log_file}:\n{tail}"
        )
    with open(result_path) as f:
        result = json.load(f)
    result.setdefault("seconds", time.perf_counter() - start)
    return result


def _train_and_evaluate(args) -> None:
    """
    One run, in each process that ``launch`` starts: train with the project's Trainer (its
    final evaluation is COCOEvaluator on DATASETS.TEST), write result.json. A run whose loss
    becomes NaN/inf (e.g. no prior init) is a result too: "diverged".
    """
    from detectron2.utils import comm

    from ...entry_points.defaults import setup_config, setup_process, setup_run
    from ...training.trainer import Trainer

    setup_process()
    cfg = setup_config(args.config_file, args.opts)
    setup_run(cfg, argparse.Namespace(config_file=args.config_file, eval_only=False, opts=args.opts))
    # The opts without SEED / OUTPUT_DIR: what identifies the setting when resuming.
    result = {"status": "finished", "seed": cfg.SEED, "opts": list(args.opts[:-4])}
    start = time.perf_counter()
    try:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=True)
        trainer.train()
        # DefaultTrainer's EvalHook evaluates after the last iteration and keeps the results.
        evaluation = getattr(trainer, "_last_eval_results", None) or Trainer.test(cfg, trainer.model)
        evaluation = evaluation or {}
        # DefaultTrainer.test drops the dataset level when there is one test dataset.
        bbox = evaluation.get("bbox") or evaluation.get(cfg.DATASETS.TEST[0], {}).get("bbox", {})
        result["metrics"] = {m: float(bbox.get(m, float("nan"))) for m in METRICS}
        result["iterations"] = cfg.SOLVER.MAX_ITER
        # The loss at the end tells underfitting (high) from overfitting (low, with a low AP):
        # the median of the last 20 iterations, as detectron2 logs it.
        if "total_loss" in trainer.storage.histories():
            result["train_loss"] = float(trainer.storage.history("total_loss").median(20))
    except FloatingPointError as e:
        # detectron2's trainer stops on a non-finite loss; record where.
        match = re.search(r"iteration=(\d+)", str(e))
        result["status"] = "diverged"
        result["diverged_at"] = int(match.group(1)) if match else None
        result["metrics"] = {m: float("nan") for m in METRICS}
    result["seconds"] = time.perf_counter() - start
    if comm.is_main_process():
        with open(os.path.join(cfg.OUTPUT_DIR, RESULT_FILE), "w") as f:
            json.dump(result, f, indent=1)


def worker(args) -> None:
    from detectron2.engine import launch

    launch(_train_and_evaluate, args.num_gpus, args=(args,))


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def run_sweep(
    config_file: str,
    settings: Sequence[Setting],
    output_dir: str,
    seeds: Sequence[int] = (0,),
    opts: Sequence[str] = (),
    num_gpus: int = 1,
    stream=None,
    train: bool = True,
    jobs: int = 1,
) -> Dict[str, List[Dict]]:
    """
    Every (setting, seed), skipping runs that already have a result.json; a progress line with
    an ETA after each. ``jobs`` runs go at once (a GPU or a many-core machine has room for
    several small runs); each then gets ``cpu_count // jobs`` threads. A failed run lets the
    runs in flight finish, starts no other, then raises. With ``train=False`` only the
    finished runs are collected. Returns {setting name: [result per seed]}.
    """
    stream = stream or sys.stdout
    jobs_list = [(s, seed) for s in settings for seed in seeds]
    found: Dict[Tuple[str, int], Dict] = {}
    pending = []
    for number, (setting, seed) in enumerate(jobs_list, 1):
        run_dir = os.path.join(output_dir, "runs", setting.folder, f"seed{seed}")
        run_opts = list(opts) + setting.opts
        result_path = os.path.join(run_dir, RESULT_FILE)
        if os.path.isfile(result_path):
            with open(result_path) as f:
                result = json.load(f)
            if result.get("opts") != run_opts:
                raise AblationError(
                    f"{result_path} was made with other overrides ({result.get('opts')}) than "
                    f"setting '{setting.name}' now ({run_opts}); use another --output"
                )
            found[(setting.name, seed)] = result
            print(f"[{number}/{len(jobs_list)}] {setting.name} seed {seed}: done before, skipped", file=stream, flush=True)
        elif not train:
            print(f"[{number}/{len(jobs_list)}] {setting.name} seed {seed}: not run yet", file=stream, flush=True)
        else:
            pending.append((setting, seed, run_opts, run_dir))

    durations: List[float] = []
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None

    def report(setting: Setting, seed: int, result: Dict) -> None:
        found[(setting.name, seed)] = result
        durations.append(result["seconds"])
        remaining = len(jobs_list) - len(found)
        eta = math.ceil(remaining / jobs) * sum(durations) / len(durations)
        outcome = (
            f"AP {result['metrics']['AP']:.1f}" if result["status"] == "finished"
            else f"diverged at iteration {result.get('diverged_at')}"
        )
        print(
            f"[{len(found)}/{len(jobs_list)}] {setting.name} seed {seed}: {outcome} in "
            f"{format_duration(result['seconds'])}; ETA {format_duration(eta)}",
            file=stream, flush=True,
        )

    if jobs <= 1:
        for setting, seed, run_opts, run_dir in pending:
            report(setting, seed, run_one(config_file, run_opts, run_dir, seed, num_gpus=num_gpus))
    elif pending:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {
                pool.submit(run_one, config_file, run_opts, run_dir, seed, num_gpus=num_gpus, threads=threads):
                (setting, seed)
                for setting, seed, run_opts, run_dir in pending
            }
            try:
                for future in as_completed(futures):
                    report(*futures[future], future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    results: Dict[str, List[Dict]] = OrderedDict((s.name, []) for s in settings)
    for setting, seed in jobs_list:
        if (setting.name, seed) in found:
            results[setting.name].append(found[(setting.name, seed)])
    return results


