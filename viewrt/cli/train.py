"""``viewrt train``: train the demo Efficient-LVSM on synthetic scenes, or evaluate it.

viewrt.models (torch) is imported when the command runs (see viewrt/cli/__init__.py).
"""

from __future__ import annotations

import click

from viewrt.cli._errors import cli_errors, finite_float
from viewrt.cli.options import (
    list_option,
    out_option,
    refused_option,
    seed_option,
    style_option,
)
from viewrt.data import STYLES
from viewrt.errors import ViewrtError
from viewrt.folders import check_creatable

AUTOCAST = ("auto", "bf16", "off")


def _precision_hint(value: str) -> str:
    """The one line for the old ``viewrt train --precision``."""
    autocast = {"fp32": "off", "f32": "off"}.get(value, value)
    return (
        f"--precision {value} is the graph precision (viewrt export, build, calib, estimate); "
        f"for training's mixed precision use --autocast {autocast if autocast in AUTOCAST else 'auto|bf16|off'}"
    )


@click.command("train")
@out_option(
    "Run folder: checkpoint.pt, log.json, curves.png, model.safetensors (resumed if a checkpoint is there).",
    default="out/train/demo",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Training steps (default: the demo recipe's).",
)
@seed_option(help="Seed of the model init, the scenes and every draw.")
@click.option(
    "--scenes",
    "n_scenes",
    type=click.IntRange(min=1),
    default=None,
    help="Synthetic training scenes (default: the demo recipe's).",
)
@list_option("Train on a scene list file (dataset format) instead.", dest="scene_list")
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=None,
    help="Scenes per step (default: the demo recipe's).",
)
@click.option(
    "--lr",
    type=finite_float(True),
    default=None,
    help="Peak learning rate (default: the demo recipe's).",
)
@click.option(
    "--autocast",
    type=click.Choice(AUTOCAST),
    default="auto",
    show_default=True,
    help="bf16 autocast of the forward pass; auto: where the CPU has bf16 instructions (faster on this project's CPU), else off (fp32).",
)
@refused_option("--precision", _precision_hint)
@click.option("--no-resume", is_flag=True, help="Start over even if OUT holds a checkpoint.")
@click.option(
    "--eval",
    "eval_only",
    is_flag=True,
    help="Only evaluate: PSNR/SSIM by input views on held-out scenes.",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --eval: weights to evaluate (default: the demo preset).",
)
@click.option(
    "--eval-scenes",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="With --eval: held-out scenes.",
)
@style_option(
    (*STYLES, "mixed"),
    None,
    "Style of the synthetic scenes (mixed: the styles in turn); with --eval, of the held-out scenes. Default: multiview.",
)
@click.option(
    "--init",
    "init",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Start from these weights (a fine-tune; e.g. models/weights/demo.safetensors).",
)
@cli_errors
def train(
    out_dir,
    steps,
    seed,
    n_scenes,
    scene_list,
    batch,
    lr,
    autocast,
    no_resume,
    eval_only,
    checkpoint,
    eval_scenes,
    style,
    init,
):
    """Train the demo Efficient-LVSM on synthetic scenes (needs torch), or evaluate it (--eval)."""
    from viewrt.models import train as tr

    if checkpoint is not None and not eval_only:
        raise ViewrtError(
            "--checkpoint goes with --eval (training starts from the recipe's init, or resumes OUT)"
        )
    check_creatable(out_dir, "--out")
    if eval_only:
        res = tr.run_eval(out_dir, checkpoint, eval_scenes, style or "multiview")
        click.echo(res["markdown"])
        return
    recipe = tr.demo_recipe(
        steps=steps,
        seed=seed,
        n_scenes=n_scenes,
        scene_list=scene_list,
        batch=batch,
        lr=lr,
        autocast=autocast,
        style=style,
        init=init,
    )
    log = tr.train(recipe, out_dir, resume=not no_resume, echo=click.echo)
    click.echo(
        f"trained {log['steps_done']} steps in {log['wall_s'] / 60:.1f} min; wrote {out_dir}/model.safetensors, log.json, curves.png"
    )
