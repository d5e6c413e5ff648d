"""The CPU's model name and ISA flags (Linux /proc/cpuinfo), for every report that names its
machine: the bench, the OpenVINO profiler. A leaf module: nothing of viewrt, no third party."""

from __future__ import annotations

import platform
from pathlib import Path

# CPU features that decide which precisions run fast (x86 /proc/cpuinfo flag names).
ISA_FLAGS = (
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "avx512f",
    "avx2",
    "fma",
)


def proc_cpu_flags() -> set[str]:
    """Every flag the CPU reports (Linux /proc/cpuinfo; an empty set elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_flags() -> list[str]:
    """The ISA flags of :data:`ISA_FLAGS` this CPU reports."""
    have = proc_cpu_flags()
    return [f for f in ISA_FLAGS if f in have]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
