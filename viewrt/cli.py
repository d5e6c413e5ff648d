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
@click.option("--preset", default="small", show_default=True, help="Model preset (tiny, small, demo [trained, 64 px], res256, res512).")
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
    source = checkpoint or (report.path if report is not None else None)  # the demo preset's shipped weights file
    manifest = export_model(model, out_dir, preset, max_views, precision, force, source, seed)
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
@click.option("--style", type=click.Choice(["classic", "multiview"]), default="classic", show_default=True,
              help="multiview: scenes one view cannot explain (what the demo model is trained on).")
@cli_errors
def scene(out_dir, views, size, scenes, seed, style):
    """Generate synthetic scenes in the LVSM RealEstate10K format (scene JSON + PNGs)."""
    from viewrt.data import make_eval_index, make_synthetic_list

    lst = make_synthetic_list(out_dir, scenes, n_views=views, size=size, seed=seed, style=style)
    idx = make_eval_index(lst)
    click.echo(f"wrote {scenes} scene(s) of {views} views at {size}px: list {lst}, eval index {idx}")


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/train/demo", show_default=True,
              help="Run folder: checkpoint.pt, log.json, curves.png, model.safetensors (resumed if a checkpoint is there).")
@click.option("--steps", type=int, default=None, help="Training steps (default: the demo recipe's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the model init, the scenes and every draw.")
@click.option("--scenes", "n_scenes", type=int, default=None, help="Synthetic training scenes (default: the demo recipe's).")
@click.option("--list", "scene_list", type=click.Path(dir_okay=False), default=None, help="Train on a scene list (dataset format) instead.")
@click.option("--batch", type=int, default=None, help="Scenes per step (default: the demo recipe's).")
@click.option("--lr", type=float, default=None, help="Peak learning rate (default: the demo recipe's).")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
              help="auto: bf16 autocast where the CPU has bf16 instructions (faster on this project's CPU), else fp32.")
@click.option("--no-resume", is_flag=True, help="Start over even if OUT holds a checkpoint.")
@click.option("--eval", "eval_only", is_flag=True, help="Only evaluate: PSNR/SSIM by input views on held-out scenes.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="With --eval: weights to evaluate (default: the demo preset).")
@click.option("--eval-scenes", type=int, default=50, show_default=True, help="With --eval: held-out scenes.")
@cli_errors
def train(out_dir, steps, seed, n_scenes, scene_list, batch, lr, precision, no_resume, eval_only, checkpoint, eval_scenes):
    """Train the demo Efficient-LVSM on synthetic scenes (needs torch), or evaluate it (--eval)."""
    from viewrt.models import train as tr

    if eval_only:
        res = tr.run_eval(out_dir, checkpoint, eval_scenes)
        click.echo(res["markdown"])
        return
    recipe = tr.demo_recipe(steps=steps, seed=seed, n_scenes=n_scenes, scene_list=scene_list, batch=batch, lr=lr, precision=precision)
    log = tr.train(recipe, out_dir, resume=not no_resume, echo=click.echo)
    click.echo(f"trained {log['steps_done']} steps in {log['wall_s'] / 60:.1f} min; wrote {out_dir}/model.safetensors, log.json, curves.png")


# Subcommands defined in their own modules (each imports its heavy dependencies lazily).
# -- registered commands (one line each) --
from viewrt.bench import bench as _bench; main.add_command(_bench)  # noqa: E402,E702
from viewrt.infer import infer as _infer; main.add_command(_infer)  # noqa: E402, E702

if __name__ == "__main__":
    main()
