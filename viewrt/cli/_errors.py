"""The one error wrapper of the CLI: every user error ends in one line on stderr and a
non-zero exit, never a traceback."""

from __future__ import annotations

import functools
import importlib.util
import math
import sys

import click

from viewrt.errors import ViewrtError


def cli_errors(fn):
    """Decorator for CLI commands: a ViewrtError (or a missing optional dependency) ends
    in one line on stderr and exit status 1, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
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
    missing = [pkg for mod, pkg in REPORT_MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise ViewrtError(
            f"{command} writes SSIM and plots, which need {', '.join(missing)}: "
            'pip install ".[report]" (from the viewrt clone) installs them'
        )


def finite_float(positive: bool):
    """A click type for a finite float (no nan/inf), > 0 (``positive``) or >= 0."""

    class _Finite(click.ParamType):
        name = "number"

        def convert(self, value, param, ctx):
            try:
                v = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
            if not math.isfinite(v) or (v <= 0 if positive else v < 0):
                self.fail(
                    f"{value!r}: expected a finite number {'> 0' if positive else '>= 0'}",
                    param,
                    ctx,
                )
            return v

    return _Finite()
