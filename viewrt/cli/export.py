"""``viewrt export``: ONNX graphs + manifest, validated against PyTorch."""

from __future__ import annotations

import click

from viewrt.cli._errors import cli_errors
from viewrt.contract.precision import EXPORT_PRECISIONS
from viewrt.errors import ViewrtError


@click.command("export")
@click.option(
    "--preset",
    default="small",
    show_default=True,
    help="Model preset of an exportable family (Efficient-LVSM: tiny, small, demo [trained, 64 px], res256, res512; an unknown name lists them all).",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="Upstream checkpoint (.pt or .safetensors); default: built-in weights.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Output folder for encoder.onnx, decoder.onnx, manifest.json.",
)
@click.option(
    "--max-views",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Cache capacity in views.",
)
@click.option(
    "--precision", type=click.Choice(list(EXPORT_PRECISIONS)), default="fp32", show_default=True
)
@click.option("--force", is_flag=True, help="Overwrite a folder that holds another model's export.")
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),
    default=None,
    help="Seed of the validation inputs (default: fresh).",
)
@cli_errors
def export(preset, checkpoint, out_dir, max_views, precision, force, seed):
    """Export encoder and decoder ONNX graphs with per-layer KV, validate against PyTorch."""
    if max_views < 1:
        raise ViewrtError(f"--max-views must be at least 1, got {max_views}")
    from viewrt.export.onnx_export import export_model
    from viewrt.models import build_model
    from viewrt.models.registry import find_preset

    find_preset(
        preset, cached=True
    )  # unknown or baseline-only preset: clear error before loading anything
    model, report = build_model(preset, checkpoint, cached=True)
    if report is not None:
        click.echo(report.summary())
    source = checkpoint or (
        report.path if report is not None else None
    )  # the demo preset's shipped weights file
    manifest = export_model(model, out_dir, preset, max_views, precision, force, source, seed)
    v = manifest.validation
    click.echo(
        f"wrote {out_dir}: {', '.join(sorted(manifest.files))}, manifest.json ({preset}, {precision}, max {max_views} views, "
        f"{manifest.kv_bytes_per_view / 2**20:.2f} MiB KV per view); validated vs PyTorch on ONNX Runtime: "
        f"max abs K/V {v['max_abs_error']['encoder_kv']:.2g}, images {v['max_abs_error']['images']:.2g} (tolerance {v['atol']:g})"
    )
