"""Shared setup of the lever trials: the speed benchmark's models (R50-FPN, random weights)."""
import statistics

from retina_plugin.config import load_config
from retina_plugin.experiments import speed_benchmark as benchmark  # noqa: F401  (used by the trials)
from retina_plugin.utils.timing import median_latency_ms, time_interleaved

__all__ = ["benchmark", "models", "median_ms", "interleaved_medians"]


def models(size, names, config_file="configs/retina_R50.yaml"):
    cfg = load_config(config_file, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    return cfg, benchmark.build_models(cfg, size, names=names)


def median_ms(fn, repeats, warmup=1):
    return median_latency_ms(fn, repeats, warmup=warmup)


def interleaved_medians(runners, repeats, warmup=1):
    """{name: median ms} of ``runners`` timed in interleaved rounds."""
    times, _ = time_interleaved(runners, repeats, warmup=warmup)
    return {name: statistics.median(t) for name, t in times.items()}
