"""``viewrt export``: ONNX graphs + manifest, validated against PyTorch.

viewrt.models and viewrt.export (torch, onnx) are imported when the command runs (see
viewrt/cli/__init__.py).
"""

from __future__ import annotations

import click

from viewrt.cli._errors import cli_errors
from viewrt.cli.options import max_views_option, out_option, precision_option, seed_option
from viewrt.contract.precision import EXPORT_PRECISIONS


@click.command("export")
@click.option(
    "--preset",
    default="small",
    show_default=True,
    help="Model preset of an exportable family (Efficient-LVSM: tiny, small, demo [trained, 64 px], res256, res512; gct-stream [untrained]: stream-tiny, stream-small; an unknown name lists them all). For gct-stream, --max-views is the full frames a step reads at most (pinned + window - 1).",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="Upstream checkpoint (.pt or .safetensors); default: built-in weights.",
)
@out_option("Output folder for encoder.onnx, decoder.onnx, manifest.json.")
@max_views_option(16, "Cache capacity in views.")
@precision_option(EXPORT_PRECISIONS, default="fp32")
@click.option("--force", is_flag=True, help="Overwrite a folder that holds another model's export.")
@seed_option(None, "Seed of the validation inputs (default: fresh).")
@cli_errors
def export(preset, checkpoint, out_dir, max_views, precision, force, seed):
    """Export encoder and decoder ONNX graphs with per-layer KV, validate against PyTorch."""
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
    manifest = export_model(
        model,
        out_dir,
        preset,
        max_views=max_views,
        precision=precision,
        force=force,
        checkpoint=source,
        seed=seed,
    )
    v, entry = manifest.validation, manifest.cache.entry
    errors = ", ".join(f"{k} {e:.2g}" for k, e in v["max_abs_error"].items())
    click.echo(
        f"wrote {out_dir}: {', '.join(sorted(manifest.files))}, manifest.json ({preset}, {precision}, max {max_views} {entry}s, "
        f"{manifest.kv_bytes_per_entry / 2**20:.2f} MiB KV per {entry}); validated vs PyTorch on ONNX Runtime: "
        f"max abs {errors} (tolerance {v['atol']:g})"
        + (f"; weights: {manifest.extra['weights']}" if "weights" in manifest.extra else "")
    )
