"""The one exception type of viewrt.

Every error a user can cause (bad path, bad shape or dtype, NaN input, full cache, a
checkpoint or manifest that does not match) is raised as :class:`ViewrtError` with a
message that names the thing and says what was expected and what came. The CLI turns it
into one line on stderr and a non-zero exit.
"""


class ViewrtError(Exception):
    """A problem the caller can fix; the message is meant for the user."""


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
            click.echo(f"error: {e.name} is not installed; install the extra that provides it (see README)", err=True)
            sys.exit(1)

    return wrapper
