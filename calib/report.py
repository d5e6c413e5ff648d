"""Accuracy report of a quantized export: JSON, markdown and PNG.

On held-out scenes (synthetic seeds far from the calibration ones, or a scene list), for
each number of input views: PSNR/SSIM of the quantized renders against the fp32 renders
and against the ground truth (and of fp32 against the ground truth, for scale). Both
exports run through the runtime (ONNX Runtime, CPU); FP8 Q/DQ run on ONNX Runtime's
reference float8 QuantizeLinear/DequantizeLinear kernels, since no FP8 hardware is here.

Per-layer K/V error: the relative L2 error of each layer's cached K and V (quantized
encoder vs fp32 encoder, same views). Encoder layer i's K/V come from encoder block i
(``input_self_attn_blocks.i``) and its ``self_cross_blocks.i.cross_attn.to_kv``; the error
grows with depth, so the sensitive layers are the ones whose error grows most over the
layer before. The report names them and the ``--exclude`` that keeps them in fp32.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

import viewrt.runtime as vrt
from viewrt.calib.data import scene_paths
from viewrt.calib.kv_cache import cached_kv
from viewrt.data import load_frame, load_scene
from viewrt.errors import ViewrtError
from viewrt.metrics import psnr, ssim

# Lazy: matplotlib (heavy, optional: the report's plot), imported where used.

HELD_OUT_SEED = 1000  # calibration scenes use seeds 0..N-1


def _frames(scene, size):
    return [load_frame(f, size) for f in scene.frames]


def accuracy_report(
    export_dir: str | Path,
    out_dir: str | Path,
    reference: str | Path | None = None,
    scenes: str | Path | None = None,
    synthetic: int | None = None,
    views: tuple = (1, 2, 4, 8),
    targets: int = 4,
    seed: int = HELD_OUT_SEED,
) -> dict:
    """Score a quantized export against its fp32 source and the ground truth.

    Args:
        export_dir: a quantized export (manifest with a ``quantization`` record).
        out_dir: where report.json, report.md and report.png go (created).
        reference: the fp32 export (default: the source recorded in the manifest).
        scenes: a scene list of held-out scenes, or
        synthetic: that many synthetic scenes from seed ``seed`` (default 4 when neither given).
        views: numbers of input views to score (capped by the export's max_views).
        targets: target frames per scene (frames not among the inputs).
        seed: first synthetic seed (keep it apart from the calibration seeds).
    Returns: the report dict (what report.json holds).
    Raises: ViewrtError for a missing or unquantized export, a reference that is not its
        fp32 source, or unreadable scenes.
    """
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    qm, reference = _check_exports(export_dir, reference)
    q = qm.quantization
    if scenes is None and synthetic is None:
        synthetic = 4
    views = _check_views(views, qm.max_views, export_dir)
    with tempfile.TemporaryDirectory(prefix="viewrt-report-") as work:
        paths, source = scene_paths(
            scenes, synthetic, qm.image_size, Path(work), seed, n_views=max(views) + targets
        )
        rows: dict[int, list[dict]] = {n: [] for n in views}
        kv_err: list[np.ndarray] = []
        with vrt.open(reference, "ort") as f, vrt.open(export_dir, "ort") as qr:
            names = f.manifest.past_names
            for path in paths:
                _score_scene(f, qr, load_scene(path), views, targets, rows, kv_err)
    layers = _kv_error_by_layer(kv_err, len(names))
    sensitive = _sensitive(layers)
    report = {
        "export": str(export_dir.resolve()),
        "reference": str(reference.resolve()),
        "precision": qm.precision,
        "kv_dtype": qm.kv_dtype,
        "method": q.get("method"),
        "calibration": q.get("calibration"),
        "excluded": {g: q["graphs"][g]["excluded_nodes"] for g in q.get("graphs", {})},
        "held_out": source,
        "targets_per_scene": targets,
        "backend": "ONNX Runtime CPU (reference Q/DQ kernels for float8)",
        "by_views": _by_views(rows, views),
        "kv_error_by_layer": layers,
        "sensitive_layers": sensitive,
        "exclude_hint": ",".join(
            f"input_self_attn_blocks.{i},self_cross_blocks.{i}.cross_attn.to_kv" for i in sensitive
        ),
        "untrained_weights": qm.checkpoint is None,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    (out_dir / "report.md").write_text(report_markdown(report))
    _plot(report, out_dir / "report.png")
    return report


def _check_exports(export_dir: Path, reference: str | Path | None):
    """``(quantized manifest, reference folder)``; ViewrtError for an unquantized export or
    a reference that is not its fp32 source."""
    qm = vrt.load_manifest(export_dir)
    q = qm.quantization
    if not q:
        raise ViewrtError(
            f"{export_dir}: not a quantized export (no 'quantization' in its manifest); run `viewrt calib` first"
        )
    reference = Path(reference or q["source_export"]["dir"])
    rm = vrt.load_manifest(reference)
    if rm.weights_sha256 != q["source_export"].get("weights_sha256"):
        raise ViewrtError(
            f"{reference}: not the fp32 export {export_dir} was quantized from (weights differ)"
        )
    return qm, reference


def _check_views(views, max_views: int, export_dir: Path) -> list[int]:
    """The view counts, sorted and distinct; ViewrtError for one beyond the cache."""
    over = sorted({int(v) for v in views if not 1 <= int(v) <= max_views})
    if over:
        raise ViewrtError(
            f"views {over}: outside 1..{max_views}, the cache capacity of {export_dir}"
        )
    views = sorted({int(v) for v in views})
    if not views:
        raise ViewrtError(f"views: none in 1..{max_views}")
    return views


def _score_scene(f, qr, scene, views: list[int], targets: int, rows: dict, kv_err: list) -> None:
    """Render one scene on the fp32 (``f``) and quantized (``qr``) renderers for each view
    count; appends per-target metrics to ``rows[n]`` and, at the largest count the scene
    allows, the per-tensor K/V relative errors to ``kv_err``."""
    size, T = f.size, f.manifest.tokens_per_view
    frames = _frames(scene, size)
    if len(frames) < 2:
        raise ViewrtError(f"scene {scene.name!r}: needs at least 2 frames")
    frame = vrt.NormalizationFrame.from_cameras(np.stack([c for _, _, c in frames]))
    top = min(max(views), len(frames) - 1)
    ins_all = sorted({int(i) for i in np.linspace(0, len(frames) - 1, top).round()})
    tgt = [i for i in range(len(frames)) if i not in ins_all][:targets]
    cams = [vrt.Camera(frames[i][2], frames[i][1]) for i in tgt]
    for n in views:
        if n > len(ins_all):
            continue
        ins = [ins_all[int(i)] for i in np.linspace(0, len(ins_all) - 1, n).round()]
        out = []
        for r in (f, qr):
            r.reset()
            r.frame = frame
            for i in ins:
                r.add_view(frames[i][0], vrt.Camera(frames[i][2], frames[i][1]))
            out.append(r.render(cams))
        if n == max(v for v in views if v <= len(ins_all)):
            kv_err.append(_kv_errors(f, qr, n * T))
        a, b = out
        rows[n] += [_metrics(a[k], b[k], frames[ti][0]) for k, ti in enumerate(tgt)]


def _kv_errors(f, qr, tokens: int) -> np.ndarray:
    """Relative error of each cache tensor of ``qr`` against ``f`` over the first ``tokens``."""
    err = []
    for a, b in zip(cached_kv(f, tokens), cached_kv(qr, tokens)):
        err.append(float(np.linalg.norm(a - b) / max(float(np.linalg.norm(a)), 1e-12)))
    return np.array(err)


def _metrics(fp32: np.ndarray, quant: np.ndarray, gt: np.ndarray) -> dict:
    return {
        "psnr_q_vs_fp32": psnr(quant, fp32),
        "ssim_q_vs_fp32": ssim(quant, fp32),
        "psnr_q_vs_gt": psnr(quant, gt),
        "ssim_q_vs_gt": ssim(quant, gt),
        "psnr_fp32_vs_gt": psnr(fp32, gt),
        "ssim_fp32_vs_gt": ssim(fp32, gt),
    }


def _by_views(rows: dict[int, list[dict]], views: list[int]) -> list[dict]:
    """Mean metrics per view count (counts no scene reached left out)."""
    by_views = []
    for n in views:
        if not rows[n]:
            continue
        keys = rows[n][0].keys()
        mean = {k: round(float(np.mean([r[k] for r in rows[n]])), 4) for k in keys}
        mean["psnr_drop_vs_gt_db"] = round(mean["psnr_fp32_vs_gt"] - mean["psnr_q_vs_gt"], 4)
        by_views.append({"views": n, "renders": len(rows[n]), **mean})
    return by_views


def _kv_error_by_layer(kv_err: list[np.ndarray], n_tensors: int) -> list[dict]:
    """Mean K and V relative errors per layer (cache tensors come as key, value pairs)."""
    err = np.mean(kv_err, axis=0) if kv_err else np.zeros(n_tensors)
    layers = []
    for i in range(n_tensors // 2):
        k, v = float(err[2 * i]), float(err[2 * i + 1])
        layers.append({"layer": i, "key_rel_error": round(k, 6), "value_rel_error": round(v, 6)})
    return layers


def _sensitive(layers: list[dict]) -> list[int]:
    """Layers whose K/V error grows most over the layer before (> 1.5x the median growth);
    at least the one with the largest growth."""
    err = [max(r["key_rel_error"], r["value_rel_error"]) for r in layers]
    if not err:
        return []
    growth = np.diff([0.0, *err])
    med = float(np.median(growth))
    picked = [i for i, g in enumerate(growth) if g > 1.5 * med and g > 0]
    return sorted(set(picked) | {int(np.argmax(growth))})


def _calib_text(c: dict | None) -> str:
    if not c:
        return "unknown"
    return (
        f"{c.get('source')}; {c.get('encoder_samples')} encoder samples, {c.get('decoder_samples')} decoder samples "
        f"(caches of {c.get('decoder_views')} views, {c.get('targets_per_sample')} targets each)"
    )


def report_markdown(r: dict) -> str:
    """The report as a markdown page."""
    lines = [
        f"# Accuracy of the {r['precision']} export ({r.get('kv_dtype', 'float32')} K/V cache)",
        "",
        f"- export: `{r['export']}`; reference (fp32): `{r['reference']}`",
        f"- calibration: {r['method']}; {_calib_text(r['calibration'])}",
        f"- held-out scenes: {r['held_out']}, {r['targets_per_scene']} targets each; {r['backend']}",
        f"- excluded (fp32) matmuls: {r['excluded']}",
    ]
    if r["untrained_weights"]:
        lines.append(
            "- **untrained (built-in random) weights**: the PSNR against ground truth means nothing here; "
            "run this on the trained demo model"
        )
    lines += [
        "",
        "| views | PSNR q vs fp32 | SSIM q vs fp32 | PSNR q vs GT | PSNR fp32 vs GT | drop vs GT (dB) | SSIM q vs GT |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in r["by_views"]:
        lines.append(
            f"| {b['views']} | {b['psnr_q_vs_fp32']:.2f} | {b['ssim_q_vs_fp32']:.4f} | {b['psnr_q_vs_gt']:.2f} | "
            f"{b['psnr_fp32_vs_gt']:.2f} | {b['psnr_drop_vs_gt_db']:.3f} | {b['ssim_q_vs_gt']:.4f} |"
        )
    lines += [
        "",
        "Per-layer K/V relative L2 error (quantized encoder vs fp32, same views):",
        "",
        "| layer | K | V |",
        "|---:|---:|---:|",
    ]
    for x in r["kv_error_by_layer"]:
        mark = " (sensitive)" if x["layer"] in r["sensitive_layers"] else ""
        lines.append(
            f"| {x['layer']}{mark} | {x['key_rel_error']:.4f} | {x['value_rel_error']:.4f} |"
        )
    lines += [
        "",
        f"Sensitive layers: {r['sensitive_layers']}. To keep them in fp32: "
        f"`viewrt calib ... --exclude {r['exclude_hint']}`",
        "",
    ]
    return "\n".join(lines)


def _plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    v = [x["views"] for x in r["by_views"]]
    a.plot(v, [x["psnr_q_vs_fp32"] for x in r["by_views"]], "o-", label=f"{r['precision']} vs fp32")
    a.plot(v, [x["psnr_q_vs_gt"] for x in r["by_views"]], "s-", label=f"{r['precision']} vs GT")
    a.plot(v, [x["psnr_fp32_vs_gt"] for x in r["by_views"]], "^--", label="fp32 vs GT")
    a.set_xscale("log", base=2)
    a.set_xticks(v, [str(n) for n in v])
    a.set_xlabel("input views")
    a.set_ylabel("PSNR (dB)")
    a.legend()
    a.set_title("renders, held-out scenes")
    layers = r["kv_error_by_layer"]
    x = np.arange(len(layers))
    b.bar(x - 0.2, [y["key_rel_error"] for y in layers], 0.4, label="K")
    b.bar(x + 0.2, [y["value_rel_error"] for y in layers], 0.4, label="V")
    b.set_xticks(x)
    b.set_xlabel("layer")
    b.set_ylabel("relative L2 error")
    b.set_title("cached K/V vs fp32 encoder")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_table(report_dirs: list[str | Path]) -> str:
    """One markdown row per report (label: its folder name): PSNR (dB) of the quantized
    renders vs fp32 by number of views N, SSIM at 4 views, and the largest per-layer K/V
    relative error."""
    reports = [
        (Path(d).name, json.loads((Path(d) / "report.json").read_text())) for d in report_dirs
    ]
    views = sorted({b["views"] for _, r in reports for b in r["by_views"]})
    lines = [
        "| export | K/V cache | method | "
        + " | ".join(f"N={n}" for n in views)
        + " | SSIM, N=4 | max K/V rel. error |",
        "|---|---|---|" + "---:|" * (len(views) + 2),
    ]
    for name, r in reports:
        b = {x["views"]: x for x in r["by_views"]}
        kv = max(max(x["key_rel_error"], x["value_rel_error"]) for x in r["kv_error_by_layer"])
        psnr = " | ".join(f"{b[n]['psnr_q_vs_fp32']:.1f}" if n in b else "-" for n in views)
        ssim4 = f"{b[4]['ssim_q_vs_fp32']:.4f}" if 4 in b else "-"
        kvd = r.get("kv_dtype", "float32")
        lines.append(f"| {name} | {kvd} | {r['method']} | {psnr} | {ssim4} | {kv:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m viewrt.calib.report REPORT_DIR ...: the summary table
    import sys

    print(summary_table(sys.argv[1:]))
