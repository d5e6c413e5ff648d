"""``viewrt scene``: synthetic scenes in the dataset format."""

from __future__ import annotations

import click

from viewrt.cli._errors import cli_errors


@click.command("scene")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Output folder (list, index, scenes).")
@click.option("--views", type=click.IntRange(min=2), default=16, show_default=True, help="Views per scene.")
@click.option("--size", type=click.IntRange(min=8), default=None,
              help="Image size in pixels (default: the --for export's image size, else 128).")
@click.option("--for", "for_export", type=click.Path(file_okay=False), default=None,
              help="An export folder: the scenes get its image size.")
@click.option("--scenes", type=click.IntRange(min=1), default=1, show_default=True, help="Number of scenes.")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True, help="Seed of the first scene.")
@click.option("--style", type=click.Choice(["classic", "multiview"]), default="classic", show_default=True,
              help="multiview: scenes one view cannot explain (what the demo model is trained on).")
@cli_errors
def scene(out_dir, views, size, for_export, scenes, seed, style):
    """Generate synthetic scenes in the LVSM RealEstate10K format (scene JSON + PNGs), with a
    list file and an evaluation index."""
    from viewrt.data import make_eval_index, make_synthetic_list
    from viewrt.folders import locked_folder

    if for_export is not None:
        from viewrt.contract.manifest import load_manifest

        export_size = load_manifest(for_export, verify=False).image_size
        if size is not None and size != export_size:
            click.echo(f"note: --size {size} differs from the image size of {for_export} ({export_size}); "
                       "infer will resize and crop the frames", err=True)
        size = size or export_size
    size = size or 128
    with locked_folder(out_dir, "--out"):
        lst = make_synthetic_list(out_dir, scenes, n_views=views, size=size, seed=seed, style=style)
        idx = make_eval_index(lst)
    click.echo(f"wrote {scenes} scene(s) of {views} views at {size}px: list {lst}, eval index {idx}")
