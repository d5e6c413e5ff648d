"""The one memory estimate, before any work: weights, KV cache at max views, peak
activations, per precision, on CPU and GPU. Pure arithmetic on the manifest and its cache
geometry (no torch, no onnx); the CPU figure adds the process's own resident memory at the
time of the call. ``viewrt estimate``, the one-line estimate of infer/bench/build
(runtime/estimate.py) and the TensorRT build (export/trt_build.py) all read it.

Terms (bytes; T tokens per view, D model width, H heads, L layers, N views, t targets):

- weights: the exported graphs' file sizes (their initializers), rescaled from the export's
  precision to each precision (fp32 4, fp16 2, int8/fp8 1 byte per weight). ONNX Runtime on
  the CPU holds the graph's weights and, while it builds a session, the parsed model too:
  counted as 2x on the CPU; for Q/DQ graphs it holds the quantized weights plus fp32 copies
  of the ones it dequantizes ahead of time: counted as quantized + fp32. TensorRT engines
  hold one copy.
- KV cache: ``L * 2 * N * T * D * bytes(kv)`` (a token window adds its retained region and
  side caches, reserved at their maximum); the K/V at the graph boundary are fp32
  for fp32, int8 and fp8 exports (Q/DQ sit inside the graphs) and fp16 for fp16.
- activations of one decoder call (the largest step): where attention is materialized
  (ONNX Runtime: MatMul -> Softmax -> MatMul) the fp32 scores and probabilities of one
  layer's cross-attention, ``2 * t' * T * N * T * H * 4`` with ``t'`` the targets per call
  the renderer picks under its attention budget; plus the MLP hidden state ``t' * T * 4D``
  in and out (fp32). Counted twice on the CPU when a render makes two decoder calls of the
  same size (targets >= 2t'), or ``repeated`` (the same cache size rendered again, as in a
  benchmark): ONNX Runtime then plans one block for all of the call's activations (its
  memory pattern) while its arena still holds the first call's chunks. For Q/DQ graphs that
  second block measured about half the first (fp32 intermediates around the fused int8
  matmuls are not kept): counted 1.5x. TensorRT fuses attention: only the token tensors
  count there.
- sessions (CPU): ONNX Runtime's fixed cost per session (thread pool, arena, kernels),
  ``SESSION_BYTES`` each for the encoder and the decoder; measured with
  ``python -m viewrt.calib.memcheck`` on the tiny preset, whose weights and cache are small.
- process (CPU): the resident memory of the calling process at the time of the call, after
  importing onnxruntime (interpreter, numpy, ONNX Runtime's libraries); not in the GPU figure.

Check it with ``python -m viewrt.calib.memcheck`` (see docs/calib.md): within 15% of the
measured peak RSS on the CPU.
"""

from __future__ import annotations

from pathlib import Path

from viewrt.contract.manifest import Manifest, load_manifest
from viewrt.contract.memory import attention_scratch_bytes, targets_within
from viewrt.contract.precision import PRECISIONS as _TABLE
from viewrt.errors import ViewrtError

PRECISIONS = tuple(_TABLE)  # the precision table's rows
WEIGHT_BYTES = {p: r.weight_itemsize for p, r in _TABLE.items()}
KV_BYTES = {p: r.itemsize for p, r in _TABLE.items()}
MIB = 2**20
SESSION_BYTES = 7 * MIB  # see the module docstring


def process_rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; 0 where unknown)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _targets_per_call(T: int, n_views: int, heads: int, targets: int, budget_mib: float) -> int:
    """The renderer's rule (contract.memory.targets_within)."""
    return targets_within(budget_mib * MIB, T, n_views * T, heads, targets)


def _kept_bytes(m, itemsize: int) -> int:
    """Bytes a token-window memory reserves besides the full entries: the retained region
    (``max_positions`` entries' retained tokens) and the family's side caches (e.g.
    gct-stream's camera head, one token per position); 0 for view slots."""
    geo = m.cache
    kept = geo.max_positions * geo.retain_tokens * geo.n_layers * 2 * geo.n_heads * geo.head_dim
    side = sum(
        c.bytes_per_entry(itemsize) * c.capacity for c in m.contract.side_caches(m.header).values()
    )
    return kept * itemsize + side


def estimate(
    manifest,
    max_views: int | None = None,
    precision: str | None = None,
    targets: int = 8,
    attention_budget_mib: float = 256.0,
    process_bytes: int | None = None,
    repeated: bool = False,
) -> dict:
    """Estimate memory for an export.

    Args:
        manifest: a ``viewrt.runtime.Manifest`` or an export folder.
        max_views: views in the cache (default: the export's max_views).
        precision: one precision, or None for all (fp32, fp16, int8, fp8).
        targets: targets rendered per render call.
        attention_budget_mib: the renderer's attention budget (splits targets on the CPU).
        process_bytes: the CPU process's resident memory to add (default: this process now;
            import the backend first so that its libraries count).
        repeated: renders repeat at the same cache size (a benchmark): activations twice on the CPU.
    Returns:
        ``{"export_precision", "max_views", "targets", "rows": [{"precision", "device",
        "weights", "kv_cache", "activations", "process", "total"} (bytes)]}`` with a CPU and
        a GPU row per precision ("process" on the CPU includes the two sessions).
    Raises:
        ViewrtError: a bad folder or manifest, an unknown precision, or max_views outside
            1..the export's.
    """
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest, verify=False)
    m = manifest
    cap = m.cache.capacity
    n = cap if max_views is None else int(max_views)
    if not 1 <= n <= cap:
        raise ViewrtError(f"--max-views must be in 1..{cap} (the export's), got {n}")
    if precision is not None and precision not in PRECISIONS:
        raise ViewrtError(
            f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
        )
    if targets < 1:
        raise ViewrtError(f"targets must be at least 1, got {targets}")
    src = m.precision
    files = m.files or {}
    graph_bytes = sum(int(files.get(g.file, {}).get("size_bytes", 0)) for g in m.graphs.values())
    weights_fp32 = graph_bytes * 4 // WEIGHT_BYTES.get(src, 4)
    geo = m.cache
    T, H, D = geo.tokens_per_entry, geo.n_heads, geo.n_heads * geo.head_dim
    if process_bytes is None:
        process_bytes = process_rss_bytes()
    process = int(process_bytes)
    rows = []
    for p in PRECISIONS if precision is None else (precision,):
        w = weights_fp32 * WEIGHT_BYTES[p] // 4
        kv = geo.bytes_per_entry(KV_BYTES[p]) * n + _kept_bytes(m, KV_BYTES[p])
        for device in ("cpu", "gpu"):
            if device == "cpu":
                t = _targets_per_call(T, n, H, targets, attention_budget_mib)
                act = attention_scratch_bytes(t, T, n * T, H) + 2 * t * T * 4 * D * 4
                if repeated or targets >= 2 * t:  # ONNX Runtime's memory pattern block (see above)
                    act = act * 3 // 2 if WEIGHT_BYTES[p] == 1 else 2 * act
                # fp32/fp16: the graph's weights and the parsed model while the session is built;
                # Q/DQ on ONNX Runtime's CPU: the int8/fp8 weights plus fp32 copies of those
                # it dequantizes ahead of time
                cpu_w = 2 * w if WEIGHT_BYTES[p] > 1 else w + weights_fp32
                row = {
                    "weights": cpu_w,
                    "kv_cache": kv,
                    "activations": act,
                    "process": process + 2 * SESSION_BYTES,
                }
            else:
                act = 2 * targets * T * 4 * D * 4
                row = {"weights": w, "kv_cache": kv, "activations": act, "process": 0}
            row["total"] = sum(row.values())
            rows.append({"precision": p, "device": device, **row})
    return {
        "export": str(m.dir),
        "export_precision": src,
        "max_views": n,
        "targets": targets,
        "rows": rows,
    }


def format_estimate(est: dict) -> str:
    """A small table in MiB."""
    lines = [
        f"memory estimate for {est['export']} ({est['export_precision']} export), {est['max_views']} views, "
        f"{est['targets']} targets (MiB):",
        f"  {'precision':9} {'device':6} {'weights':>8} {'KV cache':>9} {'activ.':>8} {'process':>8} {'total':>8}",
    ]
    for r in est["rows"]:
        lines.append(
            f"  {r['precision']:9} {r['device']:6} {r['weights'] / MIB:8.1f} {r['kv_cache'] / MIB:9.1f} "
            f"{r['activations'] / MIB:8.1f} {r['process'] / MIB:8.1f} {r['total'] / MIB:8.1f}"
        )
    return "\n".join(lines)


def device_row(est: dict, device: str) -> dict:
    """The row of :func:`estimate`'s result for one device ("cpu" or "gpu") of its first
    precision."""
    return next(r for r in est["rows"] if r["device"] == device)
