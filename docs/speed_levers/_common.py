"""Shared setup of the lever trials: tools/benchmark.py's models (R50-FPN, random weights)."""
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tools")]

import benchmark  # noqa: E402  (tools/benchmark.py)


def models(size, names):
    cfg = benchmark.load_cfg(benchmark.parse_args(["--size", str(size[0]), str(size[1])]))
    return cfg, benchmark.build_models(cfg, size, names=names)


def median_ms(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
