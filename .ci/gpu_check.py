"""`make gpu-check`: everything that needs TensorRT and a GPU, in one run, into one folder.

Where TensorRT and a CUDA GPU are usable (viewrt.devices decides, once):
1. exports tiny and small in fp32 and fp16 (`viewrt export`; small with 64 views for the bench)
   and builds their engines (`viewrt build`: fp32 strongly typed with TF32 cleared, fp16
   strongly typed from the fp16 graph);
2. runs the runtime parity sequence (add views one by one, render after each, remove a view,
   a non-keyframe view, render) on `trt`, `ort-trt` and `ort-cuda` against ONNX Runtime on the
   CPU (which `make test` holds to PyTorch within 1e-4): max abs image difference per step,
   tolerance 1e-4 for fp32 (docs/design.md) and 1e-2 for fp16;
3. runs `viewrt bench` on both small exports at N = 4, 16, 64 cached views, 8 targets, on those
   three backends;
and writes every log, manifest, parity table and bench output under OUT (default
out/gpu-check), with summary.json last.

Exit status: 0 when every step ran and every parity check held; 1 when a step failed or a
parity check did not hold (summary.json says which); 3 on a machine without TensorRT or a
usable GPU, after one line on stderr saying why (nothing is built then).

Usage: python .ci/gpu_check.py [--out DIR] [--step-timeout SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

EXPORTS = [("tiny", "fp32", 8), ("tiny", "fp16", 8), ("small", "fp32", 64), ("small", "fp16", 64)]


def _gpu_configurations() -> list[str]:
    """The registry's GPU configurations (ort-cuda, ort-trt, trt and any registered)."""
    from viewrt.runtime import backends as registry

    return [name for name, row in registry.configs().items() if row.gpu]


PARITY_BACKENDS = _gpu_configurations()
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}


def _run(cmd: list[str], log: Path, timeout: float) -> dict:
    start = time.perf_counter()
    with log.open("w") as f:
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    return {
        "cmd": " ".join(cmd),
        "rc": rc,
        "seconds": round(time.perf_counter() - start, 1),
        "log": log.name,
    }


def _cameras(rng, n: int, size: int):
    from viewrt.geometry import look_at

    cams = []
    for _ in range(n):
        eye = rng.normal(size=3)
        eye *= rng.uniform(0.5, 1.5) / np.linalg.norm(eye)
        up = (0.0, 0.0, 1.0) if abs(eye[2]) < 0.9 * np.linalg.norm(eye) else (0.0, 1.0, 0.0)
        f = rng.uniform(0.8, 1.5) * size
        cams.append((look_at(eye, rng.normal(scale=0.1, size=3), up), [f, f, size / 2, size / 2]))
    return cams


def parity(export_dir: Path, precision: str, seed: int = 0) -> dict:
    """The scripted sequence on each GPU backend against ONNX Runtime on the CPU."""
    import viewrt.runtime as vrt

    m = vrt.load_manifest(export_dir)
    size = m.image_size
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (5, 3, size, size)).astype(np.float32)
    cams, targets = _cameras(rng, 5, size), _cameras(rng, 3, size)
    frame = [c for c, _ in cams]

    def sequence(r) -> list[np.ndarray]:
        out, ids = [], []
        for i in range(4):
            ids.append(r.add_view(images[i], cams[i]))
            out.append(r.render(targets))
        r.remove_view(ids[1])
        out.append(r.render(targets))
        r.add_view(images[4], cams[4], keyframe=False)
        out.append(r.render(targets))
        return out

    with vrt.open(export_dir, frame=frame) as r:
        reference = sequence(r)
    result = {
        "tolerance": TOLERANCE[precision],
        "steps": ["add0", "add1", "add2", "add3", "remove1", "non-keyframe"],
    }
    for name in PARITY_BACKENDS:
        try:
            with vrt.open(export_dir, backend=name, frame=frame) as r:
                got = sequence(r)
            diffs = [float(np.abs(a - b).max()) for a, b in zip(got, reference)]
            result[name] = {"max_abs": diffs, "ok": max(diffs) <= TOLERANCE[precision]}
        except Exception as e:  # noqa: BLE001 - recorded, the check goes on with the next backend
            result[name] = {"error": f"{type(e).__name__}: {e}", "ok": False}
    return result


def _export_and_build(viewrt: str, out: Path, summary: dict, timeout: float) -> bool:
    """Export and build every EXPORTS row, then check its parity; False on any failure."""
    ok = True
    for preset, precision, views in EXPORTS:
        name = f"{preset}-{precision}"
        d = out / name
        export = [viewrt, "export", "--preset", preset, "--precision", precision]
        export += ["--max-views", str(views), "--out", str(d), "--force", "--seed", "0"]
        build = [viewrt, "build", str(d), "--max-targets", "8"]
        for step, cmd in (("export", export), ("build", build)):
            res = _run(cmd, out / f"{name}.{step}.log", timeout)
            summary["steps"].append({"name": f"{name} {step}", **res})
            print(f"[gpu-check] {name} {step}: rc {res['rc']} in {res['seconds']} s", flush=True)
            if res["rc"] != 0:
                ok = False
                break
        else:
            checks = parity(d, precision)
            summary["parity"][name] = checks
            held = {k: v["ok"] for k, v in checks.items() if k in PARITY_BACKENDS}
            ok &= all(held.values())
            said = ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in held.items())
            print(f"[gpu-check] {name} parity: {said}", flush=True)
    return ok


def _bench(viewrt: str, out: Path, summary: dict, timeout: float) -> bool:
    """The GPU bench of the built small exports; False when one fails."""
    ok = True
    for name in ("small-fp32", "small-fp16"):
        if not (out / name / "decoder.engine").is_file():
            continue
        cmd = [viewrt, "bench", str(out / name), "--out", str(out / f"bench-{name}")]
        cmd += ["--views", "4,16,64", "--targets", "8", "--backends", ",".join(PARITY_BACKENDS)]
        res = _run([*cmd, "--quiet"], out / f"bench-{name}.log", 2 * timeout)
        summary["bench"][name] = res
        ok &= res["rc"] == 0
        print(f"[gpu-check] bench {name}: rc {res['rc']} in {res['seconds']} s", flush=True)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/gpu-check")
    ap.add_argument("--step-timeout", type=float, default=240.0)
    args = ap.parse_args()

    from viewrt.devices import tensorrt_status

    status = tensorrt_status()
    if not status.ok:
        print(
            f"gpu-check NOT run: {status.reason}. It needs TensorRT and a CUDA GPU; nothing was built.",
            file=sys.stderr,
        )
        return 3

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    viewrt = str(Path(sys.executable).parent / "viewrt")
    summary = {
        "machine": {
            "tensorrt": status.version,
            "gpu": status.gpu.name,
            "sm": status.gpu.compute_capability,
            "host": platform.node(),
            "python": platform.python_version(),
        },
        "steps": [],
        "parity": {},
        "bench": {},
    }
    start = time.perf_counter()
    ok = _export_and_build(viewrt, out, summary, args.step_timeout)
    ok &= _bench(viewrt, out, summary, args.step_timeout)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["ok"] = bool(ok)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(
        f"[gpu-check] {'all checks held' if ok else 'FAILED'} in {summary['seconds']} s; see {out / 'summary.json'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
