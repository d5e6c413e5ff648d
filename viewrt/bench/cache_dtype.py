"""Decoder time with the K/V cache in bf16 against fp32, on OpenVINO, at one compute
precision: ``viewrt bench-cache EXPORT --views 4,16,64`` (viewrt/cli/bench_cache.py hands
the runtime's ``open`` in: this package does not import the runtime).

For each cache precision (the export's fp32 cache, then bf16) one renderer adds views of
random images on synthetic cameras up to each N and renders the targets ``--repeats``
times; the decoder's time is the renderer's own ``decode`` timing (median). Each row also
says what the compiled graphs run: the plugin's compute precision, the cache's dtype, the
conversion nodes on cache tensors (``OpenVinoBackend.cache_conversions``) and the cache
bytes per view. The header names the CPU, its bf16/AMX flags and the load average, since
the timing means little on a busy machine.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from statistics import median

import click
import numpy as np

from viewrt.contract.manifest import load_manifest
from viewrt.data import synthetic_cameras
from viewrt.geometry import Camera


def cpu_line() -> str:
    """The CPU model, its bf16/AMX/AVX-512 flags and the load average (Linux /proc)."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    model = model or platform.processor() or "unknown CPU"
    want = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
    have = [f for f in want if f in flags] or ["none of " + ", ".join(want)]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} CPUs, flags: {' '.join(have)}; load average {load}"


def measure(
    open_fn,
    export_dir,
    views: list[int],
    targets: int,
    repeats: int,
    inference_precision: str | None,
) -> list[dict]:
    """One row per (cache precision, N): decoder ms (median of ``repeats`` renders) and what
    the compiled graphs run. ``open_fn`` is the runtime's ``open``. Raises ViewrtError (from
    the runtime) on a bad export or N."""
    m = load_manifest(export_dir)
    size, n_max = m.image_size, max(views)
    c2ws, k = synthetic_cameras(n_max + targets, size, 0)
    rng = np.random.default_rng(0)
    images = rng.random((n_max, 3, size, size), dtype=np.float32)
    cams = [Camera(c, k) for c in c2ws]
    rows = []
    for cache in ("export", "bf16"):
        with open_fn(
            export_dir,
            backend="openvino",
            max_views=n_max,
            frame=c2ws,
            inference_precision=inference_precision,
            cache_precision=cache,
        ) as r:
            conversions = sum(len(v) for v in r.backend.cache_conversions().values())
            added = 0
            for n in sorted(views):
                while added < n:
                    r.add_view(images[added], cams[added])
                    added += 1
                r.render(cams[n_max:])  # warm-up at this N
                times = []
                for _ in range(repeats):
                    r.render(cams[n_max:])
                    times.append(r.last_timings["decode"])
                info = r.info()
                rows.append(
                    {
                        "cache": info["cache_dtype"],
                        "compute": r.backend.precision,
                        "views": n,
                        "decode_ms": round(median(times), 1),
                        "conversions": conversions,
                        "kv_mib_per_view": round(info["bytes_per_view"] / 2**20, 3),
                    }
                )
    return rows


def print_rows(rows: list[dict]) -> None:
    """The rows as a markdown table, then the load average after the run."""
    click.echo("| cache | compute | N | decode ms | cache conversions | KV MiB/view |")
    click.echo("|---|---|---|---|---|---|")
    for r in rows:
        click.echo(
            f"| {r['cache']} | {r['compute']} | {r['views']} | {r['decode_ms']} | "
            f"{r['conversions']} | {r['kv_mib_per_view']} |"
        )
    click.echo(f"# after: load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
