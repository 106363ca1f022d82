"""
glibc malloc settings for the project's own processes (train_net.py, demo.py, tools/predict.py,
the benchmarks): keep freed memory instead of handing it back to the kernel.

By default glibc serves allocations above 32 MB with mmap and returns them to the kernel on
free; the next call's allocation then gets fresh pages, which the kernel zeroes on first touch
(a page fault each). A detector allocates such blocks for every activation map of every
call: docs/speed.md measures a fifth of detectron2's CPU inference time in those faults.
``mallopt(M_MMAP_MAX, 0)`` and a high ``M_TRIM_THRESHOLD`` keep the memory in the process.

A library must not change the allocator of the process that imports it: only entry points
call :func:`configure_allocator`. ``RETINA_PLUGIN_ALLOCATOR=default`` (or MALLOC_MMAP_MAX_ /
MALLOC_TRIM_THRESHOLD_ set in the environment, which glibc reads itself) leaves it alone.
"""
import ctypes
import ctypes.util
import os

__all__ = ["ALLOCATOR_ENV", "configure_allocator", "allocator_setting"]

ALLOCATOR_ENV = "RETINA_PLUGIN_ALLOCATOR"
# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Freed memory kept up to this (mallopt takes an int).
TRIM_THRESHOLD = 2**31 - 1

_state = {"setting": None}


def configure_allocator() -> str:
    """
    Keep freed memory in this process (glibc only), unless opted out; returns what is in
    effect, as :func:`allocator_setting`. Forked processes (data-loader workers) inherit it.
    """
    if _state["setting"] is not None:
        return _state["setting"]
    if os.environ.get(ALLOCATOR_ENV, "") == "default":
        setting = f"glibc default ({ALLOCATOR_ENV}=default)"
    elif any(k in os.environ for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")):
        setting = "from the environment: " + " ".join(
            f"{k}={os.environ[k]}" for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_") if k in os.environ)
    else:
        setting = _mallopt_keep_freed_memory()
    _state["setting"] = setting
    return setting


def _mallopt_keep_freed_memory() -> str:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return "glibc default (no mallopt in this C library)"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if not (mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "glibc default (mallopt refused)"
    return f"keep freed memory (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD={TRIM_THRESHOLD})"


def allocator_setting() -> str:
    """What allocator setting this process runs with, for benchmark tables."""
    if _state["setting"] is not None:
        return _state["setting"]
    names = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    settings = [f"{n}={os.environ[n]}" for n in names if n in os.environ]
    return " ".join(settings) if settings else "glibc default"
