"""CPU precision for ``viewrt bench``: the CPU's relevant ISA, each backend's compute
precision, the image error of reduced-precision backends against fp32, and the OpenVINO
targets (issue 12), evaluated on one run. The peaks per precision and the rates against
them are the roofline's (roofline.py; report.py prints them).

Used by the harness (harness.py, which owns the measurement loop).
"""

from __future__ import annotations

import numpy as np

from viewrt.cpuinfo import proc_cpu_flags
from viewrt.metrics import psnr

# openvino is imported lazily (cpu_isa: its optimization capabilities, where installed).

_FLAGS = {
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
    "avx512_bf16": "AVX512-BF16",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_fp16": "AVX512-FP16",
    "avx512f": "AVX-512",
    "avx2": "AVX2",
}


def cpu_isa() -> dict:
    """The CPU features that decide the precision of the CPU backends, from /proc/cpuinfo
    (and OpenVINO's view where installed).

    Returns: {"flags": {name: bool} for AMX-BF16, AMX-INT8, AVX512-BF16, AVX512-VNNI,
        AVX-VNNI, AVX512-FP16, AVX-512, AVX2; "bf16": native bf16 matmul (AMX or
        AVX512-BF16); "vnni": any VNNI; "openvino": OpenVINO's optimization capabilities
        and default inference precision, or None}.
    """
    flags = proc_cpu_flags()
    have = {name: flag in flags for flag, name in _FLAGS.items()}
    out = {
        "flags": have,
        "bf16": have["AMX-BF16"] or have["AVX512-BF16"],
        "vnni": have["AVX512-VNNI"] or have["AVX-VNNI"],
        "known": bool(flags),
        "openvino": None,
    }
    try:
        import openvino as ov

        core = ov.Core()
        out["openvino"] = {
            "version": ov.get_version(),
            "capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
            "default_precision": core.get_property(
                "CPU", "INFERENCE_PRECISION_HINT"
            ).get_type_name(),
        }
    except Exception:  # noqa: BLE001 - not installed, or no CPU plugin: the ISA line says so
        pass
    return out


def isa_line(isa: dict) -> str:
    if not isa["known"]:
        return "CPU ISA: unknown (no /proc/cpuinfo)"
    f = isa["flags"]
    amx = "yes" if f["AMX-BF16"] else "no"
    parts = [
        f"AMX {amx}",
        f"AVX512-BF16 {'yes' if f['AVX512-BF16'] else 'no'}",
        f"VNNI {'yes (' + ', '.join(k for k in ('AVX512-VNNI', 'AVX-VNNI') if f[k]) + ')' if isa['vnni'] else 'no'}",
        f"AVX-512 {'yes' if f['AVX-512'] else 'no'}",
    ]
    ov = isa.get("openvino")
    tail = (
        f"; OpenVINO {ov['version'].split('-')[0]} capabilities {', '.join(ov['capabilities'])}, default inference "
        f"precision {ov['default_precision']}"
        if ov
        else ""
    )
    return (
        f"CPU ISA: {', '.join(parts)}; native bf16 matmul: {'yes' if isa['bf16'] else 'no'}{tail}"
    )


def accuracy(renders: dict, precisions: dict, order: list[str]) -> list[dict]:
    """Image error of each reduced-precision backend against an fp32 one, per (N, targets),
    on the same views and targets: max abs and mean PSNR (dB) over the targets.

    Args: renders: {(backend, n, t): float images [t, 3, S, S]}; precisions: backend ->
        precision; order: backends in preference order for the fp32 reference.
    """
    ref = next(
        (
            b
            for b in ("openvino-f32", "ort", "torch-fp32", *order)
            if precisions.get(b) == "fp32" and any(k[0] == b for k in renders)
        ),
        None,
    )
    rows = []
    if ref is None:
        return rows
    for (b, n, t), img in sorted(renders.items()):
        if b == ref or precisions.get(b) in (None, "fp32") or (ref, n, t) not in renders:
            continue
        want = renders[(ref, n, t)]
        p = [psnr(np.clip(x, 0, 1), np.clip(y, 0, 1)) for x, y in zip(img, want)]
        rows.append(
            {
                "backend": b,
                "reference": ref,
                "n_views": n,
                "n_targets": t,
                "precision": precisions[b],
                "max_abs": float(np.abs(img - want).max()),
                "psnr_db": float(np.mean(p)),
            }
        )
    return rows


# --------------------------------------------------------------------------- report


def _lookup(res):
    return {(r["backend"], r["n_views"], r["n_targets"]): r for r in res["rows"]}


def _num(row, key="median_ms"):
    if row is None or row.get(key, "") in ("", None):
        return None
    return float(row[key])


def header_lines(res: dict) -> list[str]:
    """Bullets for the report's header: ISA, each backend's precision, each precision's rate."""
    cpu = res.get("cpu_precision")
    if not cpu:
        return []
    lines = [
        f"- {isa_line(cpu['isa'])}.",
        "- Compute precision: "
        + "; ".join(f"`{b}` {cpu['precisions'].get(b, '?')}" for b in res["backends"])
        + ".",
    ]
    return lines


def sections(res: dict) -> list[str]:
    """Report section: image error of reduced precision against fp32."""
    cpu = res.get("cpu_precision")
    if not cpu:
        return []
    lines = []
    acc = cpu.get("accuracy") or []
    if acc:
        lines += [
            f"## Reduced precision against fp32 (rendered images of the same views, reference `{acc[0]['reference']}`)",
            "",
            "| backend | precision | N | targets | max abs | PSNR (dB) |",
            "|---|---|---|---|---|---|",
        ]
        for a in acc:
            lines.append(
                f"| {a['backend']} | {a['precision']} | {a['n_views']} | {a['n_targets']} | {a['max_abs']:.2e} | {a['psnr_db']:.1f} |"
            )
        lines.append("")
    return lines


def _decoder_peak_line(L: dict, b: str, views, T: int, want: float, tnote: str) -> list[str]:
    """``b``'s decoder against the peak of its precision at each N: PASS / FAIL, or a peak
    defect (flagged, not evaluated) where it runs above that peak."""
    rows = [(n, L.get((b, n, T))) for n in views]
    d = [(n, _num(r, "decode_gflops"), _num(r, "decode_ratio_to_peak")) for n, r in rows]
    d = [(n, g, f) for n, g, f in d if g is not None]
    if not d:
        return []
    p = next(r.get("peak_precision") for _, r in rows if r is not None) or "?"
    cells = ", ".join(
        f"N={n} {100 * f:.0f}%" if f is not None else f"N={n} ⚑ above it" for n, _, f in d
    )
    if any(f is None for _, _, f in d):
        return [
            f"- ⚑ PEAK DEFECT: {b} decoder >= {100 * want:.0f}% of the measured {p} peak{tnote}: {cells} "
            "(a rate above the peak: not evaluated)"
        ]
    ok = all(f >= want for _, _, f in d)
    return [
        f"- {'PASS' if ok else 'FAIL'}: {b} decoder >= {100 * want:.0f}% of the measured {p} peak{tnote}: {cells}"
    ]


def check_lines(res: dict) -> list[str]:
    """Issue 12's targets on this run: PASS / FAIL / n/a with the numbers."""
    cpu = res.get("cpu_precision")
    if not cpu:
        return []
    L = _lookup(res)
    T = 8 if 8 in res["targets"] else max(res["targets"])
    tnote = "" if T == 8 else f" (8 targets not in this run; evaluated with {T})"
    views = [n for n in res["views"] if 4 <= n <= 64]
    out = []

    def ratios(a, bs):
        pts = []
        for n in views:
            x = _num(L.get((a, n, T)))
            ys = [y for y in (_num(L.get((b, n, T))) for b in bs) if y is not None]
            if x and ys:
                pts.append((n, min(ys) / x))
        return pts

    def verdict(pts, want, applies=True, why=""):
        if not pts:
            return None
        ok = all(s >= want for _, s in pts)
        return ("PASS" if ok else "FAIL") if applies else f"n/a ({why}; measured)"

    if "openvino" in res["backends"]:
        pts = ratios("openvino", [b for b in ("torch-fp32", "torch-bf16") if b in res["backends"]])
        v = verdict(pts, 1.5, cpu["isa"]["bf16"], "this CPU has neither AMX nor AVX512-BF16")
        if v:
            out.append(
                f"- {v}: openvino ({cpu['precisions'].get('openvino')}) >= 1.5x faster than the best of torch-fp32/torch-bf16 "
                f"at every N{tnote}: " + ", ".join(f"N={n} {s:.2f}x" for n, s in pts)
            )
    if "openvino-f32" in res["backends"]:
        for other, want in (("ort", 1.1), ("torch-fp32", 1.0)):
            pts = ratios("openvino-f32", [other]) if other in res["backends"] else []
            v = verdict(pts, want)
            if v:
                out.append(
                    f"- {v}: openvino-f32 >= {want}x as fast as {other} at every N{tnote}: "
                    + ", ".join(f"N={n} {s:.2f}x" for n, s in pts)
                )
        out += _decoder_peak_line(L, "openvino-f32", views, T, 0.75, tnote)
    kv = res["kv_bytes_per_view"]
    for b in [b for b in res["backends"] if b in ("ort", "openvino", "openvino-f32")]:
        pk = [(n, _num(L.get((b, n, T)), "peak_rss_bytes")) for n in res["views"]]
        pk = [(n, v) for n, v in pk if v is not None]
        if len(pk) >= 2:
            x, y = np.array([n for n, _ in pk], float), np.array([v for _, v in pk], float)
            slope = float(np.polyfit(x, y, 1)[0])
            out.append(
                f"- {'PASS' if slope <= 1.2 * kv else 'FAIL'}: `{b}` peak resident memory grows {slope / 2**20:.2f} MiB per cached view "
                f"(least squares over N={pk[0][0]}..{pk[-1][0]}) against {kv / 2**20:.2f} MiB of cache per view "
                f"({slope / kv:.2f}x; target <= 1.2x){tnote}"
            )
        ov = [(n, _num(L.get((b, n, T)), "overhead_ms")) for n in res["views"]]
        ov = [(n, v) for n, v in ov if v is not None]
        if b != "ort" and len(ov) >= 2:
            vals = [v for _, v in ov]
            spread, tol = max(vals) - min(vals), max(1.0, 0.2 * float(np.median(vals)))
            out.append(
                f"- {'PASS' if spread <= tol else 'FAIL'}: `{b}` step minus the encoder and decoder runs flat in N: "
                f"{', '.join(f'N={n} {v:.2f}' for n, v in ov)} ms (range {spread:.2f} ms; flat: <= max(1 ms, 20% of the median))"
            )
    return out
