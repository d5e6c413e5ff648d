"""Writers of dataset files: synthetic scenes, their list files, upstream's processed
layout (absolute paths) and evaluation indices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from viewrt.data.readers import load_scene, load_scene_list
from viewrt.data.roots import DataRoots
from viewrt.data.synthetic import synthetic_sequence, synthetic_views
from viewrt.errors import ViewrtError
from viewrt.geometry import image_to_uint8, rigid_inverse

__all__ = [
    "make_synthetic_scene",
    "make_synthetic_sequence",
    "make_synthetic_list",
    "make_processed_dataset",
    "make_eval_index",
]


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ViewrtError(
            f"scene name: expected a non-empty name without path separators, got {name!r}"
        )
    return name


def _write_scene(
    json_path: Path,
    name: str,
    image_dir: Path,
    views: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    absolute: bool,
    depths: np.ndarray | None = None,
) -> Path:
    """Write views ``(images [N, 3, S, S] in [0, 1], c2ws [N, 4, 4], fxfycxcy [4])`` as
    ``image_dir/{i:05d}.png`` (8-bit) and the scene JSON at ``json_path`` (``w2c`` = rigid
    inverse of each c2w); ``image_path`` entries are absolute paths when ``absolute``, else
    relative to the JSON's folder. With ``depths`` ``[N, S, S]``, each frame's z-depth is
    written as float32 ``.npy`` in ``image_dir/../depths/`` and named by ``depth_path``
    (same rule for paths). Folders are created; OSError passes through."""
    images, c2ws, fxfycxcy = views
    image_dir.mkdir(parents=True, exist_ok=True)
    depth_dir = image_dir.parent / "depths"
    if depths is not None:
        depth_dir.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (c2w, img) in enumerate(zip(c2ws, images)):
        img_path = image_dir / f"{i:05d}.png"
        Image.fromarray(image_to_uint8(img)).save(img_path)
        written = str(img_path) if absolute else img_path.relative_to(json_path.parent).as_posix()
        entry = {
            "image_path": written,
            "fxfycxcy": fxfycxcy.tolist(),
            "w2c": rigid_inverse(c2w).tolist(),
        }
        if depths is not None:
            depth_path = depth_dir / f"{i:05d}.npy"
            np.save(depth_path, np.asarray(depths[i], np.float32))
            entry["depth_path"] = (
                str(depth_path) if absolute else depth_path.relative_to(json_path.parent).as_posix()
            )
        frames.append(entry)
    json_path.write_text(json.dumps({"scene_name": name, "frames": frames}, indent=1))
    return json_path


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
    gradient. Cameras are :func:`~viewrt.data.synthetic_cameras` ``(n_views, size, seed)``; each view is
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
        style: "classic" or "multiview", see :func:`~viewrt.data.synthetic_views`.

    Returns:
        Path of the written scene JSON.

    Raises:
        ViewrtError: on a bad name/size/count or a folder that cannot be written.
    """
    name = _check_name(name)
    views = synthetic_views(n_views, size, seed, style)
    scene_dir = Path(out_dir) / name
    try:
        json_path = _write_scene(
            scene_dir / "scene.json", name, scene_dir / "images", views, absolute=False
        )
    except OSError as exc:
        raise ViewrtError(f"cannot write synthetic scene to {scene_dir}: {exc}") from None
    return json_path


def make_synthetic_sequence(
    out_dir: str | Path,
    name: str = "sequence",
    n_frames: int = 16,
    size: int = 64,
    seed: int = 0,
    style: str = "classic",
    trajectory: str = "video",
) -> Path:
    """Render a synthetic frame sequence with ground-truth cameras and depth, written in the
    dataset format (:func:`make_synthetic_scene`'s layout) plus one depth map per frame.

    Writes ``out_dir/name/images/{i:05d}.png``, ``out_dir/name/depths/{i:05d}.npy``
    (float32 ``[size, size]`` z-depth in world units, 0 where there is no surface) and
    ``out_dir/name/scene.json`` whose frames carry ``depth_path`` besides the usual keys.
    The frames are :func:`~viewrt.data.synthetic_sequence` ``(n_frames, size, seed, style,
    trajectory)``.

    Args:
        out_dir: folder to write into (created if needed).
        name: scene name (``scene_name`` and folder name).
        n_frames: number of frames.
        size: image side in pixels.
        seed: integer seed.
        style: "classic" or "multiview".
        trajectory: "video" (small steps between frames) or "arc".

    Returns:
        Path of the written scene JSON.

    Raises:
        ViewrtError: on a bad name, count, size, style or trajectory, or a folder that
            cannot be written.
    """
    name = _check_name(name)
    images, c2ws, fxfycxcy, depths = synthetic_sequence(n_frames, size, seed, style, trajectory)
    scene_dir = Path(out_dir) / name
    try:
        return _write_scene(
            scene_dir / "scene.json",
            name,
            scene_dir / "images",
            (images, c2ws, fxfycxcy),
            absolute=False,
            depths=depths,
        )
    except OSError as exc:
        raise ViewrtError(f"cannot write synthetic sequence to {scene_dir}: {exc}") from None


def make_synthetic_list(
    out_dir: str | Path,
    n_scenes: int,
    n_views: int = 8,
    size: int = 64,
    seed: int = 0,
    prefix: str = "synthetic",
    style: str = "classic",
    trajectory: str = "arc",
    depth: bool = False,
) -> Path:
    """Write ``n_scenes`` synthetic scenes and a list file naming them.

    Scene ``k`` is ``make_synthetic_scene(out_dir, f"{prefix}_{k:03d}", n_views, size,
    seed + k)``; with ``depth`` or a trajectory other than "arc", it is
    :func:`make_synthetic_sequence` with the same arguments (ground-truth depth maps
    written too).

    Args:
        out_dir: folder to write into.
        n_scenes: number of scenes (>= 1).
        n_views: views per scene.
        size: image side in pixels.
        seed: seed of scene 0.
        prefix: scene name prefix.
        style: "classic" or "multiview", see :func:`~viewrt.data.synthetic_views`.
        trajectory: "arc" or "video", see :func:`~viewrt.data.synthetic_cameras`.
        depth: write each frame's ground-truth z-depth (``depths/*.npy``, ``depth_path``).

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
        name = f"{prefix}_{k:03d}"
        if depth or trajectory != "arc":
            path = make_synthetic_sequence(out, name, n_views, size, seed + k, style, trajectory)
        else:
            path = make_synthetic_scene(out, name, n_views, size, seed + k, style)
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
            views = synthetic_views(n_views, size, seed + k)
            json_path = base / "metadata" / f"{name}.json"
            _write_scene(json_path, name, base / "images" / name, views, absolute=True)
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
