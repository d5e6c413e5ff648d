"""Readers of the LVSM-processed RealEstate10K format: list files, scene JSONs and
evaluation indices (described in full in ``docs/data.md``).

* list file: one scene JSON path per line (blank lines and ``#`` comments skipped,
  relative paths against the list's folder);
* scene JSON: ``{"scene_name": str, "frames": [{"image_path": str,
  "fxfycxcy": [fx, fy, cx, cy], "w2c": 4x4}]}``; relative image paths are against the
  JSON's folder; intrinsics are in pixels of the stored image;
* evaluation index (pixelSplat): ``{scene_name: {"context": [a, b], "target": [...]} | null}``,
  read by :func:`load_eval_index`; :func:`select_index_frames` is upstream's rule for
  choosing the input views from it.

Readers validate everything up front and raise :class:`~viewrt.errors.ViewrtError`
naming the file, frame index and key; images are not opened here (see
:func:`viewrt.data.images.load_frame`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from viewrt.data.roots import DataRoots, not_found_message
from viewrt.errors import ViewrtError
from viewrt.geometry import check_camera, w2c_to_c2w

__all__ = [
    "Frame",
    "Scene",
    "load_scene",
    "load_scene_list",
    "load_eval_index",
    "select_index_frames",
]


@dataclass
class Frame:
    """One posed image of a scene (the image itself is read lazily by :func:`load_frame`).

    Attributes:
        image_path: absolute or cwd-relative path of the image file (already resolved
            against the scene JSON's folder and by :class:`DataRoots`: the first place
            that exists, else the path as written).
        fxfycxcy: float64 [4] intrinsics in pixels of the stored image.
        w2c: float64 [4, 4] rigid world-to-camera pose.
        tried: where the image was looked for, when none of those places exists (for the
            error of :func:`load_frame`); empty when ``image_path`` was found.
        depth_path: the frame's ground-truth z-depth (``.npy``, float ``[H, W]`` in pixels
            of the stored image, 0 where there is none), from the optional ``depth_path``
            key (synthetic sequences write it), resolved as ``image_path``; None without.
    """

    image_path: Path
    fxfycxcy: np.ndarray
    w2c: np.ndarray
    tried: tuple[Path, ...] = field(default=(), repr=False, compare=False)
    depth_path: Path | None = None

    @property
    def c2w(self) -> np.ndarray:
        """float64 [4, 4] camera-to-world pose (rigid inverse of ``w2c``)."""
        return w2c_to_c2w(self.w2c, name=f"{self.image_path} w2c")


@dataclass
class Scene:
    """A scene read from one JSON file.

    Attributes:
        name: ``scene_name`` from the JSON.
        frames: the frames, in file order (indices of the eval index refer to these).
        path: the scene JSON's path.
    """

    name: str
    frames: list[Frame]
    path: Path


def _read_json(path: Path, what: str) -> Any:
    if not path.exists():
        raise ViewrtError(f"{what} not found: {path}")
    if not path.is_file():
        raise ViewrtError(f"{what} is not a file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ViewrtError(f"cannot read {what} {path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ViewrtError(
            f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def load_scene(json_path: str | Path, roots: DataRoots | None = None) -> Scene:
    """Read and validate a scene JSON (images are not opened, only looked for).

    Args:
        json_path: path of the scene JSON (e.g. a line of a list file).
        roots: where to look for the JSON and its images when their recorded paths do
            not exist (see :class:`DataRoots`); default ``DataRoots()``: no prefix maps,
            the fallback under the JSON's own roots.

    Returns:
        The :class:`Scene` (``path``: where the JSON was found); relative ``image_path``
        entries are joined to the JSON's folder, and every image path is resolved by
        ``roots`` (a missing image is an error of :func:`load_frame`, not here).

    Raises:
        ViewrtError: the file is not found (the message gives the path as written and the
            places tried), unreadable, invalid JSON, a missing or mistyped key, no frames,
            or a frame (named by index) whose ``fxfycxcy`` is not 4 finite numbers with
            fx, fy > 0 or whose ``w2c`` is not a finite rigid 4x4.
    """
    roots = roots if roots is not None else DataRoots()
    path, tried = roots.resolve(json_path, None, "scene")
    if tried:
        raise ViewrtError(not_found_message("scene file", path, tried))
    data = _read_json(path, "scene file")
    if not isinstance(data, dict):
        raise ViewrtError(f"{path}: expected a JSON object at the top, got {type(data).__name__}")
    for key in ("scene_name", "frames"):
        if key not in data:
            raise ViewrtError(f"{path}: missing key {key!r}")
    name = data["scene_name"]
    if not isinstance(name, str) or not name:
        raise ViewrtError(f"{path}: 'scene_name' must be a non-empty string, got {name!r}")
    raw_frames = data["frames"]
    if not isinstance(raw_frames, list):
        raise ViewrtError(f"{path}: 'frames' must be a list, got {type(raw_frames).__name__}")
    if not raw_frames:
        raise ViewrtError(f"{path}: 'frames' is empty, expected at least one frame")
    frames = []
    own = (path.parent, path.parent.parent)  # <root>/metadata/<scene>.json -> <root>
    for i, raw in enumerate(raw_frames):
        where = f"{path} frame {i}"
        if not isinstance(raw, dict):
            raise ViewrtError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        for key in ("image_path", "fxfycxcy", "w2c"):
            if key not in raw:
                raise ViewrtError(f"{where}: missing key {key!r}")
        image_path = raw["image_path"]
        if not isinstance(image_path, str) or not image_path:
            raise ViewrtError(
                f"{where}: 'image_path' must be a non-empty string, got {image_path!r}"
            )
        c2w = w2c_to_c2w(raw["w2c"], name=f"{where} 'w2c'")
        _, fxfycxcy = check_camera(c2w, raw["fxfycxcy"], name=where)
        w2c = np.array(raw["w2c"], dtype=np.float64)
        img, img_tried = roots.resolve(image_path, path.parent, "image", own)
        depth = raw.get("depth_path")
        if depth is not None and (not isinstance(depth, str) or not depth):
            raise ViewrtError(f"{where}: 'depth_path' must be a non-empty string, got {depth!r}")
        depth_path = roots.resolve(depth, path.parent, "image", own)[0] if depth else None
        frames.append(
            Frame(
                image_path=img, fxfycxcy=fxfycxcy, w2c=w2c, tried=img_tried, depth_path=depth_path
            )
        )
    return Scene(name=name, frames=frames, path=path)


def load_scene_list(list_path: str | Path) -> list[Path]:
    """Read a list file: one scene JSON path per line.

    Blank lines and lines starting with ``#`` are skipped; surrounding whitespace is
    stripped; relative paths are joined to the list file's folder. Scene files are not
    checked here (callers load each one and report per-scene failures): pass
    ``DataRoots(...).for_list(list_path)`` to :func:`load_scene` so that absolute paths
    written on another machine are also looked for under the list's own root.

    Args:
        list_path: path of the list file.

    Returns:
        Scene JSON paths in file order.

    Raises:
        ViewrtError: if the list file is missing/unreadable or names no scene.
    """
    path = Path(list_path)
    if not path.is_file():
        raise ViewrtError(f"scene list not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ViewrtError(f"cannot read scene list {path}: {exc}") from None
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if first[:1] in ("{", "["):
        raise ViewrtError(
            f"{path} is JSON, not a list of scene files (an evaluation index goes to --index, "
            "a scene JSON to --scene)"
        )
    out = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        p = Path(entry)
        out.append(p if p.is_absolute() else path.parent / p)
    if not out:
        raise ViewrtError(f"scene list {path} names no scene (only blank lines or comments)")
    return out


def _index_list(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise ViewrtError(f"{where}: expected a non-empty list of frame indices, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ViewrtError(
                f"{where}: expected non-negative integer frame indices, got {value!r}"
            )
    return list(value)


def load_eval_index(path: str | Path) -> dict[str, dict[str, list[int]] | None]:
    """Read a pixelSplat evaluation index.

    Args:
        path: JSON file ``{scene_name: {"context": [...], "target": [...]} | null}``.

    Returns:
        ``{scene_name: {"context": [int, ...], "target": [int, ...]} | None}`` in file
        order; ``None`` means "skip this scene" (as upstream). Other keys of an entry are
        dropped. Indices are not checked against the scene's frame count here.

    Raises:
        ViewrtError: missing file, invalid JSON, a non-object top level, or an entry
            (named by scene) without non-empty lists of non-negative int indices.
    """
    p = Path(path)
    data = _read_json(p, "evaluation index")
    if not isinstance(data, dict):
        raise ViewrtError(f"{p}: expected a JSON object at the top, got {type(data).__name__}")
    out: dict[str, dict[str, list[int]] | None] = {}
    for scene, entry in data.items():
        where = f"{p} scene {scene!r}"
        if entry is None:
            out[scene] = None
            continue
        if not isinstance(entry, dict):
            raise ViewrtError(f"{where}: expected an object or null, got {type(entry).__name__}")
        for key in ("context", "target"):
            if key not in entry:
                raise ViewrtError(f"{where}: missing key {key!r}")
        out[scene] = {
            "context": _index_list(entry["context"], f"{where} 'context'"),
            "target": _index_list(entry["target"], f"{where} 'target'"),
        }
    return out


def select_index_frames(context: Sequence[int], views: int | None = None) -> list[int]:
    """The input views of an evaluation-index entry, chosen as upstream's evaluation
    loader (LVSM / Efficient-LVSM) does, so that numbers compare with published ones.

    With ``C`` the entry's context list (in file order) and ``n = views`` (default
    ``len(C)``):

    * ``n > len(C)``: ``C`` is first replaced by ``n`` frames spread evenly from ``C[0]``
      to ``C[-1]`` (``numpy.rint`` of ``linspace``: halves round to even; the ends are
      exactly ``C[0]`` and ``C[-1]``). Where the span has fewer than ``n`` frames some
      frames repeat, as upstream;
    * then the inputs are ``C[:1]`` for ``n == 1``, else the first ``n - 1`` of ``C``
      followed by its last: context ``[0, 3, 6, 9]`` with 2 views gives ``[0, 9]``, with
      3 views ``[0, 3, 9]``; context ``[0, 9]`` with 4 views gives ``[0, 3, 6, 9]``.

    Upstream's loader spreads between the two frames of a two-frame context (a longer one
    fails there); this spreads between the first and the last, the same for two frames.
    The targets are the entry's ``target`` list as it is.

    Args:
        context: non-empty list of frame indices.
        views: number of input views (>= 1), or None for all of ``context``.
    Returns:
        ``views`` frame indices, in the order they are added.
    Raises:
        ViewrtError: an empty context or ``views < 1``.
    """
    ctx = [int(c) for c in context]
    if not ctx:
        raise ViewrtError("evaluation index entry: empty context")
    n = len(ctx) if views is None else views
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ViewrtError(f"views: expected a positive integer, got {views!r}")
    n = int(n)
    if n > len(ctx):
        first, last = ctx[0], ctx[-1]
        ctx = [int(v) for v in np.rint(np.linspace(first, last, n))]
        ctx[0], ctx[-1] = first, last
    return ctx[:1] if n == 1 else ctx[: n - 1] + ctx[-1:]
