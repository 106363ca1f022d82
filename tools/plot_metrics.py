#!/usr/bin/env python
"""
Draw a training run's curves from the metrics.json detectron2 writes into OUTPUT_DIR:
losses (total, classification, box), learning rate, and evaluation AP / AP50 when present.

    python tools/plot_metrics.py output/demo/metrics.json --output output/demo/metrics.png
"""
import argparse
import json
import math
import os
import sys
from typing import Dict, List

import matplotlib

from retina_plugin.training.metrics_json import latest_records

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LOSS_KEYS = ("total_loss", "loss_cls", "loss_box_reg")
AP_KEYS = ("bbox/AP", "bbox/AP50", "bbox/AP75")


def read_metrics(path: str) -> List[Dict]:
    """
    One dict per line, as detectron2's JSONWriter writes them. Errors name the file and line.
    Iterations logged twice (a run killed and resumed from an earlier checkpoint) keep only
    their last occurrence.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such metrics file (look in the run's OUTPUT_DIR)")
    records = []
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                if not line.endswith("\n"):
                    # The last line of a run killed while writing it.
                    print(f"plot_metrics: ignoring the cut-off last line {line_number} of {path}",
                          file=sys.stderr)
                    continue
                raise ValueError(f"{path}:{line_number}: not a JSON object ({e})") from e
            if not isinstance(record, dict) or "iteration" not in record:
                raise ValueError(f"{path}:{line_number}: expected a dict with an 'iteration'")
            records.append(record)
    records = latest_records(records)
    if not any(k in r for r in records for k in LOSS_KEYS):
        raise ValueError(f"{path}: no training losses ({', '.join(LOSS_KEYS)}) in any line")
    return records


def series(records: List[Dict], key: str):
    points = [
        (r["iteration"], r[key])
        for r in records
        if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])
    ]
    return [p[0] for p in points], [p[1] for p in points]


def plot_metrics(records: List[Dict], output: str, title: str = ""):
    """Losses, learning rate and (if any) AP against iteration, saved to ``output``; returns the Figure."""
    has_eval = any(k in r for r in records for k in AP_KEYS)
    num_panels = 3 if has_eval else 2
    fig, axes = plt.subplots(1, num_panels, figsize=(5 * num_panels, 4))
    for key in LOSS_KEYS:
        axes[0].plot(*series(records, key), label=key)
    axes[0].set(title="training losses", xlabel="iteration", ylabel="loss")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    axes[1].plot(*series(records, "lr"), color="tab:purple")
    axes[1].set(title="learning rate", xlabel="iteration", ylabel="lr")
    axes[1].grid(alpha=0.3)
    if has_eval:
        for key in AP_KEYS:
            its, values = series(records, key)
            if its:
                axes[2].plot(its, values, marker="o", label=key)
        axes[2].set(title="evaluation (COCO box AP)", xlabel="iteration", ylabel="AP (%)")
        axes[2].legend()
        axes[2].grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("metrics", help="metrics.json of a training run")
    parser.add_argument("--output", help="PNG to write (default: metrics.png beside the input)")
    args = parser.parse_args(argv)
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.metrics)), "metrics.png")
    try:
        records = read_metrics(args.metrics)
    except (OSError, ValueError) as e:
        print(f"plot_metrics: {e}", file=sys.stderr)
        return 2
    plot_metrics(records, output, title=args.metrics)
    print(f"Wrote {output}")
    evaluations = [r for r in records if "bbox/AP" in r]
    if evaluations:
        last = evaluations[-1]
        print(
            f"Last evaluation (iteration {last['iteration']}): "
            + ", ".join(f"{k.split('/')[1]} {last[k]:.1f}" for k in AP_KEYS if k in last)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
