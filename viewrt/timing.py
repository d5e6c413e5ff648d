"""Timing helpers shared by the benchmark's GEMM probes (numpy, torch, ONNX Runtime, OpenVINO)."""

from __future__ import annotations

import time

import numpy as np

# A probe whose warm-up call shows that ``reps`` runs would take longer than this many
# seconds runs fewer (at least one): an emulated precision (bf16 on a CPU without it) can
# take tens of seconds per large GEMM.
PROBE_BUDGET_S = 10.0


def timed_gflops(fn, flops: float, reps: int = 5, budget_s: float = PROBE_BUDGET_S) -> float:
    """``fn()`` once to warm up, then the median of ``reps`` timed calls (fewer, at least
    one, where ``reps`` would exceed ``budget_s`` seconds), as GFLOP/s (``flops``: the
    operations one call performs, 2 per multiply-add)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    reps = max(1, min(reps, int(budget_s / max(first, 1e-9))))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return round(float(flops) / float(np.median(ts)) / 1e9, 2)


def matmul_gflops(a, b, flops: float, reps: int = 5) -> float:
    """``a @ b``: see :func:`timed_gflops`."""
    return timed_gflops(lambda: a @ b, flops, reps)
