"""
Train a config under several named settings (lists of config overrides) and seeds, evaluate
each run with COCOEvaluator, and summarize: mean and std of AP, AP50, AP75, APs per setting,
as a markdown table and a bar plot. ``tools/compare_options.py`` is the command line.
"""
import json
import os
from typing import Dict, List, Sequence

import numpy as np
from detectron2.config import get_cfg

from .config import add_retina_config
from .data import check_num_classes, register_datasets_from_config

__all__ = ["METRICS", "parse_setting", "run_one", "summarize", "markdown_table", "bar_plot"]

METRICS = ("AP", "AP50", "AP75", "APs")


def parse_setting(text: str):
    """
    "name=KEY VALUE KEY VALUE ..." -> (name, [KEY, VALUE, ...]); "name" alone: no overrides.
    """
    name, _, opts = text.partition("=")
    opts = opts.split()
    if not name or len(opts) % 2:
        raise ValueError(f"setting {text!r}: expected 'name=KEY VALUE [KEY VALUE ...]'")
    return name, opts


def run_one(config_file: str, opts: Sequence[str], seed: int, output_dir: str) -> Dict[str, float]:
    """
    Train ``config_file`` + ``opts`` with SEED ``seed`` into ``output_dir``, evaluate on
    DATASETS.TEST[0] after the last iteration; returns its COCO box metrics
    ({"AP": ..., "AP50": ..., ...}).
    """
    from .trainer import Trainer  # noqa: imports detectron2.engine, heavy

    cfg = get_cfg()
    add_retina_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.SEED = seed
    cfg.OUTPUT_DIR = output_dir
    cfg.TEST.EVAL_PERIOD = 0  # one evaluation, after the last iteration
    cfg.freeze()
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    register_datasets_from_config(cfg)
    check_num_classes(cfg)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    # DefaultTrainer.train() returns the results only with TEST.EXPECTED_RESULTS set; its
    # evaluation hook keeps the last ones here.
    results = getattr(trainer, "_last_eval_results", None)
    if not results:
        raise RuntimeError(f"{output_dir}: the run ended without evaluation results")
    # DefaultTrainer.test() drops the dataset level when there is one test dataset.
    results = results.get(cfg.DATASETS.TEST[0], results)
    return dict(results["bbox"])


def summarize(runs: List[Dict]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """
    Args:
        runs: one dict per run: {"setting": str, "seed": int, "metrics": {"AP": ..., ...}}.
    Returns:
        {setting: {metric: {"mean", "std", "n"}}} in the order settings first appear; std is
        the sample standard deviation (0 for one run).
    """
    by_setting: Dict[str, List[Dict[str, float]]] = {}
    for run in runs:
        by_setting.setdefault(run["setting"], []).append(run["metrics"])
    summary = {}
    for setting, metrics in by_setting.items():
        summary[setting] = {}
        for key in METRICS:
            values = np.array([m[key] for m in metrics], dtype=float)
            std = values.std(ddof=1) if len(values) > 1 else 0.0
            summary[setting][key] = {"mean": float(values.mean()), "std": float(std), "n": len(values)}
    return summary


def markdown_table(summary, baseline: str = None) -> str:
    """
    One row per setting: mean ± std of each metric, the number of seeds, and (with
    ``baseline``) the difference of mean AP to that setting.
    """
    header = ["setting", *METRICS, "seeds"] + (["ΔAP"] if baseline else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for setting, metrics in summary.items():
        cells = [setting] + [f"{metrics[k]['mean']:.1f} ± {metrics[k]['std']:.1f}" for k in METRICS]
        cells.append(str(metrics["AP"]["n"]))
        if baseline:
            delta = metrics["AP"]["mean"] - summary[baseline]["AP"]["mean"]
            cells.append(f"{delta:+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_plot(summary, path: str):
    """
    Grouped bars (one group per metric, one bar per setting) with std error bars, to ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(summary)
    width = 0.8 / len(settings)
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(METRICS), 4))
    for i, setting in enumerate(settings):
        xs = np.arange(len(METRICS)) + (i - (len(settings) - 1) / 2) * width
        ax.bar(
            xs,
            [summary[setting][k]["mean"] for k in METRICS],
            width,
            yerr=[summary[setting][k]["std"] for k in METRICS],
            capsize=3,
            label=setting,
        )
    ax.set_xticks(np.arange(len(METRICS)))
    ax.set_xticklabels(METRICS)
    ax.set_ylabel("COCO box metric (mean ± std over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_runs(runs: List[Dict], path: str):
    with open(path, "w") as f:
        json.dump(runs, f, indent=1)
