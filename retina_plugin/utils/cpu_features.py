"""
What the CPU computes natively, read off /proc/cpuinfo: bfloat16 is fast only where the CPU has
AMX or AVX512-BF16 (oneDNN then uses them); elsewhere torch emulates it, slower than float32.
"""
from typing import Iterable, List, Optional, Set

__all__ = ["NATIVE_BFLOAT16_CPU_FLAGS", "cpu_flags", "native_bfloat16_flags"]

# /proc/cpuinfo flags of CPUs that compute in bfloat16 natively.
NATIVE_BFLOAT16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> Set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bfloat16_flags(flags: Optional[Iterable[str]] = None) -> List[str]:
    """The flags of :data:`NATIVE_BFLOAT16_CPU_FLAGS` that ``flags`` (default: this CPU's) has."""
    flags = cpu_flags() if flags is None else set(flags)
    return sorted(set(NATIVE_BFLOAT16_CPU_FLAGS) & flags)
