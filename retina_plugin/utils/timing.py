"""
Timing and memory measurement for the benchmarks (tools/benchmark.py, tools/export_model.py,
tools/predict.py): interleaved repeats, so that load from other jobs hits every candidate
alike; page faults per call; peak resident memory; CUDA peaks.
"""
import resource
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch

__all__ = [
    "synchronize",
    "time_interleaved",
    "median_latency_ms",
    "p90",
    "reset_peak_rss",
    "status_mb",
    "cuda_peak_mb",
]


def synchronize(device="cpu") -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(
    runners: Dict[str, Callable[[], object]], repeats: int, device="cpu", warmup: int = 1
) -> Tuple[Dict[str, List[float]], Dict[str, float]]:
    """
    ``warmup`` calls each, then ``repeats`` rounds over all runners. Returns ({name: [ms, ...]},
    {name: minor page faults per call}): the faults are the fresh memory pages the call touched,
    which the kernel zeroes (glibc hands allocations above 32 MB back to it on free).
    """
    for run in runners.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in runners}
    faults = {name: 0 for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            synchronize(device)
            faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            run()
            synchronize(device)
            times[name].append((time.perf_counter() - start) * 1000)
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    return times, {name: count / max(repeats, 1) for name, count in faults.items()}


def median_latency_ms(run: Callable[[], object], repeats: int, device="cpu", warmup: int = 1) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls after ``warmup``, in ms."""
    return statistics.median(time_interleaved({"run": run}, repeats, device, warmup)[0]["run"])


def p90(values: List[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM, ...) in MB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; returns that RSS in MB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_mb("VmRSS")


def cuda_peak_mb(run: Callable[[], object]) -> float:
    """CUDA memory (MB) that one call of ``run`` allocates at its peak above what was there."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20
