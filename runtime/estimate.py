"""The one-line memory estimate at the start of infer, bench and build, from the contract's
one estimate (:mod:`viewrt.contract.estimate`)."""

from __future__ import annotations

from viewrt.contract.estimate import MIB, PRECISIONS, estimate
from viewrt.contract.manifest import load_manifest
from viewrt.errors import ViewrtError


def estimate_line(
    export_dir, max_views: int | None = None, targets: int = 8, device: str = "cpu"
) -> str:
    """One line for the start of infer, bench and build: the export's own precision on the
    given device ("cpu" or "gpu"); empty when the folder cannot be read (the command's own
    checks then report the problem)."""
    try:
        import onnxruntime  # noqa: F401 - its libraries are part of the CPU process's memory

        m = load_manifest(export_dir, verify=False)
        est = estimate(m, max_views, m.precision if m.precision in PRECISIONS else None, targets)
    except ViewrtError:
        return ""
    dev = "gpu" if device not in ("cpu",) and not str(device).startswith("cpu") else "cpu"
    r = next(x for x in est["rows"] if x["device"] == dev)
    return (
        f"[estimate] {r['precision']} on {dev.upper()}, {est['max_views']} views x {targets} targets: about "
        f"{r['total'] / MIB:.0f} MiB (weights {r['weights'] / MIB:.0f}, KV cache {r['kv_cache'] / MIB:.0f}, "
        f"activations {r['activations'] / MIB:.0f}"
        + (f", process {r['process'] / MIB:.0f})" if dev == "cpu" else ")")
    )


def echo_estimate(
    export_dir, max_views: int | None = None, targets: int = 8, device: str = "cpu"
) -> None:
    """Print :func:`estimate_line` to stdout (nothing when the folder cannot be read): the
    one-line hook at the start of infer, bench and build."""
    line = estimate_line(export_dir, max_views, targets, device)
    if line:
        print(line, flush=True)
