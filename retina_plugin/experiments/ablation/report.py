"""
Results of an ablation sweep: mean and sample std over seeds per setting, the markdown table,
the plot, and results.json / results.md / results.png.
"""
import ast
import json
import math
import os
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple

from .runner import METRICS, format_duration
from .settings import Setting, short_key

__all__ = ["TABLE_METRICS", "summarize", "results_markdown", "plot_results", "write_results"]

# Tabulated of the METRICS kept per run.
TABLE_METRICS = ("AP", "AP50", "AP75", "APs")


def _mean_std(values: List[float]) -> Tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    # Sample standard deviation over seeds.
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(settings: Sequence[Setting], results: Dict[str, List[Dict]]) -> List[Dict]:
    """
    Per setting: overrides, labels, per-seed metrics, mean and std of each metric over the
    seeds that finished, number of diverged runs, total seconds.
    """
    rows = []
    for setting in settings:
        runs = results.get(setting.name, [])
        finished = [r for r in runs if r["status"] == "finished"]
        stats = {m: _mean_std([r["metrics"][m] for r in finished]) for m in METRICS}
        # Runs recorded before result.json held the loss have none: then no mean of a part.
        with_loss = finished and all("train_loss" in r for r in finished)
        stats["train_loss"] = _mean_std([r["train_loss"] for r in finished] if with_loss else [])
        rows.append(
            {
                "name": setting.name,
                "variant": setting.variant,
                "labels": setting.labels,
                "overrides": [list(p) for p in setting.overrides],
                "runs": runs,
                "num_runs": len(runs),
                "num_diverged": len(runs) - len(finished),
                "mean": {m: s[0] for m, s in stats.items()},
                "std": {m: s[1] for m, s in stats.items()},
                "seconds": sum(r.get("seconds", 0.0) for r in runs),
            }
        )
    return rows


def _no_value(row: Dict, not_run: str) -> str:
    """What stands in for a setting's missing AP: why there is none."""
    if row["num_runs"] > row["num_diverged"]:
        # Finished, but COCOEvaluator had no detection to score.
        return "no detections"
    return "diverged" if row["num_diverged"] else not_run


def _cell(row: Dict, metric: str, digits: int = 1, unrecorded: str = "") -> str:
    """``unrecorded``: what finished runs that did not record ``metric`` show (e.g. runs from
    before result.json held it), rather than the reason an AP is missing."""
    mean, std = row["mean"].get(metric, float("nan")), row["std"].get(metric, float("nan"))
    if math.isnan(mean):
        if unrecorded and row["num_runs"] > row["num_diverged"]:
            return unrecorded
        return _no_value(row, "–")
    if row["num_runs"] - row["num_diverged"] > 1:
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def results_markdown(rows: List[Dict], header: str = "") -> str:
    grid_keys = list(rows[0]["labels"]) if rows else []
    with_variants = any(r["variant"] != "base" for r in rows)
    columns = (["variant"] if with_variants else []) + [short_key(k) for k in grid_keys]
    if not columns:
        columns = ["setting"]
    # The final training loss, where the runs recorded it.
    with_loss = any(not math.isnan(r["mean"].get("train_loss", float("nan"))) for r in rows)
    columns += list(TABLE_METRICS) + (["train loss"] if with_loss else []) + ["runs", "time"]
    lines = [header] if header else []
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    best = max((r for r in rows if not math.isnan(r["mean"]["AP"])), key=lambda r: r["mean"]["AP"], default=None)
    for row in rows:
        cells = ([row["variant"]] if with_variants else []) + [row["labels"][k] for k in grid_keys]
        if not (with_variants or grid_keys):
            cells = [row["name"]]
        metrics = [_cell(row, m) for m in TABLE_METRICS]
        if row is best:
            metrics[0] = f"**{metrics[0]}**"
        if with_loss:
            metrics.append(_cell(row, "train_loss", digits=2, unrecorded="not recorded"))
        runs = f"{row['num_runs']}" + (f" ({row['num_diverged']} diverged)" if row["num_diverged"] else "")
        cells += metrics + [runs, format_duration(row["seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    if any(r["variant"] != "base" for r in rows):
        lines.append("")
        for row in rows:
            if row["variant"] != "base" and not row["labels"]:
                lines.append(f"- `{row['variant']}`: " + " ".join(f"`{k}={v}`" for k, v in row["overrides"]))
    lines.append("")
    lines.append("COCO box AP on DATASETS.TEST; mean ± sample std over seeds (finished runs only); **best AP** in bold."
                 + (" Train loss: total_loss at the end, median of the last 20 iterations." if with_loss else ""))
    return "\n".join(lines) + "\n"


def _is_number(text: str) -> bool:
    try:
        float(ast.literal_eval(text))
        return True
    except (ValueError, SyntaxError, TypeError):
        return False


def plot_results(rows: List[Dict], path: str, title: str = ""):
    """
    AP against the first grid key, one line per value of the other keys (error bars: std over
    seeds); a bar chart when there is no numeric grid key (variants, or non-numeric values).
    Returns the matplotlib Figure (saved to ``path``, closed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid_keys = list(rows[0]["labels"]) if rows else []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    numeric = grid_keys and all(_is_number(r["labels"][grid_keys[0]]) for r in rows)
    if numeric:
        first = grid_keys[0]
        lines = OrderedDict()
        for row in rows:
            rest = [row["variant"]] if row["variant"] != "base" else []
            rest += [f"{short_key(k)}={row['labels'][k]}" for k in grid_keys[1:]]
            lines.setdefault(" ".join(rest), []).append(row)
        for label, line_rows in lines.items():
            xs = [float(ast.literal_eval(r["labels"][first])) for r in line_rows]
            ys = [r["mean"]["AP"] for r in line_rows]
            errs = [r["std"]["AP"] for r in line_rows]
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label or None)
            for x, y, r in zip(xs, ys, line_rows):
                if r["num_diverged"] and math.isnan(y):
                    ax.annotate("diverged", (x, 0), ha="center")
        ax.set_xlabel(first)
        if any(lines):
            ax.legend(fontsize=8)
    else:
        names = [r["name"] for r in rows]
        means = [0.0 if math.isnan(r["mean"]["AP"]) else r["mean"]["AP"] for r in rows]
        errs = [0.0 if math.isnan(r["std"]["AP"]) else r["std"]["AP"] for r in rows]
        bars = ax.bar(range(len(rows)), means, yerr=errs, capsize=3, color="tab:blue")
        for bar, r in zip(bars, rows):
            text = f"{r['mean']['AP']:.1f}" if not math.isnan(r["mean"]["AP"]) else _no_value(r, "not run")
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("COCO box AP")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def write_results(rows: List[Dict], output_dir: str, info: Dict) -> Dict[str, str]:
    """
    results.json (everything), results.md (the table) and results.png (the plot) in
    ``output_dir``; returns their paths.
    """
    paths = {
        "json": os.path.join(output_dir, "results.json"),
        "md": os.path.join(output_dir, "results.md"),
        "png": os.path.join(output_dir, "results.png"),
    }
    with open(paths["json"], "w") as f:
        json.dump({**info, "settings": rows}, f, indent=1)
    header = f"# Ablation of `{info['config_file']}`\n\n```\n{info['command']}\n```\n"
    with open(paths["md"], "w") as f:
        f.write(results_markdown(rows, header))
        if info.get("verdict"):
            f.write(f"\n{info['verdict']}\n")
    plot_results(rows, paths["png"], title=os.path.basename(info["config_file"]))
    return paths


