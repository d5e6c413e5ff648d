"""``viewrt info``: what an export folder holds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from viewrt.cli._errors import cli_errors
from viewrt.cli.options import export_dir_argument
from viewrt.contract.manifest import load_manifest


@click.command("info")
@export_dir_argument()
@cli_errors
def info(export_dir):
    """Print what an export folder holds (model, tensors, cache size, engines)."""
    m = load_manifest(Path(export_dir))
    click.echo(json.dumps(m.summary(), indent=1))
