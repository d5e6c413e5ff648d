"""Timing helpers shared by the benchmark's GEMM probes (numpy, torch, ONNX Runtime, OpenVINO)."""

from __future__ import annotations

import time

import numpy as np


def matmul_gflops(a, b, flops: float, reps: int = 5) -> float:
    """``a @ b`` once to warm up, then the median of ``reps`` timed runs, as GFLOP/s
    (``flops``: the product's floating-point operations, 2 per multiply-add)."""
    a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return round(flops / float(np.median(ts)) / 1e9, 2)


def timed_gflops(fn, flops: float, reps: int = 5) -> float:
    """``fn()`` once to warm up, then the median of ``reps`` timed calls, as GFLOP/s
    (``flops``: the operations one call performs, 2 per multiply-add)."""
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return round(float(flops) / float(np.median(ts)) / 1e9, 2)
