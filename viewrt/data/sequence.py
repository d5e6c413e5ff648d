"""Frame sequences for frame-by-frame models (the streaming geometry family): a scene in the
dataset format (its frames in file order, with cameras and, where written, depth maps) or a
plain folder of images (sorted by file name; no cameras, no depth).

:func:`load_sequence` finds the frames and checks the files exist; :func:`iter_frames`
decodes them one at a time, brought to the model size as :func:`load_frame` does (short
side resized, centre square crop, intrinsics adjusted; depth maps resized with the nearest
sample, so no depth is invented between surfaces). A video has one frame size: a frame whose
stored size differs from the first frame's is refused in one line naming both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from viewrt.data.images import check_intrinsics_plausible, image_to_float_rgb
from viewrt.data.readers import load_scene
from viewrt.data.roots import DataRoots, not_found_message
from viewrt.errors import ViewrtError
from viewrt.geometry import resize_center_crop

__all__ = ["IMAGE_SUFFIXES", "FrameSequence", "SequenceFrame", "iter_frames", "load_sequence"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
"""File name endings (any case) read as frames from a folder of images."""


@dataclass
class FrameSequence:
    """The frames of a sequence, found but not decoded.

    Attributes:
        name: the scene's name, or the folder's.
        source: the scene JSON or the folder.
        image_paths: one per frame, in order.
        c2ws: float64 ``[F, 4, 4]`` ground-truth camera-to-world poses (OpenCV), or None.
        fxfycxcy: float64 ``[F, 4]`` intrinsics in pixels of the stored images, or None.
        depth_paths: one ``.npy`` z-depth path per frame, or None (no ground-truth depth).
        tried: per frame, where its image was looked for when it is missing.
    """

    name: str
    source: Path
    image_paths: list[Path]
    c2ws: np.ndarray | None = None
    fxfycxcy: np.ndarray | None = None
    depth_paths: list[Path] | None = None
    tried: list[tuple[Path, ...]] | None = None

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def has_poses(self) -> bool:
        return self.c2ws is not None

    @property
    def has_depth(self) -> bool:
        return self.depth_paths is not None


@dataclass
class SequenceFrame:
    """One decoded frame at the model size.

    Attributes:
        index: position in the sequence.
        path: the image file.
        image: float32 ``[3, S, S]`` in [0, 1].
        c2w: float64 ``[4, 4]`` ground truth, or None.
        fxfycxcy: float64 ``[4]`` intrinsics of ``image`` (after resize and crop), or None.
        depth: float32 ``[S, S]`` ground-truth z-depth (0: none), or None.
    """

    index: int
    path: Path
    image: np.ndarray
    c2w: np.ndarray | None = None
    fxfycxcy: np.ndarray | None = None
    depth: np.ndarray | None = None


def _from_scene(json_path: Path, roots: DataRoots | None) -> FrameSequence:
    scene = load_scene(json_path, roots)
    frames = scene.frames
    with_depth = [f.depth_path is not None for f in frames]
    if any(with_depth) and not all(with_depth):
        missing = with_depth.index(False)
        raise ViewrtError(
            f"{scene.path} frame {missing}: no 'depth_path' while other frames have one "
            "(give every frame a depth map or none)"
        )
    return FrameSequence(
        name=scene.name,
        source=scene.path,
        image_paths=[f.image_path for f in frames],
        c2ws=np.stack([f.c2w for f in frames]),
        fxfycxcy=np.stack([f.fxfycxcy for f in frames]),
        depth_paths=[f.depth_path for f in frames] if all(with_depth) else None,
        tried=[f.tried for f in frames],
    )


def load_sequence(path: str | Path, roots: DataRoots | None = None) -> FrameSequence:
    """Find a sequence's frames.

    Args:
        path: a scene JSON (dataset format, ``docs/data.md``; an optional ``depth_path``
            per frame), a folder holding ``scene.json`` (what ``viewrt scene`` writes per
            scene), or a folder of images (:data:`IMAGE_SUFFIXES`, sorted by file name).
        roots: where to look for moved files (see :class:`DataRoots`).

    Returns:
        The :class:`FrameSequence`.

    Raises:
        ViewrtError: the path does not exist, a folder holds no image, or the scene JSON is
            invalid (as :func:`load_scene`).
    """
    p = Path(path)
    if not p.exists():
        raise ViewrtError(
            f"frame sequence not found: {p} (expected a scene JSON or a folder of images)"
        )
    if p.is_file():
        return _from_scene(p, roots)
    if (p / "scene.json").is_file():
        return _from_scene(p / "scene.json", roots)
    try:
        images = sorted(
            (f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda f: f.name,
        )
    except OSError as exc:
        raise ViewrtError(f"cannot list frame folder {p}: {exc}") from None
    if not images:
        raise ViewrtError(
            f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) and no scene.json: not a frame sequence"
        )
    return FrameSequence(name=p.resolve().name or "sequence", source=p, image_paths=images)


def _read_rgb(path: Path, tried: tuple[Path, ...]) -> np.ndarray:
    if not path.is_file():
        raise ViewrtError(not_found_message("image", path, tried))
    try:
        with Image.open(path) as im:
            im.load()
            return image_to_float_rgb(im, name=str(path))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ViewrtError(f"cannot read image {path}: {exc}") from None


def _read_depth(path: Path, hw: tuple[int, int], size: int) -> np.ndarray:
    """A ``.npy`` z-depth of the stored image's size, resized (nearest) and cropped as the
    image is."""
    if not path.is_file():
        raise ViewrtError(f"depth map not found: {path}")
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ViewrtError(f"cannot read depth map {path}: {exc}") from None
    if depth.shape != hw:
        raise ViewrtError(
            f"depth map {path}: shape {depth.shape}, expected {hw} (its image's size)"
        )
    depth = np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    h, w = hw
    short = min(h, w)
    new_w, new_h = max(size, round(w * size / short)), max(size, round(h * size / short))
    if (new_h, new_w) != (h, w):
        img = Image.fromarray(depth, mode="F").resize((new_w, new_h), Image.Resampling.NEAREST)
        depth = np.asarray(img, dtype=np.float32)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.ascontiguousarray(depth[top : top + size, left : left + size])


def iter_frames(
    seq: FrameSequence, size: int, *, check_intrinsics: bool = True
) -> Iterator[SequenceFrame]:
    """Decode a sequence's frames one at a time at the model size.

    Args:
        seq: from :func:`load_sequence`.
        size: the model's image side in pixels.
        check_intrinsics: check each frame's intrinsics against its image
            (:func:`check_intrinsics_plausible`); False for an unusual lens.

    Yields:
        :class:`SequenceFrame` per frame, in order.

    Raises:
        ViewrtError: naming the file: missing or unreadable image or depth, a frame whose
            stored size differs from the first frame's, a depth map of another size than
            its image, implausible intrinsics.
    """
    first_hw = None
    for i, path in enumerate(seq.image_paths):
        rgb = _read_rgb(path, seq.tried[i] if seq.tried else ())
        hw = rgb.shape[:2]
        if first_hw is None:
            first_hw = hw
        elif hw != first_hw:
            raise ViewrtError(
                f"{path}: frame {i} is {hw[1]}x{hw[0]} pixels, the sequence's first frame "
                f"{seq.image_paths[0].name} is {first_hw[1]}x{first_hw[0]}: a sequence has one frame size"
            )
        k = seq.fxfycxcy[i] if seq.fxfycxcy is not None else None
        if k is not None and check_intrinsics:
            check_intrinsics_plausible(k, hw[1], hw[0], name=str(path))
        image, k_out = resize_center_crop(rgb, k if k is not None else [1.0, 1.0, 0.0, 0.0], size)
        depth = _read_depth(seq.depth_paths[i], hw, size) if seq.depth_paths is not None else None
        yield SequenceFrame(
            index=i,
            path=path,
            image=image,
            c2w=seq.c2ws[i] if seq.c2ws is not None else None,
            fxfycxcy=k_out if k is not None else None,
            depth=depth,
        )
