"""Where OpenVINO's decoder time goes, by cached views N: wall time of one decoder call and
the time per runtime node type (OpenVINO's per-node profiling, ``PERF_COUNT``).

    python -m viewrt.runtime.backends.openvino_profile EXPORT [--views 4,16,64] [--targets 8] [--snippets disable]

The decoder is read, bounded and typed exactly as the ``openvino`` backend does (a bf16 K/V
cache where the plugin computes in bf16 and the export's cache is fp32), compiled with the
latency hint and ``PERF_COUNT``, and run on random inputs of the right shape and dtype (the
timing does not depend on the values). ``--snippets disable`` compiles with
``SNIPPETS_MODE=DISABLE``: the CPU plugin then runs attention as MatMul, Softmax, MatMul
instead of its fused Snippets kernel (the runtime model's "Subgraph" nodes). One warm-up
call, then the median of ``--repeats``. Prints a markdown table and the CPU flags.

A diagnostic of the runtime's OpenVINO backend, not a `viewrt` subcommand (argparse: the
runtime layer needs no CLI library).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import viewrt.runtime as vrt
from viewrt.contract.family import VIEW_SLOTS
from viewrt.cpuinfo import cpu_flags, cpu_model
from viewrt.errors import ViewrtError

# openvino is imported lazily (profile): this module imports without it.

SNIPPETS = {"default": None, "enable": "ENABLE", "disable": "DISABLE"}


def _feeds(compiled, ov, n_tokens: int, targets: int, rng) -> dict:
    """Random inputs of the compiled decoder at ``n_tokens`` cached tokens and ``targets``."""
    feeds = {}
    for port in compiled.inputs:
        name = port.get_any_name()
        shape = [
            d.get_length() if d.is_static else (n_tokens if name.startswith("past") else targets)
            for d in port.get_partial_shape()
        ]
        et = port.get_element_type()
        if et == ov.Type.i8:
            feeds[name] = ov.Tensor(rng.integers(-100, 100, size=shape, dtype=np.int8))
            continue
        a = (rng.standard_normal(shape) * 0.5).astype(np.float32)
        if et == ov.Type.bf16:
            t = ov.Tensor(ov.Type.bf16, shape)
            t.data[:] = (a.view(np.uint32) >> 16).astype(np.uint16).reshape(t.data.shape)
            feeds[name] = t
        elif et == ov.Type.f16:
            feeds[name] = ov.Tensor(a.astype(np.float16))
        else:
            feeds[name] = ov.Tensor(a)
    return feeds


def default_views(max_views: int) -> list[int]:
    """4, 16 and 64 where the export caches that many views, else 1, a quarter and all."""
    got = [n for n in (4, 16, 64) if n <= max_views]
    return got if len(got) > 1 else sorted({1, max(1, max_views // 4), max_views})


def profile(
    export_dir,
    views: list[int] | None,
    targets: int = 8,
    snippets: str = "default",
    inference_precision: str | None = None,
    repeats: int = 3,
) -> dict:
    """{"precision", "cache_dtype", "points": [{"views", "ms", "by_type": {type: ms}}]}.

    Args:
        views: cached view counts N (None: :func:`default_views` of the export).
    Raises: ViewrtError for a bad export, an export without a view cache (a streaming one),
        an N beyond its cache or more targets than its decoder takes, checked before anything
        is compiled.
    """
    import openvino as ov

    m = vrt.load_manifest(export_dir)
    if m.memory != VIEW_SLOTS:
        raise ViewrtError(
            f"{export_dir}: a {m.family} export ({m.memory}); the profiler times a view "
            "decoder over N cached views (an Efficient-LVSM export)"
        )
    views = default_views(m.max_views) if views is None else views
    bad = [n for n in views if not 1 <= n <= m.max_views]
    if bad:
        raise ViewrtError(f"--views {bad[0]}: the export caches 1..{m.max_views} views")
    if not 1 <= targets <= m.max_targets:
        raise ViewrtError(
            f"--targets {targets}: the export's decoder renders 1..{m.max_targets} targets per call"
        )
    opts = {} if inference_precision is None else {"inference_precision": inference_precision}
    with vrt.open(export_dir, "openvino", **opts) as r:
        b = r.backend
        info = b.info()
        core = ov.Core()
        model = b._read(core, "decoder", ov)
        if info.get("cache_dtype") == "bfloat16":
            model = b._bf16_cache_io("decoder", model, ov)
        config = {"PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True}
        if inference_precision:
            config["INFERENCE_PRECISION_HINT"] = inference_precision
        if SNIPPETS[snippets]:
            config["SNIPPETS_MODE"] = SNIPPETS[snippets]
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()
        rng = np.random.default_rng(0)
        points = []
        for n in views:
            feeds = _feeds(compiled, ov, n * m.tokens_per_view, targets, rng)
            request.infer(feeds)  # warm-up (shape-specific preparation)
            times, by_type = [], collections.Counter()
            for _ in range(repeats):
                t0 = time.perf_counter()
                request.infer(feeds)
                times.append((time.perf_counter() - t0) * 1e3)
            for p in request.profiling_info:  # the last call's nodes
                by_type[p.node_type] += p.real_time.total_seconds() * 1e3
            points.append(
                {
                    "views": n,
                    "ms": statistics.median(times),
                    "by_type": dict(by_type.most_common()),
                }
            )
    return {
        "export": str(export_dir),
        "precision": info.get("precision"),
        "cache_dtype": info.get("cache_dtype"),
        "snippets": snippets,
        "targets": targets,
        "points": points,
    }


def table(res: dict, top: int = 4) -> str:
    """Markdown: N, decoder ms, and the ``top`` node types' ms (of the last call)."""
    lines = [
        f"decoder of {res['export']} on OpenVINO ({res['precision']}, cache {res['cache_dtype']}, "
        f"Snippets {res['snippets']}), {res['targets']} targets; CPU: {cpu_model()}; flags: {', '.join(cpu_flags()) or 'none of note'}",
        "",
        "| N | decoder (ms, median) | node types (ms, one call) |",
        "|---:|---:|---|",
    ]
    for p in res["points"]:
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in list(p["by_type"].items())[:top])
        lines.append(f"| {p['views']} | {p['ms']:.1f} | {kinds} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m viewrt.runtime.backends.openvino_profile",
        description="OpenVINO decoder time by cached views N and by runtime node type.",
    )
    ap.add_argument("export_dir")
    ap.error = lambda message: ap.exit(2, f"error: {message}\n")  # one line, no usage block
    ap.add_argument(
        "--views",
        default=None,
        help="cached views N, comma-separated (default: 4,16,64 within the cache)",
    )
    ap.add_argument("--targets", type=int, default=8)
    ap.add_argument("--snippets", choices=list(SNIPPETS), default="default")
    ap.add_argument("--inference-precision", choices=["f32", "bf16"], default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the JSON there")
    a = ap.parse_args(argv)
    try:
        try:
            views = None if a.views is None else [int(v) for v in a.views.split(",")]
        except ValueError:
            raise ViewrtError(
                f"--views: not a comma-separated list of integers: {a.views!r}"
            ) from None
        if a.targets < 1 or a.repeats < 1:
            raise ViewrtError("--targets and --repeats must be >= 1")
        out = Path(a.out) if a.out else None
        if out is not None and (out.is_dir() or not out.parent.is_dir()):
            raise ViewrtError(f"--out {a.out}: cannot write it (not a file in an existing folder)")
        res = profile(a.export_dir, views, a.targets, a.snippets, a.inference_precision, a.repeats)
        if out is not None:
            try:
                out.write_text(json.dumps(res, indent=1))
            except OSError as e:
                raise ViewrtError(f"--out {a.out}: cannot write it ({e.strerror})") from None
        print(table(res))
    except ViewrtError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
