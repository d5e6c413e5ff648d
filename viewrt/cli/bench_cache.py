"""``viewrt bench-cache``: OpenVINO decoder time with the K/V cache in bf16 against the
export's fp32 cache (viewrt/bench/cache_dtype.py measures; this module hands it the
runtime's ``open``)."""

from __future__ import annotations

import click

import viewrt.runtime as vrt
from viewrt.bench.cache_dtype import cpu_line, measure, print_rows
from viewrt.cli._errors import cli_errors
from viewrt.cli.options import IntList


@click.command("bench-cache")
@click.argument("export_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--views",
    type=IntList(),
    default="4,16,64",
    show_default=True,
    help="Cache sizes N, comma-separated (up to the export's max_views).",
)
@click.option(
    "--targets",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Targets per render.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Timed renders per N (after one warm-up).",
)
@click.option(
    "--inference-precision",
    type=click.Choice(["f32", "bf16"]),
    default=None,
    help="OpenVINO's compute precision (default: its default for this CPU).",
)
@cli_errors
def bench_cache(export_dir, views, targets, repeats, inference_precision):
    """Decoder time, fp32 against bf16 K/V cache, on OpenVINO (an fp32 export)."""
    click.echo(f"# {cpu_line()}")
    print_rows(measure(vrt.open, export_dir, views, targets, repeats, inference_precision))
