"""Which frames of a scene are input views and which are targets (``viewrt infer``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from viewrt.data import select_index_frames
from viewrt.errors import ViewrtError

DEFAULT_TARGETS = 2
SYNTHETIC_FRAMES = 8


class SceneSkipped(ViewrtError):
    """The evaluation index lists the scene as null, or not at all (upstream skips it)."""


def default_targets(n_frames: int, count: int = DEFAULT_TARGETS) -> list[int]:
    """``count`` frames evenly spaced inside the sequence: for 2 targets, the frames nearest
    1/3 and 2/3 of the way (8 frames: 2 and 5), so inputs lie on both sides of them; the
    last ``count`` frames where the sequence is too short to spread them (3 frames: 1, 2)."""
    if n_frames < count + 1:
        raise ViewrtError(
            f"need at least {count + 1} frames for {count} default targets and one input view, got {n_frames}"
        )
    picks = sorted(
        {int(math.floor(i * (n_frames - 1) / (count + 1) + 0.5)) for i in range(1, count + 1)}
    )
    return (
        picks if len(picks) == count else list(range(n_frames - count, n_frames))
    )  # too few frames to spread


def select_frames(
    scene,
    views: int | None = None,
    targets: Sequence[int] | None = None,
    index: dict | None = None,
    max_views: int | None = None,
) -> dict:
    """Choose the input frames (added in order) and the target frames of a scene.

    With an evaluation ``index``: a scene it lists gets its inputs from the entry's
    context by upstream's rule (:func:`viewrt.data.select_index_frames`: ``views`` of
    2 from ``[0, 3, 6, 9]`` is ``[0, 9]``; more views than the context lists are spread
    between its first and last frame) and the entry's targets; a scene it lists as null
    or does not list is skipped, as upstream. Without an index the targets are
    ``targets`` or :func:`default_targets`, and the inputs are the first ``views`` frames
    that are not targets (default: all of them, at most ``max_views``).

    Args:
        scene: a :class:`viewrt.data.Scene`.
        views: number of input views (>= 1), or None.
        targets: target frame indices, or None.
        index: an evaluation index from :func:`viewrt.data.load_eval_index`, or None.
        max_views: the renderer's cache capacity (None: no limit).
    Returns:
        ``{"inputs": [...], "targets": [...], "selection": str}``.
    Raises:
        SceneSkipped: an index is given and lists the scene as null, or not at all.
        ViewrtError: more views than the scene (or the cache) has, an index out of range,
            or targets given together with an index entry; the message names the scene.
    """
    n = len(scene.frames)
    where = f"scene {scene.name!r} ({scene.path})"
    if views is not None and views < 1:
        raise ViewrtError(f"--views must be at least 1, got {views}")
    if index is not None:
        if targets is not None:
            raise ViewrtError(
                f"{where}: --targets and the evaluation index both choose targets; pass one of them"
            )
        entry = index.get(scene.name)
        if entry is None:
            how = "lists it as null" if scene.name in index else "does not list it"
            raise SceneSkipped(f"{where}: the evaluation index {how} (skipped, as upstream)")
        inputs, chosen = select_index_frames(entry["context"], views), list(entry["target"])
        selection = "evaluation index (upstream's rule)"
    else:
        chosen = list(targets) if targets is not None else default_targets(n)
        rest = [i for i in range(n) if i not in chosen]
        if views is not None and views > len(rest):
            raise ViewrtError(
                f"--views {views}: {where} has {n} frames, {len(chosen)} of them targets {chosen}: at most {len(rest)} input views"
            )
        count = (
            views
            if views is not None
            else len(rest)
            if max_views is None
            else min(len(rest), max_views)
        )
        inputs = rest[:count]
        selection = "first frames that are not targets"
        if not inputs:
            raise ViewrtError(
                f"{where}: no frame left as an input view (targets {chosen} of {n} frames)"
            )
    for label, idx in (("input", inputs), ("target", chosen)):
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise ViewrtError(
                f"{where}: {label} frame(s) {bad} out of range; the scene has {n} frames (0..{n - 1})"
            )
    if max_views is not None and len(inputs) > max_views:
        raise ViewrtError(
            f"{where}: {len(inputs)} input views exceed the cache capacity of {max_views} views (re-export with a larger --max-views)"
        )
    return {"inputs": inputs, "targets": chosen, "selection": selection}
