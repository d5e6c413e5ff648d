"""Memory and machine probes for the benchmark (torch-free): resident memory with a
resettable peak, the page size RSS counts in, load average, CPU model and ISA flags."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np

from viewrt.cpuinfo import cpu_flags, cpu_model

# Imported lazily: psutil (optional), resource (not on Windows), onnxruntime (its version).


class Memory:
    """Resident memory of this process: current (psutil or /proc) and a resettable peak
    (/proc/self/clear_refs + VmHWM on Linux; else the lifetime peak from getrusage)."""

    def __init__(self):
        try:
            import psutil

            self._proc = psutil.Process()
        except ModuleNotFoundError:
            self._proc = None
        self.resettable = True
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.resettable = False
        self.peak_kind = (
            "per point (VmHWM reset before each point)"
            if self.resettable
            else "process lifetime peak (getrusage)"
        )

    def rss(self) -> int:
        if self._proc is not None:
            return int(self._proc.memory_info().rss)
        return self._status("VmRSS") or 0

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def reset_peak(self) -> None:
        if self.resettable:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.resettable = False

    def peak(self) -> int:
        if self.resettable:
            hwm = self._status("VmHWM")
            if hwm:
                return hwm
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def machine_info() -> dict:
    """CPU model and ISA flags, cores, memory, library versions."""
    import onnxruntime

    info = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cpu_flags": cpu_flags(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_bytes"] = psutil.virtual_memory().total
    except ModuleNotFoundError:
        pass
    return info


def rss_page_bytes(buffer_bytes: int) -> int:
    """The page size RSS counts a buffer of this size in (2 MiB transparent huge pages where enabled)."""
    small = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    try:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
        huge = int(Path("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return small
    return huge if "[never]" not in mode and buffer_bytes >= huge else small


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
