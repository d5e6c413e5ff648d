"""The ``viewrt`` command line: one click group, one module per subcommand. This package
is the one place that composes the layers (models, export, calib, runtime).

Imports (``viewrt --help`` must stay fast, and work where torch is absent):

- At module top: viewrt's floor (errors, folders, data, geometry, contract), the runtime
  (viewrt.runtime: numpy only; its backends import their libraries when they activate),
  the shared options (viewrt/cli/options.py), and click.
- Inside the command that runs them: the layers that import torch or onnx when imported,
  viewrt.models, viewrt.export and viewrt.calib (each module's docstring names its own),
  and heavy third-party packages (torch, tqdm). tests/cli/test_cli_rules.py checks both
  halves.

Options that more than one subcommand takes are defined once, in viewrt/cli/options.py,
and a flag name means one thing everywhere (``--precision`` is the graph/engine precision).

Errors a user can cause end in one line on stderr: exit status 1 (ViewrtError), or 2 for
click's usage errors.
"""

from __future__ import annotations

import logging
import sys

import click


class _OneLineGroup(click.Group):
    """click's own usage errors (unknown option, bad value, missing argument) as one line on
    stderr too, like every other user error: ``error: <what>  (see viewrt CMD --help)``."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.UsageError as e:
            cmd = e.ctx.command_path if e.ctx is not None else "viewrt"
            click.echo(f"error: {e.format_message()} (see `{cmd} --help`)", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="viewrt")
def main():
    """viewrt: export KV-cached view-synthesis transformers (Efficient-LVSM) and run
    them view by view on ONNX Runtime, OpenVINO or TensorRT."""
    _log_to_stderr()


def _log_to_stderr() -> None:
    """Messages of the layers (logging.getLogger("viewrt.*")) go to stderr as plain lines."""

    class _Stderr(logging.Handler):
        _viewrt_cli = True

        def emit(self, record):  # the stderr of the moment (click's test runner swaps it)
            click.echo(self.format(record), err=True)

    log = logging.getLogger("viewrt")
    if not any(getattr(h, "_viewrt_cli", False) for h in log.handlers):
        log.addHandler(_Stderr())
        log.setLevel(logging.INFO)
        log.propagate = False


# One line per subcommand (each module defines one click command).
from viewrt.cli.bench import bench  # noqa: E402
from viewrt.cli.bench_cache import bench_cache  # noqa: E402
from viewrt.cli.build import build  # noqa: E402
from viewrt.cli.calib import calib, calib_report, estimate  # noqa: E402
from viewrt.cli.export import export  # noqa: E402
from viewrt.cli.infer import infer  # noqa: E402
from viewrt.cli.info import info  # noqa: E402
from viewrt.cli.scene import scene  # noqa: E402
from viewrt.cli.serve import serve, serve_bench  # noqa: E402
from viewrt.cli.studio import studio  # noqa: E402
from viewrt.cli.train import train  # noqa: E402

for _command in (
    export,
    build,
    info,
    scene,
    infer,
    bench,
    bench_cache,
    calib,
    calib_report,
    estimate,
    train,
):
    main.add_command(_command)
main.add_command(serve)
main.add_command(serve_bench)
main.add_command(studio)

if __name__ == "__main__":
    main()
