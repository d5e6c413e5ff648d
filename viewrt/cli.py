"""The ``viewrt`` command line: one click group, one subcommand per stage.

Errors a user can cause end in one line on stderr and exit status 1. Heavy imports
(torch, onnx, tensorrt) happen inside the subcommands that need them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from viewrt.errors import ViewrtError, cli_errors


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="viewrt")
def main():
    """viewrt: export KV-cached view-synthesis transformers (Efficient-LVSM) and run
    them view by view on ONNX Runtime or TensorRT."""


@main.command()
@click.option("--preset", default="small", show_default=True, help="Model preset (tiny, small, res256, res512).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="Upstream checkpoint (.pt or .safetensors); default: built-in weights.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Output folder for encoder.onnx, decoder.onnx, manifest.json.")
@click.option("--max-views", type=int, default=16, show_default=True, help="Cache capacity in views.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite a folder that holds another model's export.")
@click.option("--seed", type=int, default=None, help="Seed of the validation inputs (default: fresh).")
@cli_errors
def export(preset, checkpoint, out_dir, max_views, precision, force, seed):
    """Export encoder and decoder ONNX graphs with per-layer KV, validate against PyTorch."""
    if max_views < 1:
        raise ViewrtError(f"--max-views must be at least 1, got {max_views}")
    from viewrt.export.onnx_export import export_model
    from viewrt.models import build_model, get_preset

    get_preset(preset)  # unknown preset: clear error before loading anything
    model, report = build_model(preset, checkpoint)
    if report is not None:
        click.echo(report.summary())
    manifest = export_model(model, out_dir, preset, max_views, precision, force, checkpoint, seed)
    v = manifest["validation"]
    click.echo(
        f"wrote {out_dir}: encoder.onnx, decoder.onnx, manifest.json ({preset}, {precision}, max {max_views} views, "
        f"{manifest['kv_bytes_per_view'][precision] / 2**20:.2f} MiB KV per view); validated vs PyTorch on ONNX Runtime: "
        f"max abs K/V {v['max_abs_error']['encoder_kv']:.2g}, images {v['max_abs_error']['images']:.2g} (tolerance {v['atol']:g})"
    )


@main.command()
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default=None, help="Engine precision (default: the graphs').")
@click.option("--max-views", type=int, default=None, help="Profile maximum in views (default: the manifest's).")
@click.option("--max-targets", type=int, default=8, show_default=True)
@click.option("--if-available", is_flag=True, help="Where TensorRT or a GPU is absent, say so and exit 0.")
@cli_errors
def build(export_dir, precision, max_views, max_targets, if_available):
    """Build TensorRT engines (encoder.engine, decoder.engine) from an export folder."""
    from viewrt.export.engines import build_engines, read_export
    from viewrt.export.trt_build import trt_available

    from viewrt.runtime.estimate import echo_estimate; echo_estimate(export_dir, max_views, max_targets, "gpu")  # noqa: E702
    ok, reason = trt_available()
    if not ok and if_available:
        read_export(Path(export_dir))  # the graphs are there and match
        click.echo(f"engines NOT built in {export_dir}: {reason}. The ONNX graphs and manifest are ready; "
                   "run `viewrt build` on the target device (TensorRT engines are tied to GPU and TensorRT version).")
        return
    engines = build_engines(Path(export_dir), precision, max_views, max_targets)
    click.echo(f"built {', '.join(e['file'] for e in engines.values())} in {export_dir} (TensorRT "
               f"{engines['encoder']['tensorrt']}, {engines['encoder']['gpu']}); recorded in manifest.json")


@main.command()
@click.argument("export_dir", type=click.Path(file_okay=False))
@cli_errors
def info(export_dir):
    """Print what an export folder holds (model, tensors, cache size, engines)."""
    from viewrt.runtime.manifest import load_manifest

    m = load_manifest(Path(export_dir))
    click.echo(json.dumps(m.summary(), indent=1))


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True)
@click.option("--views", type=int, default=16, show_default=True)
@click.option("--size", type=int, default=128, show_default=True)
@click.option("--scenes", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@cli_errors
def scene(out_dir, views, size, scenes, seed):
    """Generate synthetic scenes in the LVSM RealEstate10K format (scene JSON + PNGs)."""
    from viewrt.data import make_eval_index, make_synthetic_list

    lst = make_synthetic_list(out_dir, scenes, n_views=views, size=size, seed=seed)
    idx = make_eval_index(lst)
    click.echo(f"wrote {scenes} scene(s) of {views} views at {size}px: list {lst}, eval index {idx}")


# Subcommands defined in their own modules (each imports its heavy dependencies lazily).
# -- registered commands (one line each) --
from viewrt.bench import bench as _bench; main.add_command(_bench)  # noqa: E402,E702
from viewrt.infer import infer as _infer; main.add_command(_infer)  # noqa: E402, E702
from viewrt.calib import cli as _calib; [main.add_command(c) for c in (_calib.calib, _calib.calib_report, _calib.estimate)]  # noqa: E402, E702

if __name__ == "__main__":
    main()
