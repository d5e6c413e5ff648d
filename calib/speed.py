"""Speed probe: the decoder step (render 8 targets from N cached views) of a Q/DQ int8
export on OpenVINO against fp32 on ONNX Runtime and OpenVINO and PyTorch eager (fp32 and
bf16 autocast), on the CPU.

    python -m viewrt.calib.speed FP32_EXPORT INT8_EXPORT --views 4,8,16,32,64 --targets 8 --out speed.json

OpenVINO and PyTorch decode the same targets from the same K/V (the fp32 encoder's, through
the runtime), all targets in one call. ONNX Runtime runs through the runtime's renderer
(views added by its own encoder; its attention budget splits targets across calls). Median of
``--repeats`` timed calls after one warm-up. Prints a markdown table and the machine.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

import viewrt.runtime as vrt
from viewrt.data import synthetic_cameras
from viewrt.geometry import plucker

# Lazy: openvino, torch and viewrt.models (heavy; torch only for the torch engines), imported
# where used.


def machine() -> dict:
    flags = set()
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    keep = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "flags": [f for f in keep if f in flags],
        "amx": any(f.startswith("amx") for f in flags),
        "load_avg": os.getloadavg(),
    }


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def probe(
    fp32_dir: str,
    int8_dir: str,
    views: list[int],
    targets: int = 8,
    repeats: int = 3,
    engines: list[str] | None = None,
) -> dict:
    """Median decoder-step milliseconds per engine and N. See the module docstring."""
    engines = engines or [
        "openvino-int8",
        "openvino-fp32",
        "ort-fp32",
        "ort-int8",
        "torch-fp32",
        "torch-bf16",
    ]
    m = vrt.load_manifest(fp32_dir)
    T = m.tokens_per_view
    nmax = max(views)
    inputs = _inputs(m, nmax, targets)
    with vrt.open(
        fp32_dir, "ort", max_views=nmax, frame=inputs.frame
    ) as r:  # the K/V every engine decodes from
        for i in range(nmax):
            r.add_view(inputs.images[i], vrt.Camera(inputs.c2ws[i], inputs.fx))
        kv_all = [b.host.copy() for b in r.cache.buffers]  # [1, nmax*T, H, Dh] each

    rows: dict[str, dict[int, float]] = {e: {} for e in engines}
    info: dict[str, str] = {}
    ov_models = _openvino_models(engines, fp32_dir, int8_dir, info)
    torch_model = _torch_model(m, info) if any(e.startswith("torch") for e in engines) else None
    for n in views:
        past = {nm: kv[:, : n * T] for nm, kv in zip(m.past_names, kv_all)}
        for e in engines:
            if e.startswith("ort"):
                export = fp32_dir if e.split("-")[1] == "fp32" else int8_dir
                rows[e][n] = _time_ort(export, inputs, n, repeats)
            elif e.startswith("openvino"):
                req = ov_models[e.split("-")[1]].create_infer_request()
                feed = {m.target_input: inputs.rays, **past}
                rows[e][n] = _time(lambda: req.infer(feed), repeats)
            else:
                rows[e][n] = _time_torch(
                    torch_model, m, past, inputs.rays, e == "torch-bf16", repeats
                )
            print(f"N={n} {e}: {rows[e][n]:.1f} ms", flush=True)
    return {
        "views": views,
        "targets": targets,
        "repeats": repeats,
        "ms": rows,
        "engines": info,
        "machine": machine(),
        "fp32_export": str(fp32_dir),
        "int8_export": str(int8_dir),
    }


@dataclass
class _Inputs:
    """The probe's fixed inputs: cameras (``c2ws`` [nmax + targets, 4, 4], ``fx``
    intrinsics), their normalization ``frame``, ``images`` (nmax random float32 [3, S, S]),
    the target cameras ``tcams`` and their rays ``rays`` float32 [1, targets, 6, S, S]."""

    c2ws: np.ndarray
    fx: np.ndarray
    frame: vrt.NormalizationFrame
    images: list[np.ndarray]
    tcams: list[vrt.Camera]
    rays: np.ndarray


def _inputs(m, nmax: int, targets: int) -> _Inputs:
    size = m.image_size
    c2ws, fx = synthetic_cameras(nmax + targets, size, seed=0)
    frame = vrt.NormalizationFrame.from_cameras(c2ws)
    rng = np.random.default_rng(0)
    images = [rng.random((3, size, size), dtype=np.float32) for _ in range(nmax)]
    tcams = [vrt.Camera(c, fx) for c in c2ws[nmax:]]
    rays = np.stack([plucker(frame.apply(c.c2w), c.fxfycxcy, size, size) for c in tcams])[
        None
    ].astype(np.float32)
    return _Inputs(c2ws, fx, frame, images, tcams, rays)


def _openvino_models(engines: list[str], fp32_dir: str, int8_dir: str, info: dict) -> dict:
    """OpenVINO decoders compiled for the openvino-* engines asked (``{"fp32"|"int8": model}``);
    their versions and inference precision go to ``info``."""
    ov_models = {}
    if not any(e.startswith("openvino") for e in engines):
        return ov_models
    import openvino as ov

    core = ov.Core()
    for p, d in (("fp32", fp32_dir), ("int8", int8_dir)):
        if f"openvino-{p}" in engines:
            cm = core.compile_model(
                str(Path(d) / "decoder.onnx"), "CPU", {"PERFORMANCE_HINT": "LATENCY"}
            )
            ov_models[p] = cm
            prec = str(cm.get_property("INFERENCE_PRECISION_HINT"))  # "<Type: 'bfloat16'>"
            prec = prec.split("'")[1] if "'" in prec else prec
            info[f"openvino-{p}"] = (
                f"OpenVINO {ov.get_version().split('-')[0]}, inference precision {prec}"
            )
    return ov_models


def _torch_model(m, info: dict):
    """The export's PyTorch model (eval mode); its version and threads go to ``info``."""
    import torch

    from viewrt.models import build_model

    torch_model, _ = build_model(m.preset, m.checkpoint)
    torch_model.eval()
    info["torch"] = f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads"
    return torch_model


def _time_ort(export_dir: str, inputs: _Inputs, n: int, repeats: int) -> float:
    """The runtime's render on ONNX Runtime, its own encoder filling its cache with n views
    (int8: quantized K/V)."""
    with vrt.open(export_dir, "ort", max_views=n, frame=inputs.frame) as r:
        for i in range(n):
            r.add_view(inputs.images[i], vrt.Camera(inputs.c2ws[i], inputs.fx))
        return _time(lambda: r.render(inputs.tcams), repeats)


def _time_torch(torch_model, m, past: dict, rays: np.ndarray, bf16: bool, repeats: int) -> float:
    """PyTorch eager decode of the same K/V (fp32, or bf16 autocast)."""
    import torch

    kv = [
        (
            torch.from_numpy(np.ascontiguousarray(past[m.past_names[2 * i]])),
            torch.from_numpy(np.ascontiguousarray(past[m.past_names[2 * i + 1]])),
        )
        for i in range(m.n_layers)
    ]
    tr = torch.from_numpy(rays)

    def run():
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
        ):
            torch_model.render(tr, kv)

    return _time(run, repeats)


def markdown(res: dict) -> str:
    v = res["views"]
    lines = ["| engine | " + " | ".join(f"N={n}" for n in v) + " |", "|---|" + "---:|" * len(v)]
    for e, row in res["ms"].items():
        lines.append(
            f"| {e} | " + " | ".join(f"{row[n]:.0f}" if n in row else "-" for n in v) + " |"
        )
    if "openvino-int8" in res["ms"]:
        best = [
            min(res["ms"][e][n] for e in ("torch-fp32", "torch-bf16") if e in res["ms"]) for n in v
        ]
        lines.append(
            "| speed-up of openvino-int8 over the best PyTorch eager | "
            + " | ".join(f"{b / res['ms']['openvino-int8'][n]:.2f}x" for b, n in zip(best, v))
            + " |"
        )
    mc = res["machine"]
    lines.append("")
    lines.append(
        f"Median ms of one decoder step ({res['targets']} targets), {res['repeats']} repeats; {mc['cpu']}, "
        f"{mc['cores']} cores, flags {', '.join(mc['flags'])}, AMX: {'yes' if mc['amx'] else 'no'}; load average "
        f"{', '.join(f'{x:.1f}' for x in mc['load_avg'])}. {'; '.join(f'{k}: {x}' for k, x in res['engines'].items())}."
    )
    return "\n".join(lines)


@click.command()
@click.argument("fp32_export")
@click.argument("int8_export")
@click.option("--views", default="4,8,16,32,64", show_default=True)
@click.option("--targets", default=8, show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--engines", default=None, help="Comma list (default: all).")
@click.option("--out", default=None, help="Write the results JSON there.")
def main(fp32_export, int8_export, views, targets, repeats, engines, out):
    """Decoder-step latency: openvino-int8 vs fp32 (ORT, OpenVINO) vs PyTorch eager."""
    res = probe(
        fp32_export,
        int8_export,
        [int(x) for x in views.split(",")],
        targets,
        repeats,
        engines.split(",") if engines else None,
    )
    if out:
        Path(out).write_text(json.dumps(res, indent=1))
    print(markdown(res))


if __name__ == "__main__":
    main()
