"""Click commands of calib/: ``viewrt calib``, ``viewrt calib-report``, ``viewrt estimate``.

Registered on the ``viewrt`` group in viewrt/cli/__init__.py. Heavy imports happen inside
the commands.
"""

from __future__ import annotations

from pathlib import Path

import click

from viewrt.bench.harness import parse_int_list
from viewrt.cli._errors import cli_errors
from viewrt.errors import ViewrtError
from viewrt.folders import check_creatable

PRECISIONS = ("int8", "fp8")
METHODS = ("minmax", "entropy", "percentile", "distribution")


@click.command()
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="New export folder (must not hold files).",
)
@click.option("--precision", required=True, help="int8 or fp8 (float8 E4M3FN).")
@click.option(
    "--scenes",
    type=click.Path(dir_okay=False),
    default=None,
    help="Scene list file of calibration scenes.",
)
@click.option(
    "--synthetic",
    type=click.IntRange(1, 1000),
    default=None,
    help="Calibrate on N (1..1000) generated synthetic scenes instead.",
)
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
    type=int,
    default=256,
    show_default=True,
    help="Calibration samples per graph, at most.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write the accuracy report there.",
)
@cli_errors
def calib(
    export_dir,
    out_dir,
    precision,
    scenes,
    synthetic,
    method,
    exclude,
    attention,
    max_samples,
    seed,
    report_dir,
):
    """Quantize an fp32 export to explicit Q/DQ (int8 or fp8) calibrated on scene views."""
    from viewrt.calib.quantize import METHODS as _M
    from viewrt.calib.quantize import PRECISIONS as _P
    from viewrt.calib.quantize import quantize_export

    if precision not in _P:
        raise ViewrtError(f"unknown precision {precision!r}; expected one of {', '.join(_P)}")
    if method is not None and method not in _M:
        raise ViewrtError(f"unknown calibration method {method!r}; expected one of {', '.join(_M)}")
    if max_samples < 1:
        raise ViewrtError(f"--max-samples must be at least 1, got {max_samples}")
    check_creatable(out_dir, "--out")
    m = quantize_export(
        export_dir,
        out_dir,
        precision,
        scenes,
        synthetic,
        method,
        exclude.split(","),
        attention,
        max_samples=max_samples,
        seed=seed,
        progress=True,
    )
    q, v = m.quantization, m.validation
    n = {g: len(q["graphs"][g]["quantized_nodes"]) for g in q["graphs"]}
    x = sum(len(q["graphs"][g]["excluded_nodes"]) for g in q["graphs"])
    click.echo(
        f"wrote {out_dir}: {precision} Q/DQ ({q['method']}, {q['calibration']['encoder_samples']} encoder + "
        f"{q['calibration']['decoder_samples']} decoder samples); quantized matmuls: encoder {n['encoder']}, decoder "
        f"{n['decoder']}, {x} kept fp32; passes the TensorRT Q/DQ check; vs fp32: {v['psnr_vs_fp32_db']} dB PSNR"
    )
    if report_dir:
        _report(out_dir, report_dir, None, None, None, "1,2,4,8")


def _report(export_dir, out_dir, reference, scenes, synthetic, views):
    from viewrt.calib.report import accuracy_report

    check_creatable(out_dir, "--out")
    r = accuracy_report(
        export_dir, out_dir, reference, scenes, synthetic, tuple(parse_int_list(views, "--views"))
    )
    b = {x["views"]: x for x in r["by_views"]}
    at = b.get(4) or r["by_views"][-1]
    click.echo(
        f"wrote {Path(out_dir) / 'report.json'}, report.md, report.png: at {at['views']} views {r['precision']} "
        f"is {at['psnr_q_vs_fp32']:.1f} dB vs fp32, {at['psnr_drop_vs_gt_db']:+.2f} dB PSNR drop vs ground truth; "
        f"sensitive K/V layers {r['sensitive_layers']}"
    )


@click.command("calib-report")
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True)
@click.option(
    "--reference",
    type=click.Path(file_okay=False),
    default=None,
    help="fp32 export (default: the one it was quantized from).",
)
@click.option(
    "--scenes", type=click.Path(dir_okay=False), default=None, help="Scene list of held-out scenes."
)
@click.option(
    "--synthetic",
    type=int,
    default=None,
    help="N held-out synthetic scenes (seeds from 1000; default 4).",
)
@click.option("--views", default="1,2,4,8", show_default=True)
@cli_errors
def calib_report(export_dir, out_dir, reference, scenes, synthetic, views):
    """Accuracy of a quantized export vs fp32 and ground truth (JSON, markdown, PNG)."""
    _report(export_dir, out_dir, reference, scenes, synthetic, views)


@click.command()
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option(
    "--max-views", type=int, default=None, help="Views in the cache (default: the export's max)."
)
@click.option("--precision", default=None, help="fp32, fp16, int8 or fp8 (default: all).")
@click.option("--targets", type=int, default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@cli_errors
def estimate(export_dir, max_views, precision, targets, as_json):
    """Memory estimate: weights, KV cache at max views, peak activations, per precision, CPU and GPU."""
    import json

    from viewrt.contract.manifest import load_manifest
    from viewrt.runtime.estimate import estimate as _estimate
    from viewrt.runtime.estimate import format_estimate

    est = _estimate(load_manifest(export_dir, verify=False), max_views, precision, targets)
    click.echo(json.dumps(est, indent=1) if as_json else format_estimate(est))
