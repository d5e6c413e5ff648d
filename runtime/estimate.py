"""The memory estimate as the runtime's process sees it: the contract's one estimate
(:mod:`viewrt.contract.estimate`) with ONNX Runtime's libraries counted in the process's
resident memory, and the one-line estimate at the start of infer, bench and build."""

from __future__ import annotations

import viewrt.contract.estimate as _contract
from viewrt.contract.estimate import MIB, PRECISIONS, format_estimate
from viewrt.contract.manifest import load_manifest
from viewrt.errors import ViewrtError

__all__ = ["estimate", "format_estimate", "estimate_line", "echo_estimate"]


def estimate(manifest, *args, **kwargs) -> dict:
    """:func:`viewrt.contract.estimate.estimate` (same arguments and result), after importing
    onnxruntime so that its libraries count in this process's resident memory."""
    import onnxruntime  # noqa: F401 - lazy (heavy): its libraries are part of the process

    return _contract.estimate(manifest, *args, **kwargs)


def estimate_line(
    export_dir,
    max_views: int | None = None,
    targets: int = 8,
    device: str = "cpu",
    cache_dtype: str | None = None,
) -> str:
    """One line for the start of infer, bench and build: the export's own precision on the
    given device ("cpu" or "gpu"), the KV cache in ``cache_dtype`` where the backend keeps
    it in another dtype than the export's (named on the line); empty when the folder
    cannot be read (the command's own checks then report the problem)."""
    try:
        m = load_manifest(export_dir, verify=False)
        p = m.precision if m.precision in PRECISIONS else None
        est = estimate(m, max_views, p, targets, cache_dtype=cache_dtype)
    except ViewrtError:
        return ""
    dev = "gpu" if device not in ("cpu",) and not str(device).startswith("cpu") else "cpu"
    r = next(x for x in est["rows"] if x["device"] == dev)
    return (
        f"[estimate] {r['precision']} on {dev.upper()}, {est['max_views']} views x {targets} targets: about "
        f"{r['total'] / MIB:.0f} MiB (weights {r['weights'] / MIB:.0f}, KV cache {r['kv_cache'] / MIB:.0f}"
        + (f" in {cache_dtype}" if cache_dtype and cache_dtype != m.kv_dtype else "")
        + ", "
        f"activations {r['activations'] / MIB:.0f}"
        + (f", process {r['process'] / MIB:.0f})" if dev == "cpu" else ")")
    )


def echo_estimate(
    export_dir,
    max_views: int | None = None,
    targets: int = 8,
    device: str = "cpu",
    cache_dtype: str | None = None,
) -> None:
    """Print :func:`estimate_line` to stdout (nothing when the folder cannot be read): the
    one-line hook at the start of infer, bench and build."""
    line = estimate_line(export_dir, max_views, targets, device, cache_dtype)
    if line:
        print(line, flush=True)
