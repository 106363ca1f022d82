"""Shared setup of the lever trials: tools/benchmark.py's models (R50-FPN, random weights)."""
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tools")]

import benchmark  # noqa: E402  (tools/benchmark.py)


def models(size, names):
    cfg = benchmark.load_cfg(benchmark.parse_args(["--size", str(size[0]), str(size[1])]))
    return cfg, benchmark.build_models(cfg, size, names=names)


def median_ms(fn, repeats, warmup=1):
    return statistics.median(benchmark.time_interleaved({"run": fn}, repeats, warmup=warmup)[0]["run"])


def interleaved_medians(runners, repeats, warmup=1):
    """{name: median ms} of ``runners`` timed in rounds by tools/benchmark.py."""
    times, _ = benchmark.time_interleaved(runners, repeats, warmup=warmup)
    return {name: statistics.median(t) for name, t in times.items()}
