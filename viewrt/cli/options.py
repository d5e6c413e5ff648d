"""The options, arguments and parameter types that more than one subcommand takes: one
definition per flag name, and one meaning per flag name.

What each shared name means, in every subcommand that takes it:

- ``EXPORT_DIR`` (argument): an export folder (manifest.json and the graphs).
- ``--out``: the folder the command writes.
- ``--precision``: the graph/engine precision, a row of :mod:`viewrt.contract.precision`
  (fp32, fp16, int8, fp8); each command offers the rows it can make or read. Two other
  precisions have their own names: OpenVINO's compute precision is ``--inference-precision``
  (``viewrt infer``; the backend option ``inference_precision``, OpenVINO's
  INFERENCE_PRECISION_HINT) and training's mixed precision is ``--autocast`` (``viewrt
  train``). The old spellings are refused with a hint (:func:`refused_option`).
- ``--seed``: the seed of generated scenes or inputs, 0 .. 2**31-1.
- ``--views``: how many views: one count (``infer``, ``scene``) or a list of counts
  (``bench``, ``calib-report``, parsed by :class:`IntList`).
- ``--backend`` / ``--backends``: names of the runtime registry (and the PyTorch baselines).
- ``--threads``: CPU threads; ``--device``: where a backend runs.
- ``--max-views``: a number of views in the cache, at least 1.
- ``--style``: the style of synthetic scenes (:data:`viewrt.data.STYLES`; ``train`` also
  takes ``mixed``: the styles in turn).
- ``--synthetic``: a number (1..1000) of generated synthetic scenes; ``--scenes`` is a number
  of scenes too (``scene``, ``train``), and a scene list file is ``--list`` (``infer``,
  ``train``, ``calib``, ``calib-report``; calib's old ``--scenes FILE`` is refused with a hint).

Parse errors are click usage errors: one line and exit status 2 (see viewrt/cli/__init__.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import click

from viewrt.contract.precision import PRECISIONS
from viewrt.errors import ViewrtError

SEED = click.IntRange(0, 2**31 - 1)
MAX_SYNTHETIC = 1000


# --------------------------------------------------------------------------- parsers
# Each parser raises ValueError with the reason; the public functions name the option in a
# ViewrtError, the click types hand the reason to click (which names the option itself).


def _int_list(text: str) -> list[int]:
    out = set()
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        try:
            v = int(item)
        except ValueError:
            raise ValueError(
                f"{item!r} is not an integer (expected a comma-separated list such as 1,2,4)"
            ) from None
        if v < 1:
            raise ValueError(f"values must be >= 1, got {v}")
        out.add(v)
    if not out:
        raise ValueError("expected at least one value")
    return sorted(out)


def _frame_indices(text: str) -> list[int]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items or not all(re.fullmatch(r"\d+", t) for t in items):
        raise ValueError(f"{text!r}: expected a comma-separated list of frame indices, e.g. 2,5")
    out = [int(t) for t in items]
    if len(set(out)) != len(out):
        raise ValueError(f"{text!r}: a frame is listed twice")
    return out


def _backends(text: str, known: Sequence[str]) -> list[str]:
    names = [b.strip() for b in str(text).split(",") if b.strip()]
    unknown = [b for b in names if b not in known]
    if unknown:
        raise ValueError(
            f"unknown backend{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"expected some of {', '.join(known)}"
        )
    if not names:
        raise ValueError("expected at least one backend")
    return list(dict.fromkeys(names))


def parse_int_list(text: str, what: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (sorted, unique, all >= 1).

    Raises: ViewrtError naming the option ``what`` and the bad item.
    """
    try:
        return _int_list(text)
    except ValueError as e:
        raise ViewrtError(f"{what}: {e}") from None


def parse_frame_indices(text: str | None, what: str = "--targets") -> list[int] | None:
    """``"2,5"`` -> ``[2, 5]``: frame indices (>= 0) in the order given, each once (None
    stays None: the command's default).

    Raises: ViewrtError naming the option ``what``.
    """
    if text is None:
        return None
    try:
        return _frame_indices(text)
    except ValueError as e:
        raise ViewrtError(f"{what} {e}") from None


def parse_backends(text: str | None, known: Sequence[str]) -> list[str] | None:
    """Comma-separated backend names -> the names in order, without repeats (None stays
    None: the command's default set).

    Raises: ViewrtError on an unknown name or an empty list.
    """
    if text is None:
        return None
    try:
        return _backends(text, known)
    except ValueError as e:
        raise ViewrtError(f"--backends: {e}") from None


class _Parsed(click.ParamType):
    """A click type from a parser ``text -> value`` that raises ValueError."""

    def parse(self, text: str):
        raise NotImplementedError

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value  # already parsed (a default given as a value)
        try:
            return self.parse(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class IntList(_Parsed):
    """``"1,2,4"`` -> ``[1, 2, 4]``: counts, sorted, unique, all >= 1."""

    name = "N,N,..."

    def parse(self, text):
        return _int_list(text)


class FrameIndices(_Parsed):
    """``"2,5"`` -> ``[2, 5]``: frame indices in the order given, each once."""

    name = "I,I,..."

    def parse(self, text):
        return _frame_indices(text)


class BackendList(_Parsed):
    """``"ort,openvino"`` -> ``["ort", "openvino"]``: names out of ``known``, in order,
    without repeats."""

    name = "NAME,NAME,..."

    def __init__(self, known: Sequence[str] | Callable[[], Sequence[str]]):
        self._known = known  # a callable is read when the command runs (registered backends)

    @property
    def known(self) -> list[str]:
        return list(self._known() if callable(self._known) else self._known)

    def parse(self, text):
        return _backends(text, self.known)


# --------------------------------------------------------------------------- options


def export_dir_argument():
    """``EXPORT_DIR``: an export folder (existence is checked by the command's layer)."""
    return click.argument("export_dir", type=click.Path(file_okay=False))


def out_option(
    help: str = "Output folder.", default: str | None = None, required: bool | None = None
):
    """``--out`` -> ``out_dir``: the folder the command writes (required unless ``default``
    is given or ``required`` is False)."""
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False),
        required=(default is None) if required is None else required,
        default=default,
        show_default=default is not None,
        help=help,
    )


def precision_option(
    choices: Sequence[str] = tuple(PRECISIONS),
    default: str | None = None,
    required: bool = False,
    help: str | None = None,
):
    """``--precision``: a graph/engine precision, one of ``choices`` (rows of the precision
    table)."""
    unknown = set(choices) - set(PRECISIONS)
    if unknown:  # a programming error, not a user's
        raise ValueError(
            f"--precision choices {sorted(unknown)} are not rows of the precision table"
        )
    return click.option(
        "--precision",
        type=click.Choice(list(choices)),
        default=default,
        required=required,
        show_default=default is not None,
        help=help or f"Graph precision: {', '.join(choices)}.",
    )


def seed_option(default: int | None = 0, help: str = "Seed of the generated scene(s)."):
    """``--seed``: 0 .. 2**31-1 (None as default: fresh)."""
    return click.option(
        "--seed", type=SEED, default=default, show_default=default is not None, help=help
    )


def int_list_option(name: str, default: str, help: str):
    """A comma-separated list of counts (e.g. ``--views 1,2,4``) -> sorted unique ints."""
    return click.option(name, type=IntList(), default=default, show_default=True, help=help)


def max_views_option(default: int | None = None, help: str = "Views in the cache."):
    """``--max-views``: a number of cached views, at least 1."""
    return click.option(
        "--max-views",
        type=click.IntRange(min=1),
        default=default,
        show_default=default is not None,
        help=help,
    )


def list_option(help: str, dest: str = "list_file"):
    """``--list FILE``: a scene list file (dataset format: one scene JSON per line)."""
    return click.option("--list", dest, type=click.Path(dir_okay=False), default=None, help=help)


def synthetic_option(help: str):
    """``--synthetic N``: N (1..1000) generated synthetic scenes."""
    return click.option(
        "--synthetic", type=click.IntRange(1, MAX_SYNTHETIC), default=None, help=help
    )


def style_option(choices: Sequence[str], default: str | None, help: str):
    """``--style``: the style of synthetic scenes, one of ``choices``."""
    return click.option(
        "--style",
        type=click.Choice(list(choices)),
        default=default,
        show_default=default is not None,
        help=help,
    )


def threads_option(help: str = "CPU threads (default: the library's own choice)."):
    """``--threads``: a positive number of CPU threads, or None."""
    return click.option("--threads", type=click.IntRange(min=1), default=None, help=help)


def device_option(help: str, choices: Sequence[str] | None = None, default: str | None = None):
    """``--device``: where a backend runs (free text checked by the backend, or ``choices``)."""
    return click.option(
        "--device",
        type=click.Choice(list(choices)) if choices else str,
        default=default,
        show_default=default is not None,
        help=help,
    )


class NameChoice(click.Choice):
    """A click Choice whose names may come from a function, read when the command runs
    (the backend registry: a backend registered after import counts)."""

    def __init__(self, names: Sequence[str] | Callable[[], Sequence[str]]):
        self._names = names
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names() if callable(self._names) else self._names)

    @choices.setter
    def choices(self, _value) -> None:
        pass  # the names are the one list


def backend_option(names: Sequence[str] | Callable[[], Sequence[str]], default: str, help: str):
    """``--backend``: one name of ``names`` (a function is read when the command runs)."""
    return click.option(
        "--backend", type=NameChoice(names), default=default, show_default=True, help=help
    )


def backends_option(names: Sequence[str] | Callable[[], Sequence[str]], help: str):
    """``--backends``: a comma-separated list of ``names`` (None: the command's default set);
    ``names`` may be a function, read when the command runs (backends registered since)."""
    return click.option("--backends", type=BackendList(names), default=None, help=help)


def refused_option(old: str, hint: Callable[[str], str]):
    """A hidden option for the old spelling of a renamed flag: given, it ends the command
    with a one-line usage error, ``hint(value)``, before anything else is checked."""

    def refuse(ctx, param, value):
        if value is not None:
            raise click.UsageError(hint(value), ctx)

    return click.option(old, hidden=True, expose_value=False, is_eager=True, callback=refuse)
