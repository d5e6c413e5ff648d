"""One readable line for many failures: counts by kind, and the first item of each.

A run over thousands of scenes that fail for one reason (data moved, a wrong root) must not
end in a line listing every path. :func:`summarize_failures` groups the per-scene errors by
kind (the error message without its paths and its scene/frame prefix) and names the first
item of each kind; the full messages stay in the run's summary.json. Leaf module: no
imports from the rest of viewrt.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

__all__ = ["failure_kind", "summarize_failures"]

_CONTEXT = re.compile(r"^scene '.*?' \(.*?\)(?: frame \d+)?: ")
_PATHLIKE = re.compile(
    r"[^\s'\"(]*[/\\][^\s'\"]*?(?=[:;,)'\"]*(?:\s|$))"
)  # without trailing punctuation
_LEAD = re.compile(r"^[\s:]*(frame \d+\b)?[\s:]*")


def failure_kind(message: str) -> str:
    """The kind of a failure: the message up to its first ``": "`` or ``" ("``, after the
    ``"scene 'x' (path) frame N: "`` prefix, without path-like words; e.g.
    ``"scene file not found: /a/b.json (also tried: ...)"`` -> ``"scene file not found"``,
    ``"cannot read image /a/1.png: ..."`` -> ``"cannot read image"``,
    ``"/a/s.json frame 1: missing key 'w2c'"`` -> ``"missing key 'w2c'"``."""
    text = _CONTEXT.sub("", message.strip())
    text = _PATHLIKE.sub("", text)  # first: a path may hold ": " or " ("
    text = _LEAD.sub("", text)  # what named the file: ": ", "frame 3: "
    head = re.split(r": | \(|; ", text, maxsplit=1)[0]
    return " ".join(head.split()).rstrip(":") or "error"


def _first_path(message: str) -> str | None:
    m = _PATHLIKE.search(_CONTEXT.sub("", message.strip()))
    if m is None:
        return None
    path = m.group(0)
    name = re.split(r"[/\\]", path)[-1]
    return f".../{name}" if name else path


def _item(failure: Mapping) -> str:
    """How to name one failed item: the scene's name where it was read, and the first path
    of its error, shortened to its file name."""
    error = str(failure.get("error", ""))
    scene = str(failure.get("scene", ""))
    path = _first_path(error)
    named = scene and scene != str(failure.get("scene_json", scene))
    if named and path:
        return f"{scene}, {path}"
    return (scene if named else None) or path or scene or "?"


def summarize_failures(
    failures: Sequence[Mapping],
    n_total: int,
    where: str | None = None,
    *,
    what: str = "scene",
    max_kinds: int = 3,
) -> str:
    """One line saying how many items failed, of which kinds, and the first of each kind.

    Example: ``"19 of 19 scenes failed: scene file not found (first: .../0068e97c1c1f61aa.json);
    all in out/summary.json"``; with several kinds, each with its count, most frequent
    first: ``"3 of 4 scenes failed: 2 image not found (first: s1, .../00002.png),
    1 scene file not found (first: .../x.json); all in out/summary.json"``.

    Args:
        failures: records with ``"error"`` (the message) and optionally ``"scene"`` (its
            name, or its path when the file could not be read) and ``"scene_json"``.
        n_total: how many items were run.
        where: the file that holds every message, or None.
        what: the item's noun, singular.
        max_kinds: kinds named; the rest are counted as "N more of M other kinds".
    Returns:
        A single line (no newline), of a length that does not grow with the number of
        failures.
    """
    n = len(failures)
    noun = what if n_total == 1 else f"{what}s"
    if n == 0:
        return f"0 of {n_total} {noun} failed"
    kinds = Counter(failure_kind(str(f.get("error", ""))) for f in failures)
    first: dict[str, Mapping] = {}
    for f in failures:
        first.setdefault(failure_kind(str(f.get("error", ""))), f)
    ranked = kinds.most_common()
    parts = []
    for kind, count in ranked[:max_kinds]:
        prefix = "" if len(ranked) == 1 else f"{count} "
        parts.append(f"{prefix}{kind} (first: {_item(first[kind])})")
    rest = ranked[max_kinds:]
    if rest:
        parts.append(
            f"{sum(c for _, c in rest)} more of {len(rest)} other kind{'s' if len(rest) > 1 else ''}"
        )
    tail = f"; all in {where}" if where else ""
    return f"{n} of {n_total} {noun} failed: {', '.join(parts)}{tail}"
