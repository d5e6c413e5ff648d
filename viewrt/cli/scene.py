"""``viewrt scene``: synthetic scenes in the dataset format."""

from __future__ import annotations

import shutil

import click

from viewrt.cli._errors import cli_errors
from viewrt.cli.options import out_option, seed_option, style_option
from viewrt.contract.manifest import load_manifest
from viewrt.data import STYLES, TRAJECTORIES, make_eval_index, make_synthetic_list
from viewrt.errors import ViewrtError
from viewrt.folders import check_creatable, locked_folder


@click.command("scene")
@out_option("Output folder (list, index, scenes).")
@click.option(
    "--views",
    type=click.IntRange(2, 10_000),
    default=16,
    show_default=True,
    help="Views per scene.",
)
@click.option(
    "--size",
    type=click.IntRange(8, 4096),
    default=None,
    help="Image size in pixels (default: the --for export's image size, else 128).",
)
@click.option(
    "--for",
    "for_export",
    type=click.Path(file_okay=False),
    default=None,
    help="An export folder: the scenes get its image size.",
)
@click.option(
    "--scenes",
    type=click.IntRange(1, 100_000),
    default=1,
    show_default=True,
    help="Number of scenes.",
)
@seed_option(help="Seed of the first scene.")
@style_option(
    STYLES,
    "classic",
    "multiview: scenes one view cannot explain (what the demo model is trained on).",
)
@click.option(
    "--trajectory",
    type=click.Choice(TRAJECTORIES),
    default="arc",
    show_default=True,
    help="Cameras: arc (views around the objects) or video (small steps between frames, for streaming "
    "models; ground-truth depth maps are written too).",
)
@click.option(
    "--depth", is_flag=True, help="Write each frame's ground-truth z-depth (depths/NNNNN.npy)."
)
@cli_errors
def scene(out_dir, views, size, for_export, scenes, seed, style, trajectory, depth):
    """Generate synthetic scenes in the LVSM RealEstate10K format (scene JSON + PNGs), with a
    list file and an evaluation index; with --trajectory video (or --depth), frame sequences
    with ground-truth depth for streaming models (viewrt infer --frames OUT/<scene>)."""
    if for_export is not None:
        export_size = load_manifest(for_export, verify=False).image_size
        if size is not None and size != export_size:
            click.echo(
                f"note: --size {size} differs from the image size of {for_export} ({export_size}); "
                "infer will resize and crop the frames",
                err=True,
            )
        size = size or export_size
    size = size or 128
    with_depth = depth or trajectory != "arc"
    # raw RGB bytes (PNG is smaller, but generating holds frames too) and float32 depth
    need = scenes * views * size * size * (3 + (4 if with_depth else 0))
    parent = check_creatable(out_dir, "--out")
    free = shutil.disk_usage(parent).free
    if need > free:
        raise ViewrtError(
            f"{scenes} scene(s) of {views} views at {size}px need up to {need / 2**30:.1f} GiB, "
            f"more than the {free / 2**30:.1f} GiB free under {parent}; ask for fewer or smaller scenes"
        )
    with locked_folder(
        out_dir, "--out", clean_on_error=True
    ):  # a failed or interrupted run leaves nothing half-written
        lst = make_synthetic_list(
            out_dir,
            scenes,
            n_views=views,
            size=size,
            seed=seed,
            style=style,
            trajectory=trajectory,
            depth=depth,
        )
        idx = make_eval_index(lst)
    click.echo(
        f"wrote {scenes} scene(s) of {views} views at {size}px: list {lst}, eval index {idx}"
    )
