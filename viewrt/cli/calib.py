"""Click commands of calib/: ``viewrt calib``, ``viewrt calib-report``, ``viewrt estimate``.

Registered on the ``viewrt`` group in viewrt/cli/__init__.py. viewrt.calib (onnx, onnxruntime
quantization) is imported when a command runs (see viewrt/cli/__init__.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from viewrt.cli._errors import cli_errors
from viewrt.cli.options import (
    export_dir_argument,
    int_list_option,
    list_option,
    max_views_option,
    out_option,
    precision_option,
    refused_option,
    seed_option,
    synthetic_option,
)
from viewrt.contract.manifest import load_manifest
from viewrt.contract.precision import QUANTIZED_PRECISIONS
from viewrt.errors import ViewrtError
from viewrt.folders import check_apart, check_creatable
from viewrt.runtime.estimate import estimate as _estimate
from viewrt.runtime.estimate import format_estimate

REPORT_VIEWS = (1, 2, 4, 8)  # cached-view counts of the accuracy report (calib-report's default)


def _calib_report_views(max_views: int) -> tuple[int, ...]:
    """Views scored by ``viewrt calib --report``: 1, 4, 16 and the export's largest cache,
    where int8 loses most (docs/calib.md, "Long caches")."""
    return tuple(sorted({v for v in (1, 4, 16) if v <= max_views} | {max_views}))


def _scenes_hint(value: str) -> str:
    """The one line for the old ``--scenes FILE`` of calib and calib-report."""
    return (
        f"--scenes is a number of scenes (viewrt scene, viewrt train); "
        f"for a scene list file use --list {value}"
    )


@click.command()
@export_dir_argument()
@out_option("New export folder (must not hold files).")
@precision_option(
    ("fp32", *QUANTIZED_PRECISIONS),
    default=None,
    help="Matmuls: int8, or fp8 (float8 E4M3FN); fp32 keeps them (with --kv). Default: fp32 with --kv, else required.",
)
@click.option(
    "--kv",
    type=click.Choice(["int8", "fp8"]),
    default=None,
    help="Store the K/V cache in 8 bits: int8 with per-head scales (a quarter of fp32's bytes); fp8 is refused here (docs/calib.md).",
)
@list_option("Scene list file of the calibration scenes (one scene JSON per line).")
@refused_option("--scenes", _scenes_hint)
@synthetic_option("Calibrate on N (1..1000) generated synthetic scenes instead.")
@click.option(
    "--method", default=None, help="minmax (default), entropy, percentile (int8) or distribution."
)
@click.option(
    "--exclude",
    default="",
    help="Comma list of modules (prefixes) or nodes kept in fp32, e.g. self_cross_blocks.0,image_token_decoder.",
)
@click.option(
    "--attention/--no-attention",
    default=True,
    show_default=True,
    help="Quantize the attention matmuls too.",
)
@click.option(
    "--max-samples",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Calibration samples per graph, at most.",
)
@seed_option(help="Seed of the synthetic scenes and the validation inputs.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write the accuracy report there (views 1, 4, 16 and the export's max_views).",
)
@cli_errors
def calib(
    export_dir,
    out_dir,
    precision,
    list_file,
    synthetic,
    method,
    exclude,
    attention,
    max_samples,
    seed,
    report_dir,
    kv,
):
    """Quantize an fp32 export to explicit Q/DQ (int8 or fp8 matmuls, an int8 K/V cache)
    calibrated on scene views."""
    from viewrt.calib.quantize import quantize_export

    if precision is None and kv is None:
        raise ViewrtError(
            "give --precision int8|fp8 (quantized matmuls) and/or --kv int8 (an 8-bit K/V cache)"
        )
    precision = precision or "fp32"
    check_creatable(out_dir, "--out")
    if report_dir:  # checked before the work, as --out is
        check_apart(
            report_dir, {"the source export": export_dir}, {"--out": out_dir}, what="--report"
        )
        check_creatable(report_dir, "--report")
    m = quantize_export(
        export_dir,
        out_dir,
        precision=precision,
        scenes=list_file,
        synthetic=synthetic,
        method=method,
        exclude=exclude.split(","),
        attention=attention,
        max_samples=max_samples,
        seed=seed,
        progress=True,
        kv=kv,
    )
    q, v = m.quantization, m.validation
    n = {g: len(q["graphs"][g]["quantized_nodes"]) for g in q["graphs"]}
    x = sum(len(q["graphs"][g]["excluded_nodes"]) for g in q["graphs"])
    click.echo(
        f"wrote {out_dir}: {precision} Q/DQ ({q['method']}, {m.kv_dtype} K/V cache, {q['calibration']['encoder_samples']} encoder + "
        f"{q['calibration']['decoder_samples']} decoder samples); quantized matmuls: encoder {n['encoder']}, decoder "
        f"{n['decoder']}, {x} kept fp32; passes the TensorRT Q/DQ check; vs fp32: {v['psnr_vs_fp32_db']} dB PSNR"
    )
    if report_dir:
        _report(out_dir, report_dir, views=_calib_report_views(m.max_views), option="--report")


def _report(
    export_dir, out_dir, views, reference=None, scenes=None, synthetic=None, option="--out"
):
    from viewrt.calib.report import accuracy_report

    check_creatable(out_dir, option)
    r = accuracy_report(
        export_dir,
        out_dir,
        reference=reference,
        scenes=scenes,
        synthetic=synthetic,
        views=tuple(views),
    )
    b = {x["views"]: x for x in r["by_views"]}
    at = b.get(4) or r["by_views"][-1]
    click.echo(
        f"wrote {Path(out_dir) / 'report.json'}, report.md, report.png: at {at['views']} views {r['precision']} "
        f"is {at['psnr_q_vs_fp32']:.1f} dB vs fp32, {at['psnr_drop_vs_gt_db']:+.2f} dB PSNR drop vs ground truth; "
        f"sensitive K/V layers {r['sensitive_layers']}"
    )


@click.command("calib-report")
@export_dir_argument()
@out_option("Output folder for report.json, report.md, report.png.")
@click.option(
    "--reference",
    type=click.Path(file_okay=False),
    default=None,
    help="fp32 export (default: the one it was quantized from).",
)
@list_option("Scene list file of held-out scenes (one scene JSON per line).")
@refused_option("--scenes", _scenes_hint)
@synthetic_option("N (1..1000) held-out synthetic scenes (seeds from 1000; default 4).")
@int_list_option(
    "--views", ",".join(map(str, REPORT_VIEWS)), "Cached-view counts (comma-separated)."
)
@cli_errors
def calib_report(export_dir, out_dir, reference, list_file, synthetic, views):
    """Accuracy of a quantized export vs fp32 and ground truth (JSON, markdown, PNG)."""
    _report(
        export_dir, out_dir, views=views, reference=reference, scenes=list_file, synthetic=synthetic
    )


@click.command()
@export_dir_argument()
@max_views_option(help="Views in the cache (default: the export's max).")
@precision_option(help="Graph precision: fp32, fp16, int8 or fp8 (default: all).")
@click.option("--targets", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@cli_errors
def estimate(export_dir, max_views, precision, targets, as_json):
    """Memory estimate: weights, KV cache at max views, peak activations, per precision, CPU and GPU."""
    est = _estimate(
        load_manifest(export_dir, verify=False),
        max_views=max_views,
        precision=precision,
        targets=targets,
    )
    click.echo(json.dumps(est, indent=1) if as_json else format_estimate(est))
