"""``viewrt build``: TensorRT engines for an export folder.

viewrt.export (onnx, TensorRT) is imported when the command runs (see viewrt/cli/__init__.py).
"""

from __future__ import annotations

from pathlib import Path

import click

from viewrt.cli._errors import cli_errors
from viewrt.cli.options import export_dir_argument, max_views_option, precision_option
from viewrt.runtime.estimate import echo_estimate


@click.command("build")
@export_dir_argument()
@precision_option(help="Engine precision (default: the graphs').")
@max_views_option(help="Profile maximum in views (default: the manifest's).")
@click.option("--max-targets", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--if-available", is_flag=True, help="Where TensorRT or a GPU is absent, say so and exit 0."
)
@click.option(
    "--tf32",
    is_flag=True,
    help="Allow TF32 matmuls for fp32 tensors (default: cleared, true fp32).",
)
@cli_errors
def build(export_dir, precision, max_views, max_targets, if_available, tf32):
    """Build TensorRT engines (encoder.engine, decoder.engine) from an export folder."""
    from viewrt.export.engines import build_engines, read_export
    from viewrt.export.trt_build import trt_available

    echo_estimate(
        export_dir, max_views=max_views, targets=max_targets, device="gpu"
    )  # the memory estimate first
    ok, reason = trt_available()  # probed once for the whole command (viewrt.devices)
    if not ok and if_available:
        read_export(Path(export_dir))  # the graphs are there and match
        click.echo(
            f"engines NOT built in {export_dir}: {reason}. The ONNX graphs and manifest are ready; "
            "run `viewrt build` on the target device (TensorRT engines are tied to GPU and TensorRT version)."
        )
        return
    engines = build_engines(
        Path(export_dir),
        precision=precision,
        max_views=max_views,
        max_targets=max_targets,
        tf32=tf32,
    )
    e = engines["encoder"]
    click.echo(
        f"built {', '.join(x['file'] for x in engines.values())} in {export_dir} (TensorRT {e['tensorrt']}, "
        f"{e['gpu']}, {e['precision']}, {e['typing']}ly typed, TF32 {'on' if tf32 else 'off'}); recorded in manifest.json"
    )
