"""Scene data: LVSM-processed RealEstate10K readers and a synthetic scene generator.

Format (described in full in ``docs/data.md``):

* list file: one scene JSON path per line (blank lines and ``#`` comments skipped,
  relative paths against the list's folder);
* scene JSON: ``{"scene_name": str, "frames": [{"image_path": str,
  "fxfycxcy": [fx, fy, cx, cy], "w2c": 4x4}]}``; relative image paths are against the
  JSON's folder; intrinsics are in pixels of the stored image;
* evaluation index (pixelSplat): ``{scene_name: {"context": [a, b], "target": [...]} | null}``,
  read by :func:`load_eval_index`; :func:`select_index_frames` is upstream's rule for
  choosing the input views from it.

Datasets processed on another machine carry absolute paths that no longer exist here;
:class:`DataRoots` says where to look for them instead (prefix maps and a fallback under
the files' own roots).

Readers validate everything up front and raise :class:`~viewrt.errors.ViewrtError`
naming the file, frame index and key; images are only opened by :func:`load_frame`,
which also checks the intrinsics against the image (:func:`check_intrinsics_plausible`).
This module is a leaf: it imports only numpy, PIL and viewrt's errors and geometry.

The synthetic generator (:func:`make_synthetic_scene`) ray-casts a small textured scene
with exactly known cameras (:func:`synthetic_cameras`), for tests and smoke runs without
any dataset.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from viewrt.errors import ViewrtError
from viewrt.geometry import (
    check_camera,
    image_to_uint8,
    look_at,
    rays,
    resize_center_crop,
    rigid_inverse,
    w2c_to_c2w,
)

__all__ = [
    "Frame",
    "Scene",
    "DataRoots",
    "load_scene",
    "load_scene_list",
    "load_eval_index",
    "select_index_frames",
    "load_frame",
    "image_to_float_rgb",
    "check_intrinsics_plausible",
    "synthetic_cameras",
    "synthetic_views",
    "make_synthetic_scene",
    "make_synthetic_list",
    "make_processed_dataset",
    "make_eval_index",
]


# --------------------------------------------------------------------------- records


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
    """

    image_path: Path
    fxfycxcy: np.ndarray
    w2c: np.ndarray
    tried: tuple[Path, ...] = field(default=(), repr=False, compare=False)

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


# --------------------------------------------------------------------------- where files are

SCENE_TAIL = 2  # <root>/metadata/<scene>.json: the fallback looks for "metadata/<scene>.json"
IMAGE_TAIL = 3  # <root>/images/<scene>/<file>: the fallback looks for "images/<scene>/<file>"


@dataclass(frozen=True)
class DataRoots:
    """Where to look for dataset files whose recorded paths do not exist on this machine.

    Upstream preprocessing writes absolute paths (list lines to ``<root>/metadata/<scene>.json``,
    ``image_path`` to ``<root>/images/<scene>/<NNNNN>.png``), which are wrong once the
    data is moved. A path as written (list line or ``image_path``) is looked for, in order:

    1. under each prefix map ``old -> new`` whose ``old`` is a leading part of the path
       (whole components; longest ``old`` first): ``new`` + the rest;
    2. the path itself (a relative path joined to the list's or scene JSON's folder);
    3. if ``fallback``: its trailing part (``metadata/<scene>.json``: last 2 components
       for a scene file; ``images/<scene>/<file>``: last 3 for an image) under the file's
       own roots: for a scene file, the list file's folder and that folder's parent
       (:meth:`for_list`); for an image, the scene JSON's folder and its parent (where the
       JSON sits in ``<root>/metadata/``), then the list's.

    The first that is a file wins; when none is, the error gives the path as written and
    every place tried.

    Attributes:
        maps: ``(old, new)`` prefix pairs, e.g. from ``viewrt infer --data-root OLD=NEW``.
        search: folders for the fallback besides a file's own roots (set by :meth:`for_list`).
        fallback: look for the trailing part under the roots (on by default).
    """

    maps: tuple[tuple[str, str], ...] = ()
    search: tuple[Path, ...] = ()
    fallback: bool = True

    @classmethod
    def parse(cls, specs: Sequence[str] = (), fallback: bool = True) -> DataRoots:
        """Build from ``OLD=NEW`` strings (split at the first ``=``).

        Raises:
            ViewrtError: a spec without ``=``, an empty side, or a NEW that is not a folder.
        """
        maps = []
        for spec in specs:
            old, sep, new = str(spec).partition("=")
            if not sep or not old.strip() or not new.strip():
                raise ViewrtError(
                    f"--data-root {spec!r}: expected OLD=NEW, e.g. /cluster/re10k=/data/re10k"
                )
            if not Path(new).is_dir():
                raise ViewrtError(f"--data-root {spec!r}: {new} is not a folder")
            maps.append((old.strip(), new.strip()))
        return cls(maps=tuple(maps), fallback=fallback)

    def for_list(self, list_path: str | Path) -> DataRoots:
        """A copy whose fallback also looks under a list file's folder and its parent."""
        folder = Path(list_path).parent
        extra = tuple(p for p in (folder, folder.parent) if p not in self.search)
        return replace(self, search=self.search + extra)

    def candidates(
        self, written: str | Path, base: Path | None, kind: str, own: Sequence[Path] = ()
    ) -> list[Path]:
        """Places to look for a path as written in a file, in order (no file is touched).

        Args:
            written: the path as written (a list line or an ``image_path``).
            base: folder a relative path is joined to (None: the current folder).
            kind: ``"scene"`` or ``"image"`` (how long the trailing part is).
            own: the file's own roots for the fallback, before :attr:`search`.
        Returns:
            Distinct paths, the first that exists is the one to use.
        """
        raw = Path(written)
        out: list[Path] = []
        parts = raw.parts
        for old, new in sorted(self.maps, key=lambda m: -len(PurePath(m[0]).parts)):
            old_parts = PurePath(old).parts
            if old_parts and parts[: len(old_parts)] == old_parts:
                out.append(Path(new).joinpath(*parts[len(old_parts) :]))
        out.append(raw if raw.is_absolute() or base is None else base / raw)
        tail = SCENE_TAIL if kind == "scene" else IMAGE_TAIL
        if self.fallback and len(parts) > tail:
            rest = Path(*parts[-tail:])
            out += [root / rest for root in (*own, *self.search)]
        return list(dict.fromkeys(out))

    def resolve(
        self, written: str | Path, base: Path | None, kind: str, own: Sequence[Path] = ()
    ) -> tuple[Path, tuple[Path, ...]]:
        """``(path, tried)``: the first candidate that is a file and ``()``; or, when none
        is, the path as written (joined to ``base``) and every candidate tried."""
        cands = self.candidates(written, base, kind, own)
        for c in cands:
            if c.is_file():
                return c, ()
        raw = Path(written)
        return (raw if raw.is_absolute() or base is None else base / raw), tuple(cands)


def _not_found(what: str, path: Path, tried: Sequence[Path]) -> str:
    others = [str(t) for t in tried if t != path]
    return f"{what} not found: {path}" + (f" (also tried: {'; '.join(others)})" if others else "")


# --------------------------------------------------------------------------- readers


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
        raise ViewrtError(_not_found("scene file", path, tried))
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
        frames.append(Frame(image_path=img, fxfycxcy=fxfycxcy, w2c=w2c, tried=img_tried))
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


MAX_FOV_DEG = 160.0  # widest plausible field of view of a pinhole camera, per axis
MIN_FOV_DEG = 1.0  # narrowest (a long telephoto)
CENTER_BAND = 0.25  # principal point within this fraction of the size from the centre


def check_intrinsics_plausible(
    fxfycxcy: Any, width: int, height: int, name: str = "camera"
) -> None:
    """Check that intrinsics describe a pinhole camera for an image of this size.

    Plausible means: the field of view along each axis, ``2 * atan(W / (2 fx))`` and
    ``2 * atan(H / (2 fy))``, is between :data:`MIN_FOV_DEG` and :data:`MAX_FOV_DEG`; and
    the principal point lies in the middle half of the image (``|cx - W/2| <= W/4``, same
    for ``cy``; for images up to 2:1 the centre square crop then contains it). Intrinsics
    written normalized (fractions of the image size), or in pixels of another resolution,
    fail this.

    Args:
        fxfycxcy: ``[fx, fy, cx, cy]`` in pixels (4 finite numbers, fx, fy > 0, as
            :func:`load_scene` guarantees).
        width, height: the image size in pixels.
        name: what to call the camera in the message (e.g. ``"scene 'x' frame 3"``).
    Raises:
        ViewrtError: naming ``name``, the values, the image size and what is implausible.
    """
    fx, fy, cx, cy = (float(v) for v in np.asarray(fxfycxcy, dtype=np.float64).reshape(4))
    fov_x = math.degrees(2.0 * math.atan(width / (2.0 * fx)))
    fov_y = math.degrees(2.0 * math.atan(height / (2.0 * fy)))
    problems = []
    for axis, fov, f in (("horizontal", fov_x, fx), ("vertical", fov_y, fy)):
        if not MIN_FOV_DEG <= fov <= MAX_FOV_DEG:
            problems.append(
                f"{axis} field of view {fov:.1f} deg from f {f:g} px (plausible {MIN_FOV_DEG:g}-{MAX_FOV_DEG:g})"
            )
    if abs(cx - width / 2.0) > CENTER_BAND * width or abs(cy - height / 2.0) > CENTER_BAND * height:
        problems.append(f"principal point ({cx:g}, {cy:g}) px outside the middle half of the image")
    if not problems:
        return
    hint = ""
    if max(fx, fy, cx, cy) <= 2.0:
        hint = "; they look normalized: multiply fx, cx by the width and fy, cy by the height"
    raise ViewrtError(
        f"{name}: implausible intrinsics: fxfycxcy [{fx:g}, {fy:g}, {cx:g}, {cy:g}] for a {width}x{height} image: "
        f"{', '.join(problems)}; expected pixels of the stored image{hint} "
        "(for an unusual lens: check_intrinsics=False, viewrt infer --no-intrinsics-check)"
    )


_ALPHA_MODES = {
    "RGBa": "RGBA",
    "La": "LA",
}  # premultiplied: un-premultiply first (PIL converts these only)


def image_to_float_rgb(im: Image.Image, name: str = "image") -> np.ndarray:
    """Pixel values of any PIL image as float32 RGB in [0, 1].

    Scaling by mode: ``1`` (bilevel) 0/1; 8-bit modes (``L``, ``P``, ``RGB``, ``RGBX``,
    ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, and with alpha ``RGBA``, ``RGBa``, ``LA``,
    ``La``, ``PA``) through PIL's conversion to RGB, divided by 255; 16-bit greyscale
    (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``) divided by 65535; ``I`` (32-bit integers,
    as some Pillow versions open 16-bit PNGs) divided by 65535 when every value is in
    0..65535, refused otherwise; ``F`` (32-bit float) as it is when every value is in
    [0, 1], refused otherwise. Greyscale is repeated into three channels.

    Alpha is dropped: the colour channels are used as stored (premultiplied ``RGBa`` and
    ``La`` are un-premultiplied first), not composited over a background, so transparent
    pixels keep whatever colour they hold. Composite beforehand if a background matters.

    Args:
        im: an opened PIL image.
        name: what to call it in errors (its path).
    Returns:
        float32 ``[H, W, 3]`` in [0, 1].
    Raises:
        ViewrtError: a mode that cannot be converted, or ``I``/``F`` values out of range.
    """
    mode = im.mode
    if mode == "1":
        grey = np.asarray(im, dtype=np.float32)
    elif mode.startswith("I;16"):
        grey = np.asarray(im).astype(np.float32) / np.float32(65535.0)
    elif mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ViewrtError(
                f"{name}: 32-bit integer image (mode I) with values {arr.min()}..{arr.max()}: "
                "expected 0..65535 (16-bit); convert it to 8- or 16-bit"
            )
        grey = arr.astype(np.float32) / np.float32(65535.0)
    elif mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        if not np.all(np.isfinite(arr)) or (arr.size and (arr.min() < 0.0 or arr.max() > 1.0)):
            raise ViewrtError(
                f"{name}: float image (mode F) with values outside [0, 1] or not finite: "
                "expected linear values in [0, 1]"
            )
        grey = arr
    else:
        try:
            base = im.convert(_ALPHA_MODES[mode]) if mode in _ALPHA_MODES else im
            rgb = np.asarray(base.convert("RGB"), dtype=np.uint8)
        except (ValueError, OSError) as exc:
            raise ViewrtError(
                f"{name}: image mode {mode!r} cannot be read as RGB ({exc})"
            ) from None
        return rgb.astype(np.float32) / np.float32(255.0)
    return np.repeat(grey[..., None], 3, axis=2)


def load_frame(
    frame: Frame, size: int, *, check_intrinsics: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a frame's image and bring it to the model size.

    Args:
        frame: a :class:`Frame` from :func:`load_scene`.
        size: output side in pixels (short side resized to ``size``, centre square crop;
            see :func:`viewrt.geometry.resize_center_crop`).
        check_intrinsics: check the frame's intrinsics against the stored image first
            (:func:`check_intrinsics_plausible`); False for an unusual lens.

    Returns:
        ``(image float32 [3, size, size] in [0, 1], fxfycxcy float64 [4] for that image,
        c2w float64 [4, 4])``. The pose is the dataset's, not normalized. Pixel values are
        scaled by image mode as :func:`image_to_float_rgb` says (16-bit too; alpha dropped).

    Raises:
        ViewrtError: naming the path if the image is missing (with the places tried) or
            unreadable, of an unusable mode, or with implausible intrinsics.
    """
    path = Path(frame.image_path)
    if not path.is_file():
        raise ViewrtError(_not_found("image", path, frame.tried))
    try:
        with Image.open(path) as im:
            im.load()
            width, height = im.size
            if check_intrinsics:
                check_intrinsics_plausible(frame.fxfycxcy, width, height, name=str(path))
            rgb = image_to_float_rgb(im, name=str(path))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ViewrtError(f"cannot read image {path}: {exc}") from None
    image, fxfycxcy = resize_center_crop(rgb, frame.fxfycxcy, size)
    return image, fxfycxcy, frame.c2w


# --------------------------------------------------------------------------- synthetic


_UP = np.array([0.0, 0.0, 1.0])
_LOOK_TARGET = np.array([0.0, 0.0, 0.45])


def synthetic_cameras(
    n_views: int = 8, size: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The exact cameras :func:`make_synthetic_scene` renders with.

    ``n_views`` cameras on an arc of 110-145 degrees (start angle and span drawn from
    ``seed``) around the world origin, radius about 4, heights varying in about 1.0-1.9
    (world +z is up, the ground is z = 0), all looking at ``(0, 0, 0.45)``. The arc, not a
    full circle, keeps the mean viewing direction well defined for scene normalization.

    Args:
        n_views: number of cameras (>= 1).
        size: image side in pixels; ``fx = fy = size``, ``cx = cy = size / 2``.
        seed: integer seed.

    Returns:
        ``(c2ws float64 [n_views, 4, 4] OpenCV, fxfycxcy float64 [4])``.
    """
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ViewrtError(f"n_views: expected a positive integer, got {n_views!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ViewrtError(f"size: expected a positive integer, got {size!r}")
    rng = np.random.default_rng([int(seed), 1])
    start = rng.uniform(0.0, 2.0 * np.pi)
    span = np.deg2rad(rng.uniform(110.0, 145.0))
    phase = rng.uniform(0.0, 2.0 * np.pi)
    s = np.linspace(0.0, 1.0, n_views) if n_views > 1 else np.zeros(1)
    azimuth = start + span * s
    radius = 4.0 + rng.uniform(-0.3, 0.3, n_views)
    height = 1.45 + 0.35 * np.sin(2.0 * np.pi * s + phase) + rng.uniform(-0.08, 0.08, n_views)
    c2ws = np.stack(
        [
            look_at([r * np.cos(a), r * np.sin(a), h], _LOOK_TARGET, _UP)
            for a, r, h in zip(azimuth, radius, height)
        ]
    )
    fxfycxcy = np.array([float(size), float(size), size / 2.0, size / 2.0])
    return c2ws, fxfycxcy


def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, salt: float) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point."""
    h = np.sin(ix * 127.1 + iy * 311.7 + iz * 74.7 + salt * 19.19) * 43758.5453
    return h - np.floor(h)


def _value_noise(p: np.ndarray, salt: float) -> np.ndarray:
    """Smooth trilinear value noise in [0, 1] at points p [M, 3]."""
    base = np.floor(p)
    f = p - base
    f = f * f * (3.0 - 2.0 * f)
    ix, iy, iz = base[:, 0], base[:, 1], base[:, 2]
    out = np.zeros(len(p))
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1.0 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1.0 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1.0 - f[:, 2]
                out += wx * wy * wz * _hash01(ix + dx, iy + dy, iz + dz, salt)
    return out


def _texture(kind: str, p: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Albedo [M, 3] of a procedural texture at world points p [M, 3]."""
    c0, c1 = params["colors"]
    if kind == "checker":
        q = np.floor(p / params["period"]).sum(axis=1)
        w = np.mod(q, 2.0)
    elif kind == "stripes":
        w = (np.sin(p @ params["axis"] * params["freq"]) > 0.0).astype(np.float64)
    else:  # noise
        q = p * (params["freq"] / 3.0)
        salt = params["salt"]
        w = 0.65 * _value_noise(q, salt) + 0.35 * _value_noise(2.3 * q, salt + 1.0)
        w = np.clip((w - 0.25) / 0.5, 0.0, 1.0)
    out = c0[None] * (1.0 - w[:, None]) + c1[None] * w[:, None]
    if "colors_b" in params:  # the other side of the object's split plane
        b0, b1 = params["colors_b"]
        side = (p - params["center"]) @ params["split"] < 0.0
        out[side] = b0[None] * (1.0 - w[side, None]) + b1[None] * w[side, None]
    return out


def _random_color(rng: np.random.Generator, lo: float = 0.08, hi: float = 0.95) -> np.ndarray:
    return rng.uniform(lo, hi, 3)


STYLES = ("classic", "multiview")


def _check_style(style: Any) -> str:
    if style not in STYLES:
        raise ViewrtError(f"style: expected one of {', '.join(STYLES)}, got {style!r}")
    return style


def _multiview_extras(layout: dict[str, Any], seed: int) -> None:
    """Make one view insufficient (style "multiview"), from a separate random stream so
    the classic draws are untouched: patterns coarse enough to resolve at 64 px, objects
    with a different colour pair on each side of a vertical plane, a ground whose tint
    varies over metres, and a horizon whose colour varies with azimuth."""
    rng = np.random.default_rng([int(seed), 2])
    for obj in layout["objects"]:
        prm = obj["params"]
        prm["period"] = float(rng.uniform(0.3, 0.5))
        prm["freq"] = float(rng.uniform(5.0, 9.0))
        ang = rng.uniform(0.0, 2.0 * np.pi)
        prm["split"] = np.array([np.cos(ang), np.sin(ang), 0.0])
        prm["center"] = obj["center"] if obj["kind"] == "sphere" else 0.5 * (obj["lo"] + obj["hi"])
        c0 = _random_color(rng)
        c1 = _random_color(rng)
        while np.linalg.norm(c1 - c0) < 0.4:
            c1 = _random_color(rng)
        prm["colors_b"] = (c0, c1)
    layout["ground"]["tint"] = (_random_color(rng, 0.2, 0.9), _random_color(rng, 0.2, 0.9))
    layout["ground"]["tint_salt"] = float(rng.uniform(0.0, 100.0))
    layout["sky_azimuth"] = (rng.uniform(0.0, 2.0 * np.pi, 3), float(rng.uniform(0.2, 0.35)))


def _synthetic_layout(seed: int, style: str = "classic") -> dict[str, Any]:
    """Objects, textures, light and sky of a synthetic scene (deterministic in seed)."""
    rng = np.random.default_rng([int(seed), 0])
    n_obj = int(rng.integers(2, 5))
    kinds = ["sphere", "box"] + [str(rng.choice(["sphere", "box"])) for _ in range(n_obj - 2)]
    textures = ["checker", "stripes", "noise"]
    objects: list[dict[str, Any]] = []
    placed: list[tuple[np.ndarray, float]] = []
    for kind in kinds:
        if kind == "sphere":
            r = float(rng.uniform(0.3, 0.55))
            extent = r
        else:
            half = rng.uniform(0.2, 0.45, 2)
            h = float(rng.uniform(0.3, 0.9))
            extent = float(np.hypot(*half))
        for _ in range(200):
            rad = rng.uniform(0.0, 1.3)
            ang = rng.uniform(0.0, 2.0 * np.pi)
            xy = np.array([rad * np.cos(ang), rad * np.sin(ang)])
            if all(np.linalg.norm(xy - q) > extent + e + 0.1 for q, e in placed):
                break
        placed.append((xy, extent))
        tex = str(rng.choice(textures))
        axis = rng.normal(size=3)
        c0 = _random_color(rng)
        c1 = _random_color(rng)
        while np.linalg.norm(c1 - c0) < 0.4:  # keep the pattern visible
            c1 = _random_color(rng)
        params = {
            "colors": (c0, c1),
            "period": float(rng.uniform(0.12, 0.25)),
            "freq": float(rng.uniform(12.0, 30.0)),
            "axis": axis / np.linalg.norm(axis),
            "salt": float(rng.uniform(0.0, 100.0)),
        }
        obj: dict[str, Any] = {"kind": kind, "texture": tex, "params": params}
        if kind == "sphere":
            obj["center"] = np.array([xy[0], xy[1], r])
            obj["radius"] = r
        else:
            obj["lo"] = np.array([xy[0] - half[0], xy[1] - half[1], 0.0])
            obj["hi"] = np.array([xy[0] + half[0], xy[1] + half[1], h])
        objects.append(obj)
    ground = {
        "colors": (_random_color(rng, 0.25, 0.75), _random_color(rng, 0.25, 0.75)),
        "period": float(rng.uniform(0.4, 0.7)),
    }
    light_az = rng.uniform(0.0, 2.0 * np.pi)
    light_el = np.deg2rad(rng.uniform(35.0, 65.0))
    light = np.array(
        [np.cos(light_el) * np.cos(light_az), np.cos(light_el) * np.sin(light_az), np.sin(light_el)]
    )
    sky = (
        np.array([0.85, 0.88, 0.95]) + rng.uniform(-0.05, 0.05, 3),
        np.array([0.25, 0.45, 0.85]) + rng.uniform(-0.1, 0.1, 3),
    )
    layout = {"objects": objects, "ground": ground, "light": light, "sky": sky, "ambient": 0.3}
    if style == "multiview":
        _multiview_extras(layout, seed)
    return layout


def _intersect(obj: dict[str, Any], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit distance (inf where none) and outward normal of one primitive."""
    eps = 1e-6
    if obj["kind"] == "sphere":
        oc = o - obj["center"]
        b = np.einsum("ij,ij->i", oc, d)
        c = np.einsum("ij,ij->i", oc, oc) - obj["radius"] ** 2
        disc = b * b - c
        ok = disc >= 0.0
        sq = np.sqrt(np.where(ok, disc, 0.0))
        t = np.where(-b - sq > eps, -b - sq, -b + sq)
        t = np.where(ok & (t > eps), t, np.inf)
        hit = np.isfinite(t)
        normal = np.zeros_like(o)
        normal[hit] = (o[hit] + t[hit, None] * d[hit] - obj["center"]) / obj["radius"]
        return t, normal
    safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
    inv = 1.0 / safe
    t1 = (obj["lo"] - o) * inv
    t2 = (obj["hi"] - o) * inv
    tnear = np.minimum(t1, t2)
    tfar = np.maximum(t1, t2)
    t_in = tnear.max(axis=1)
    t_out = tfar.min(axis=1)
    t = np.where(t_in > eps, t_in, t_out)
    t = np.where((t_out >= t_in) & (t > eps), t, np.inf)
    axis = tnear.argmax(axis=1)
    normal = np.zeros_like(o)
    rows = np.arange(len(o))
    normal[rows, axis] = -np.sign(safe[rows, axis])
    return t, normal


def _render(layout: dict[str, Any], c2w: np.ndarray, fxfycxcy: np.ndarray, size: int) -> np.ndarray:
    """Ray-cast one view; float [3, size, size] in [0, 1]."""
    origins, dirs = rays(c2w, fxfycxcy, size, size)
    o = origins.reshape(-1, 3)
    d = dirs.reshape(-1, 3)
    n = len(o)
    best_t = np.full(n, np.inf)
    best_id = np.full(n, -1)  # -1 sky, 0 ground, k+1 object k
    normal = np.zeros((n, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = np.where(d[:, 2] < -1e-9, -o[:, 2] / d[:, 2], np.inf)
    tg = np.where(tg > 1e-6, tg, np.inf)
    ground_hit = tg < best_t
    best_t[ground_hit] = tg[ground_hit]
    best_id[ground_hit] = 0
    normal[ground_hit] = _UP
    for k, obj in enumerate(layout["objects"]):
        t, nk = _intersect(obj, o, d)
        closer = t < best_t
        best_t[closer] = t[closer]
        best_id[closer] = k + 1
        normal[closer] = nk[closer]

    horizon, zenith = layout["sky"]
    w = np.sqrt(np.clip(d[:, 2], 0.0, 1.0))[:, None]
    if "sky_azimuth" in layout:  # horizon colour that changes with the ray's azimuth
        phases, amp = layout["sky_azimuth"]
        az = np.arctan2(d[:, 1], d[:, 0])[:, None]
        horizon = np.clip(horizon[None] - amp + amp * np.cos(az + phases[None]), 0.0, 1.0)
    color = horizon * (1.0 - w) + zenith[None] * w

    hit = best_id >= 0
    p = o[hit] + best_t[hit, None] * d[hit]
    ids = best_id[hit]
    nrm = normal[hit]
    p_tex = p - 1e-4 * nrm  # just inside the surface: no texture-cell ties on flat faces
    albedo = np.zeros_like(p)
    g = ids == 0
    if g.any():
        gc = _texture("checker", p_tex[g], layout["ground"])
        if "tint" in layout["ground"]:  # metre-scale tint: each view sees its own patch of ground
            t0, t1 = layout["ground"]["tint"]
            v = np.clip(
                (_value_noise(p_tex[g] * 0.6, layout["ground"]["tint_salt"]) - 0.2) / 0.6, 0.0, 1.0
            )[:, None]
            chk = np.mod(np.floor(p_tex[g] / layout["ground"]["period"]).sum(axis=1), 2.0)[:, None]
            gc = (0.8 + 0.2 * chk) * (t0[None] * (1.0 - v) + t1[None] * v)
        fade = np.clip((best_t[hit][g] - 6.0) / 10.0, 0.0, 1.0)[:, None]
        mean = 0.5 * (layout["ground"]["colors"][0] + layout["ground"]["colors"][1])
        if "tint" in layout["ground"]:
            mean = 0.45 * (layout["ground"]["tint"][0] + layout["ground"]["tint"][1])
        albedo[g] = gc * (1.0 - fade) + mean[None] * fade
    for k, obj in enumerate(layout["objects"]):
        sel = ids == k + 1
        if sel.any():
            albedo[sel] = _texture(obj["texture"], p_tex[sel], obj["params"])

    light = layout["light"]
    lambert = np.clip(nrm @ light, 0.0, None)
    shadow_o = p + 1e-4 * nrm
    shadow_d = np.broadcast_to(light, shadow_o.shape)
    lit = np.ones(len(p), dtype=bool)
    for obj in layout["objects"]:
        t, _ = _intersect(obj, shadow_o, shadow_d)
        lit &= ~np.isfinite(t)
    amb = layout["ambient"]
    shade = amb + (1.0 - amb) * lambert * lit
    color[hit] = albedo * shade[:, None]
    img = np.clip(color, 0.0, 1.0).reshape(size, size, 3)
    return img.transpose(2, 0, 1)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ViewrtError(
            f"scene name: expected a non-empty name without path separators, got {name!r}"
        )
    return name


def synthetic_views(
    n_views: int = 8, size: int = 64, seed: int = 0, style: str = "classic"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The views of a synthetic scene in memory (what :func:`make_synthetic_scene` writes,
    before 8-bit quantization).

    Args:
        n_views, size, seed: as :func:`synthetic_cameras`.
        style: "classic" (the original scenes) or "multiview" (scenes one view cannot
            explain: coarse patterns, objects coloured differently on each side, a ground
            tint that varies over metres and a horizon colour that varies with azimuth;
            same cameras and objects as "classic" for a seed).

    Returns:
        ``(images float64 [n_views, 3, size, size] in [0, 1], c2ws float64 [n_views, 4, 4],
        fxfycxcy float64 [4])``.

    Raises:
        ViewrtError: on a bad count, size or style.
    """
    style = _check_style(style)
    c2ws, fxfycxcy = synthetic_cameras(n_views, size, seed)
    layout = _synthetic_layout(seed, style)
    images = np.stack([_render(layout, c2w, fxfycxcy, size) for c2w in c2ws])
    return images, c2ws, fxfycxcy


def make_synthetic_scene(
    out_dir: str | Path,
    name: str = "synthetic",
    n_views: int = 8,
    size: int = 64,
    seed: int = 0,
    style: str = "classic",
) -> Path:
    """Render a small synthetic scene with exact cameras and write it in the dataset format.

    Ground plane (checker), 2-4 spheres/boxes with checker, stripe or noise textures,
    Lambertian shading with one directional light (with shadows) plus ambient, a sky
    gradient. Cameras are :func:`synthetic_cameras` ``(n_views, size, seed)``; each view is
    rendered with one ray per pixel centre from :func:`viewrt.geometry.rays`.

    Writes ``out_dir/name/images/{i:05d}.png`` and ``out_dir/name/scene.json`` (relative
    image paths, ``fxfycxcy``, ``w2c`` = rigid inverse of the c2w). Deterministic in
    ``seed``; different seeds give different layouts, colours, light and camera arc.

    Args:
        out_dir: folder to write into (created if needed).
        name: scene name (``scene_name`` and folder name).
        n_views: number of views.
        size: image side in pixels.
        seed: integer seed.
        style: "classic" or "multiview", see :func:`synthetic_views`.

    Returns:
        Path of the written scene JSON.

    Raises:
        ViewrtError: on a bad name/size/count or a folder that cannot be written.
    """
    name = _check_name(name)
    images, c2ws, fxfycxcy = synthetic_views(n_views, size, seed, style)
    scene_dir = Path(out_dir) / name
    try:
        (scene_dir / "images").mkdir(parents=True, exist_ok=True)
        frames = []
        for i, (c2w, img) in enumerate(zip(c2ws, images)):
            rel = f"images/{i:05d}.png"
            Image.fromarray(image_to_uint8(img)).save(scene_dir / rel)
            frames.append(
                {
                    "image_path": rel,
                    "fxfycxcy": fxfycxcy.tolist(),
                    "w2c": rigid_inverse(c2w).tolist(),
                }
            )
        json_path = scene_dir / "scene.json"
        json_path.write_text(json.dumps({"scene_name": name, "frames": frames}, indent=1))
    except OSError as exc:
        raise ViewrtError(f"cannot write synthetic scene to {scene_dir}: {exc}") from None
    return json_path


def make_synthetic_list(
    out_dir: str | Path,
    n_scenes: int,
    n_views: int = 8,
    size: int = 64,
    seed: int = 0,
    prefix: str = "synthetic",
    style: str = "classic",
) -> Path:
    """Write ``n_scenes`` synthetic scenes and a list file naming them.

    Scene ``k`` is ``make_synthetic_scene(out_dir, f"{prefix}_{k:03d}", n_views, size,
    seed + k)``.

    Args:
        out_dir: folder to write into.
        n_scenes: number of scenes (>= 1).
        n_views: views per scene.
        size: image side in pixels.
        seed: seed of scene 0.
        prefix: scene name prefix.
        style: "classic" or "multiview", see :func:`synthetic_views`.

    Returns:
        Path of ``out_dir/scenes.txt`` (scene JSON paths relative to ``out_dir``).

    Raises:
        ViewrtError: as :func:`make_synthetic_scene`, or ``n_scenes < 1``.
    """
    if isinstance(n_scenes, bool) or not isinstance(n_scenes, int) or n_scenes < 1:
        raise ViewrtError(f"n_scenes: expected a positive integer, got {n_scenes!r}")
    out = Path(out_dir)
    lines = []
    for k in range(n_scenes):
        path = make_synthetic_scene(out, f"{prefix}_{k:03d}", n_views, size, seed + k, style)
        lines.append(path.relative_to(out).as_posix())
    list_path = out / "scenes.txt"
    try:
        list_path.write_text("\n".join(lines) + "\n")
    except OSError as exc:
        raise ViewrtError(f"cannot write scene list {list_path}: {exc}") from None
    return list_path


def make_processed_dataset(
    root: str | Path,
    n_scenes: int,
    n_views: int = 8,
    size: int = 64,
    seed: int = 0,
    prefix: str = "synthetic",
) -> Path:
    """Write synthetic scenes in the layout upstream's preprocessing writes, absolute paths
    included (for tests of data moved between machines, see :class:`DataRoots`).

    Layout: ``root/metadata/<scene>.json``, ``root/images/<scene>/<NNNNN>.png`` and
    ``root/full_list.txt``; every list line and every ``image_path`` is the absolute path
    of the file (``root`` made absolute). Scene ``k`` is named ``f"{prefix}_{k:03d}"`` and
    has the views, cameras and images of ``make_synthetic_scene(..., seed=seed + k)``.

    Args:
        root: the dataset root (created if needed).
        n_scenes: number of scenes (>= 1).
        n_views: views per scene.
        size: image side in pixels.
        seed: seed of scene 0.
        prefix: scene name prefix.

    Returns:
        Path of ``root/full_list.txt``.

    Raises:
        ViewrtError: as :func:`make_synthetic_list`.
    """
    if isinstance(n_scenes, bool) or not isinstance(n_scenes, int) or n_scenes < 1:
        raise ViewrtError(f"n_scenes: expected a positive integer, got {n_scenes!r}")
    base = Path(root).absolute()
    lines = []
    try:
        for k in range(n_scenes):
            name = _check_name(f"{prefix}_{k:03d}")
            c2ws, fxfycxcy = synthetic_cameras(n_views, size, seed + k)
            layout = _synthetic_layout(seed + k)
            (base / "images" / name).mkdir(parents=True, exist_ok=True)
            (base / "metadata").mkdir(parents=True, exist_ok=True)
            frames = []
            for i, c2w in enumerate(c2ws):
                img_path = base / "images" / name / f"{i:05d}.png"
                Image.fromarray(image_to_uint8(_render(layout, c2w, fxfycxcy, size))).save(img_path)
                frames.append(
                    {
                        "image_path": str(img_path),
                        "fxfycxcy": fxfycxcy.tolist(),
                        "w2c": rigid_inverse(c2w).tolist(),
                    }
                )
            json_path = base / "metadata" / f"{name}.json"
            json_path.write_text(json.dumps({"scene_name": name, "frames": frames}, indent=1))
            lines.append(str(json_path))
        list_path = base / "full_list.txt"
        list_path.write_text("\n".join(lines) + "\n")
    except OSError as exc:
        raise ViewrtError(f"cannot write dataset to {base}: {exc}") from None
    return list_path


def make_eval_index(
    list_path: str | Path,
    out_path: str | Path | None = None,
    n_context: int = 2,
    n_target: int = 3,
) -> Path:
    """Write a pixelSplat-style evaluation index for the scenes of a list file.

    For a scene with N frames: context = ``n_context`` indices evenly spaced over
    ``0..N-1`` (endpoints included); target = ``n_target`` indices evenly spaced among
    the remaining frames; ``null`` when N < n_context + n_target.

    Args:
        list_path: scene list (see :func:`load_scene_list`).
        out_path: where to write; default ``eval_index.json`` beside the list.
        n_context: context views per scene (>= 1).
        n_target: target views per scene (>= 1).

    Returns:
        Path of the written index.

    Raises:
        ViewrtError: if a scene cannot be loaded or the file cannot be written.
    """
    for label, v in (("n_context", n_context), ("n_target", n_target)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ViewrtError(f"{label}: expected a positive integer, got {v!r}")
    lp = Path(list_path)
    index: dict[str, Any] = {}
    roots = DataRoots().for_list(lp)
    for scene_path in load_scene_list(lp):
        scene = load_scene(scene_path, roots)
        n = len(scene.frames)
        if n < n_context + n_target:
            index[scene.name] = None
            continue
        # spacing >= 1 and round-half-up keep the picks distinct
        context = [int(np.floor(x + 0.5)) for x in np.linspace(0, n - 1, n_context)]
        rest = [i for i in range(n) if i not in context]
        pick = np.linspace(0, len(rest) - 1, n_target)
        target = [rest[int(np.floor(x + 0.5))] for x in pick]
        index[scene.name] = {"context": context, "target": target}
    out = Path(out_path) if out_path is not None else lp.parent / "eval_index.json"
    try:
        out.write_text(json.dumps(index, indent=1))
    except OSError as exc:
        raise ViewrtError(f"cannot write evaluation index {out}: {exc}") from None
    return out
