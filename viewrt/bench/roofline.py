"""The roofline of ``viewrt bench`` (torch-free): one peak per precision, and each
backend's achieved rate against the peak of the precision it computes in.

The peak of a precision (fp32, bf16, int8) is the best GEMM rate that any engine present
reaches in the same run (:mod:`viewrt.bench.gemm`: numpy, ONNX Runtime, OpenVINO; torch
through the baselines provider's probe), at a large square size and at the model's MLP
shape, measured before and after the benchmark's points (the better of the two is kept).
A backend that runs above the peak of its precision shows that the peak is too low (some
engine has a faster kernel than every probe): such a figure is a defect of the peak, and
the report flags it instead of printing a percentage above 100%.
"""

from __future__ import annotations

from collections.abc import Callable

import viewrt.bench.gemm as gemm

PRECISIONS = gemm.PRECISIONS  # probed in every run


def peak_precision(precision: str | None) -> str | None:
    """The peak a backend's rate is given against: its GEMMs' precision ("int8/bf16":
    int8 GEMMs, bf16 elsewhere -> "int8"), or None when unknown."""
    if not precision:
        return None
    return precision.split("/")[0]


def probe_shapes(square: int, mlp: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """(M, K, N) of the probes: ``square``^3 and the model's MLP shape (targets x tokens,
    d_model, mlp_mult x d_model)."""
    return [(square, square, square), tuple(int(x) for x in mlp)]


def measure(
    shapes,
    precisions=PRECISIONS,
    threads: int | None = None,
    torch_probe: Callable | None = None,
    reps: int = 5,
) -> dict:
    """Every engine's GEMM rate in each precision at ``shapes``.

    Args:
        shapes: [(M, K, N)].
        precisions: the precisions to probe.
        threads: threads of ONNX Runtime and OpenVINO (None: theirs).
        torch_probe: ``(precision, shapes, reps) -> {"torch MxKxN": GFLOP/s}`` (the
            baselines provider's), or None.
    Returns: {precision: {"gflops": the peak or None, "best": its probe, "runs": {probe:
        GFLOP/s}, "skipped": {probe: why it does not count}}}.
    """
    out = {}
    for p in precisions:
        runs, skipped = gemm.engine_rates(shapes, p, threads, reps)
        if torch_probe is not None:
            runs.update(torch_probe(p, shapes, reps))
        out[p] = _summarize(runs, skipped)
    return out


def _summarize(runs: dict, skipped: dict) -> dict:
    best = max(runs, key=runs.get) if runs else None
    return {
        "gflops": runs[best] if best else None,
        "best": best,
        "runs": dict(runs),
        "skipped": dict(skipped),
    }


def merge(before: dict, after: dict) -> dict:
    """Per precision and probe, the better of two measurements; each precision's
    ``before_gflops`` and ``after_gflops`` are kept (a change says the run was disturbed)."""
    out = {}
    for p in dict.fromkeys([*before, *after]):
        a, b = before.get(p, {}), after.get(p, {})
        runs = dict(a.get("runs", {}))
        for k, v in b.get("runs", {}).items():
            runs[k] = max(v, runs.get(k, 0.0))
        skipped = {**a.get("skipped", {}), **b.get("skipped", {})}
        out[p] = {
            **_summarize(runs, {k: v for k, v in skipped.items() if k not in runs}),
            "before_gflops": a.get("gflops"),
            "after_gflops": b.get("gflops"),
        }
    return out


def rate_against_peak(gflops: float, precision: str | None, peaks: dict) -> tuple:
    """``(fraction of the peak or None, peak precision, defect)``: the fraction is None
    when no peak of that precision was measured or when ``gflops`` exceeds it (``defect``
    True: the peak is too low, the figure is not a result)."""
    p = peak_precision(precision)
    peak = (peaks.get(p) or {}).get("gflops") if p else None
    if not peak:
        return None, p, False
    frac = gflops / peak
    return (None, p, True) if frac > 1.0 else (frac, p, False)
