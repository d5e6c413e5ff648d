"""Check the memory estimate (viewrt.runtime.estimate) against the measured peak RSS.

Each point runs in a fresh Python process: import the runtime, take the estimate (CPU row of
the export's precision, which includes that process's resident memory at that moment), then
open the export on ONNX Runtime (CPU), add N views, render the targets, and read the peak
resident set size (``VmHWM`` of /proc/self/status).

    python -m viewrt.calib.memcheck EXPORT [EXPORT ...] --views 4,16,64 --targets 8

prints one row per point and exits 1 when any estimate is off by more than 15%.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import numpy as np

import viewrt.runtime as vrt
from viewrt.data import synthetic_cameras
from viewrt.runtime.estimate import estimate

TOLERANCE = 0.15


def _child(export_dir: str, views: int, targets: int) -> dict:
    m = vrt.load_manifest(export_dir)
    est = estimate(m, views, m.precision, targets)
    cpu = next(r for r in est["rows"] if r["device"] == "cpu")
    c2ws, fx = synthetic_cameras(views + targets, m.image_size, seed=0)
    rng = np.random.default_rng(0)
    with vrt.open(export_dir, "ort", max_views=views, frame=c2ws) as r:
        for i in range(views):
            r.add_view(
                rng.random((3, m.image_size, m.image_size), dtype=np.float32),
                vrt.Camera(c2ws[i], fx),
            )
        r.render([vrt.Camera(c, fx) for c in c2ws[views:]])
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a big process
    # (pytest with torch loaded) would report its parent's peak
    peak = next(
        int(x.split()[1]) * 1024 for x in open("/proc/self/status") if x.startswith("VmHWM:")
    )
    return {
        "export": export_dir,
        "precision": m.precision,
        "views": views,
        "targets": targets,
        "estimate_mib": round(cpu["total"] / 2**20, 1),
        "peak_rss_mib": round(peak / 2**20, 1),
        "error": round(cpu["total"] / peak - 1, 4),
        "terms_mib": {
            k: round(cpu[k] / 2**20, 1) for k in ("weights", "kv_cache", "activations", "process")
        },
    }


def measure(export_dir: str, views: int, targets: int = 8) -> dict:
    """One point in a fresh process; returns estimate, peak RSS and relative error."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "viewrt.calib.memcheck",
            "--child",
            export_dir,
            "--views",
            str(views),
            "--targets",
            str(targets),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(
            out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "child failed"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


@click.command()
@click.argument("exports", nargs=-1, required=True)
@click.option("--views", default="4,16", show_default=True, help="Comma list of cache sizes.")
@click.option("--targets", default=8, show_default=True)
@click.option("--child", is_flag=True, hidden=True)
def main(exports, views, targets, child):
    """Estimate vs measured peak RSS, one fresh process per point."""
    if child:
        print(json.dumps(_child(exports[0], int(views), targets)))
        return
    bad = 0
    for e in exports:
        for n in [int(v) for v in views.split(",")]:
            r = measure(e, n, targets)
            ok = abs(r["error"]) <= TOLERANCE
            bad += not ok
            print(
                f"{r['export']} {r['precision']} N={n} t={targets}: estimate {r['estimate_mib']} MiB, peak RSS "
                f"{r['peak_rss_mib']} MiB, error {100 * r['error']:+.1f}% {'ok' if ok else 'OFF'} {r['terms_mib']}"
            )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
