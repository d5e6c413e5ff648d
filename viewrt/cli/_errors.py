"""The one error wrapper of the CLI: every user error ends in one line on stderr and a
non-zero exit, never a traceback."""

from __future__ import annotations

from viewrt.errors import ViewrtError


def cli_errors(fn):
    """Decorator for CLI commands: a ViewrtError (or a missing optional dependency) ends
    in one line on stderr and exit status 1, not a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import sys

        import click

        try:
            return fn(*args, **kwargs)
        except ViewrtError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except ModuleNotFoundError as e:
            click.echo(
                f"error: {e.name} is not installed; install the extra that provides it (see README)",
                err=True,
            )
            sys.exit(1)

    return wrapper


REPORT_MODULES = {"skimage": "scikit-image", "matplotlib": "matplotlib"}


def require_report_extra(command: str) -> None:
    """Raise ViewrtError naming the install command when the report extra (SSIM, plots) is
    missing, so that ``command`` fails before it writes anything."""
    import importlib.util

    missing = [pkg for mod, pkg in REPORT_MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise ViewrtError(
            f"{command} writes SSIM and plots, which need {', '.join(missing)}: "
            'pip install ".[report]" (from the viewrt clone) installs them'
        )
