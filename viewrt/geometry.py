"""Camera geometry for view synthesis (numpy only).

Conventions (those of LVSM / Efficient-LVSM; the dataset side is in ``docs/data.md``):

* Cameras are OpenCV style: x right, y down, z forward. Poses are camera-to-world 4x4
  matrices (``c2w``); datasets store world-to-camera (``w2c``), see :func:`w2c_to_c2w`.
* Intrinsics are ``fxfycxcy = [fx, fy, cx, cy]`` in pixels. Pixel ``(x, y)`` covers
  ``[x, x+1) x [y, y+1)``, so its ray goes through the pixel centre ``(x+0.5, y+0.5)``.
* Images handed to the model are float ``[3, H, W]`` in ``[0, 1]``; files on disk are
  ``[H, W, 3]`` uint8 (:func:`image_to_uint8`, :func:`uint8_to_image`).
* Ray maps: input views have 9 channels ``[2*rgb-1, o x d, d]`` (:func:`input_view`),
  target views 6 channels ``[o x d, d]`` (:func:`plucker`, alias :func:`target_view`).

Every problem the caller can fix raises :class:`~viewrt.errors.ViewrtError`.

PIL is imported lazily (:func:`resize_center_crop`), so that ``import viewrt.runtime`` does
not load it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from viewrt.errors import ViewrtError

# Lazy: PIL (only resize_center_crop needs it; the runtime imports this module), imported
# where used.

RIGID_TOL = 1e-3
"""Tolerance on ``|R^T R - I|``, ``|det R - 1|`` and the last row of a pose."""

SCENE_SCALE_FACTOR = 1.35
"""Upstream scene normalization: translations are divided by ``1.35 * max |t|``."""

_DEGENERATE = 1e-6


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# --------------------------------------------------------------------------- checks


def _as_array(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Convert to a finite float64 array of exactly ``shape`` or raise ViewrtError."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ViewrtError(
            f"{name}: expected numbers of shape {shape}, got a value that is not a "
            f"rectangular array of numbers ({exc})"
        ) from None
    if arr.shape != shape:
        raise ViewrtError(f"{name}: expected shape {shape}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ViewrtError(f"{name}: expected finite values, got NaN or inf: {arr.tolist()}")
    return arr


def _as_pose_stack(value: Any, name: str) -> tuple[np.ndarray, bool]:
    """``[4, 4]`` or ``[N, 4, 4]`` finite float64 poses as ``([N, 4, 4], was_single)``."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ViewrtError(
            f"{name}: expected poses of shape [4, 4] or [N, 4, 4], got a value that is not "
            f"a rectangular array of numbers ({exc})"
        ) from None
    single = arr.shape == (4, 4)
    if single:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (4, 4) or arr.shape[0] < 1:
        raise ViewrtError(
            f"{name}: expected shape [4, 4] or [N, 4, 4] with N >= 1, got shape {arr.shape}"
        )
    for i, p in enumerate(arr):
        if not np.all(np.isfinite(p)):
            raise ViewrtError(f"{name}[{i}]: expected finite values, got NaN or inf")
    return arr, single


def _check_rigid(m: np.ndarray, name: str) -> None:
    """Raise ViewrtError unless the finite 4x4 ``m`` is a rigid transform."""
    rot = m[:3, :3]
    err = float(np.max(np.abs(rot.T @ rot - np.eye(3))))
    if err > RIGID_TOL:
        raise ViewrtError(
            f"{name}: rotation part must be orthonormal (a rigid camera, no scale or "
            f"shear), got max |R^T R - I| = {err:.3g} (tolerance {RIGID_TOL:g})"
        )
    det = float(np.linalg.det(rot))
    if abs(det - 1.0) > RIGID_TOL:
        raise ViewrtError(
            f"{name}: rotation must have det +1 (a right-handed camera), got det = {det:.4f}"
        )
    if np.max(np.abs(m[3] - np.array([0.0, 0.0, 0.0, 1.0]))) > RIGID_TOL:
        raise ViewrtError(f"{name}: last row must be [0, 0, 0, 1], got {m[3].tolist()}")


def _check_intrinsics(fxfycxcy: Any, name: str) -> np.ndarray:
    k = _as_array(fxfycxcy, f"{name} fxfycxcy", (4,))
    if k[0] <= 0 or k[1] <= 0:
        raise ViewrtError(
            f"{name} fxfycxcy: focal lengths fx, fy must be > 0 pixels, got fx={k[0]:g}, "
            f"fy={k[1]:g}"
        )
    return k


def _check_size(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ViewrtError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def check_camera(c2w: Any, fxfycxcy: Any, name: str = "camera") -> tuple[np.ndarray, np.ndarray]:
    """Validate one camera.

    Args:
        c2w: camera-to-world pose, 4x4, rigid (orthonormal rotation with det +1 within
            ``RIGID_TOL``, last row ``[0, 0, 0, 1]``), finite.
        fxfycxcy: ``[fx, fy, cx, cy]`` in pixels, finite, ``fx, fy > 0``.
        name: what to call the camera in error messages (e.g. ``"scene.json frame 3"``).

    Returns:
        ``(c2w, fxfycxcy)`` as float64 copies, shapes ``[4, 4]`` and ``[4]``.

    Raises:
        ViewrtError: on a wrong shape, NaN/inf, a non-rigid pose or a non-positive focal.
    """
    m = _as_array(c2w, f"{name} c2w", (4, 4))
    _check_rigid(m, f"{name} c2w")
    k = _check_intrinsics(fxfycxcy, name)
    return m, k


def rigid_inverse(m: Any, name: str = "pose") -> np.ndarray:
    """Invert a rigid 4x4 transform exactly as ``[R^T | -R^T t]``.

    Args:
        m: rigid 4x4 matrix (validated as in :func:`check_camera`).
        name: what to call it in error messages.

    Returns:
        float64 ``[4, 4]`` inverse with last row exactly ``[0, 0, 0, 1]``.

    Raises:
        ViewrtError: on a wrong shape, NaN/inf or a non-rigid matrix.
    """
    a = _as_array(m, name, (4, 4))
    _check_rigid(a, name)
    rot_t = a[:3, :3].T
    out = np.eye(4)
    out[:3, :3] = rot_t
    out[:3, 3] = -rot_t @ a[:3, 3]
    return out


def w2c_to_c2w(w2c: Any, name: str = "w2c") -> np.ndarray:
    """Camera-to-world pose from a world-to-camera pose (rigid inverse ``R^T, -R^T t``).

    Args:
        w2c: rigid 4x4 world-to-camera matrix.
        name: what to call it in error messages.

    Returns:
        float64 ``[4, 4]`` c2w. (The same function turns a c2w back into a w2c.)

    Raises:
        ViewrtError: on a wrong shape, NaN/inf or a non-rigid matrix.
    """
    return rigid_inverse(w2c, name)


def look_at(eye: Any, target: Any, up: Any = (0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV camera-to-world pose at ``eye`` looking at ``target``.

    Columns: right = normalize(forward x up), down = forward x right, forward =
    normalize(target - eye), so image y points along ``-up`` as far as possible.

    Args:
        eye: camera position [3].
        target: point the optical axis goes through [3].
        up: world up direction [3] (default +z); must not be parallel to the view axis.

    Returns:
        float64 rigid ``[4, 4]`` c2w.

    Raises:
        ViewrtError: if eye == target, up is parallel to the view direction, or NaN.
    """
    e = _as_array(eye, "look_at eye", (3,))
    g = _as_array(target, "look_at target", (3,))
    u = _as_array(up, "look_at up", (3,))
    fwd = g - e
    if np.linalg.norm(fwd) < 1e-12:
        raise ViewrtError(f"look_at: eye and target must differ, both are {e.tolist()}")
    fwd = _unit(fwd)
    right = np.cross(fwd, u)
    if np.linalg.norm(right) < _DEGENERATE:
        raise ViewrtError(
            f"look_at: up {u.tolist()} must not be parallel to the view direction {fwd.tolist()}"
        )
    right = _unit(right)
    down = np.cross(fwd, right)
    c2w = np.eye(4)
    c2w[:3, 0] = right
    c2w[:3, 1] = down
    c2w[:3, 2] = fwd
    c2w[:3, 3] = e
    return c2w


# --------------------------------------------------------------------------- rays


def rays(c2w: Any, fxfycxcy: Any, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel rays through pixel centres (OpenCV convention).

    ``d_cam = [(x+0.5-cx)/fx, (y+0.5-cy)/fy, 1]``, ``d = normalize(R @ d_cam)``, ``o = t``.

    Args:
        c2w: rigid camera-to-world 4x4.
        fxfycxcy: intrinsics in pixels of the ``height x width`` image.
        height: image height in pixels (rows, y).
        width: image width in pixels (columns, x).

    Returns:
        ``(origins, dirs)``, both float64 ``[height, width, 3]``; dirs have unit norm.

    Raises:
        ViewrtError: on an invalid camera or size.
    """
    m, k = check_camera(c2w, fxfycxcy)
    h = _check_size(height, "height")
    w = _check_size(width, "width")
    fx, fy, cx, cy = k
    u = (np.arange(w, dtype=np.float64) + 0.5 - cx) / fx
    v = (np.arange(h, dtype=np.float64) + 0.5 - cy) / fy
    d_cam = np.empty((h, w, 3), dtype=np.float64)
    d_cam[..., 0] = u[None, :]
    d_cam[..., 1] = v[:, None]
    d_cam[..., 2] = 1.0
    dirs = d_cam @ m[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    origins = np.broadcast_to(m[:3, 3], (h, w, 3)).copy()
    return origins, dirs


def plucker(c2w: Any, fxfycxcy: Any, height: int, width: int) -> np.ndarray:
    """Plucker ray map of a camera, the 6-channel target-view input of the model.

    Args:
        c2w: rigid camera-to-world 4x4.
        fxfycxcy: intrinsics in pixels of the ``height x width`` image.
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        float32 ``[6, height, width]``: channels ``[o x d (3), d (3)]``, computed in
        float64 and cast once.

    Raises:
        ViewrtError: on an invalid camera or size.
    """
    origins, dirs = rays(c2w, fxfycxcy, height, width)
    moment = np.cross(origins, dirs)
    out = np.concatenate([moment, dirs], axis=-1)  # [H, W, 6]
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)


target_view = plucker
"""Alias of :func:`plucker`: the 6-channel ``[o x d, d]`` map of a target view."""


def _check_chw_image(image: Any, name: str = "image") -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ViewrtError(f"{name}: expected a [3, H, W] float image, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ViewrtError(
            f"{name}: expected a float image in [0, 1], got dtype {arr.dtype} "
            "(use uint8_to_image for uint8 data)"
        )
    if not np.all(np.isfinite(arr)):
        raise ViewrtError(f"{name}: expected finite values, got NaN or inf")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ViewrtError(f"{name}: expected values in [0, 1], got range [{lo:g}, {hi:g}]")
    return arr


def input_view(image: Any, c2w: Any, fxfycxcy: Any) -> np.ndarray:
    """The 9-channel model input of a posed image.

    Args:
        image: float ``[3, H, W]`` RGB in ``[0, 1]``.
        c2w: rigid camera-to-world 4x4.
        fxfycxcy: intrinsics in pixels of this ``H x W`` image.

    Returns:
        float32 ``[9, H, W]``: ``[2*rgb - 1, o x d, d]``.

    Raises:
        ViewrtError: on a bad image (shape, dtype, NaN, range) or camera.
    """
    img = _check_chw_image(image)
    _, h, w = img.shape
    rays6 = plucker(c2w, fxfycxcy, h, w)
    rgb = (2.0 * img.astype(np.float32) - 1.0).astype(np.float32)
    return np.concatenate([rgb, rays6], axis=0)


# --------------------------------------------------------------------------- normalization


@dataclass(frozen=True, eq=False)
class NormalizationFrame:
    """Scene normalization: ``c2w' = transform @ c2w``, then ``t' *= scale``.

    The frame must be fixed before the first view is encoded (every cached K/V depends on
    it); build it with :meth:`from_cameras` from the views known at that point, or take
    one from the caller (:meth:`from_dict`, :meth:`identity`).

    Attributes:
        transform: float64 ``[4, 4]``, ``inv([right down forward | center])``.
        scale: positive float, ``1 / (1.35 * max |t|)`` with ``max |t|`` the largest
            absolute translation *coordinate* of the transformed cameras (upstream).
    """

    transform: np.ndarray
    scale: float

    def __post_init__(self) -> None:
        m = _as_array(self.transform, "NormalizationFrame transform", (4, 4))
        _check_rigid(m, "NormalizationFrame transform")
        s = float(self.scale)
        if not np.isfinite(s) or s <= 0:
            raise ViewrtError(f"NormalizationFrame scale: expected a finite value > 0, got {s!r}")
        m.setflags(write=False)
        object.__setattr__(self, "transform", m)
        object.__setattr__(self, "scale", s)

    @classmethod
    def identity(cls) -> NormalizationFrame:
        """The frame that changes nothing (transform I, scale 1)."""
        return cls(np.eye(4), 1.0)

    @classmethod
    def from_cameras(cls, c2ws: Any) -> NormalizationFrame:
        """Upstream (LVSM) scene normalization computed from a set of cameras.

        center = mean camera position; forward = normalize(mean R[:, 2]);
        down = mean R[:, 1]; right = normalize(down x forward);
        down = normalize(forward x right); transform = inv([right down forward | center]);
        scale = 1 / (1.35 * max_i,k |t'_ik|) over the transformed translations t'
        (element-wise max of absolute coordinates, as upstream's
        ``max(abs(c2ws[:, :3, 3]))``), or 1 if that max is 0 (e.g. one camera).

        Degenerate orientations that upstream turns into NaN are resolved
        deterministically: if the mean forward vanishes (cameras facing opposite ways) the
        first camera's forward is used; if the mean down is parallel to forward, the world
        axis least aligned with forward is used as down.

        Args:
            c2ws: ``[N, 4, 4]`` rigid camera-to-world poses, N >= 1.

        Returns:
            The frame.

        Raises:
            ViewrtError: on a wrong shape, NaN or a non-rigid camera (named by index).
        """
        poses, _ = _as_pose_stack(c2ws, "c2ws")
        for i, p in enumerate(poses):
            _check_rigid(p, f"c2ws[{i}]")
        center = poses[:, :3, 3].mean(axis=0)
        forward = poses[:, :3, 2].mean(axis=0)
        if np.linalg.norm(forward) < _DEGENERATE:
            forward = poses[0, :3, 2]
        forward = _unit(forward)
        down = poses[:, :3, 1].mean(axis=0)
        right = np.cross(down, forward)
        if np.linalg.norm(right) < _DEGENERATE:
            down = np.eye(3)[int(np.argmin(np.abs(forward)))]
            right = np.cross(down, forward)
        right = _unit(right)
        down = _unit(np.cross(forward, right))
        frame = np.eye(4)
        frame[:3, 0] = right
        frame[:3, 1] = down
        frame[:3, 2] = forward
        frame[:3, 3] = center
        transform = rigid_inverse(frame, "normalization frame")
        moved = transform[None] @ poses
        max_t = float(np.max(np.abs(moved[:, :3, 3])))
        scale = 1.0 if max_t <= 1e-12 else 1.0 / (SCENE_SCALE_FACTOR * max_t)
        return cls(transform, scale)

    def apply(self, c2w: Any) -> np.ndarray:
        """Normalize one pose ``[4, 4]`` or a stack ``[N, 4, 4]``.

        Args:
            c2w: rigid camera-to-world pose(s).

        Returns:
            float64 pose(s) of the same shape: ``transform @ c2w`` with the translation
            multiplied by ``scale`` (rotation unchanged).

        Raises:
            ViewrtError: on a wrong shape or NaN/inf.
        """
        poses, single = _as_pose_stack(c2w, "c2w")
        out = self.transform[None] @ poses
        out[:, :3, 3] *= self.scale
        return out[0] if single else out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"transform": 4x4 list, "scale": float}``."""
        return {"transform": self.transform.tolist(), "scale": self.scale}

    @classmethod
    def from_dict(cls, data: Any) -> NormalizationFrame:
        """Inverse of :meth:`to_dict`.

        Raises:
            ViewrtError: if ``data`` is not a dict with a rigid 4x4 ``transform`` and a
                positive ``scale``.
        """
        if not isinstance(data, dict):
            raise ViewrtError(
                f"normalization frame: expected a dict with 'transform' and 'scale', got "
                f"{type(data).__name__}"
            )
        for key in ("transform", "scale"):
            if key not in data:
                raise ViewrtError(f"normalization frame: missing key {key!r}")
        scale = data["scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise ViewrtError(f"normalization frame 'scale': expected a number, got {scale!r}")
        return cls(_as_array(data["transform"], "normalization frame 'transform'", (4, 4)), scale)


def normalize_scene(c2ws: Any) -> tuple[np.ndarray, NormalizationFrame]:
    """Normalize a set of cameras with the frame computed from themselves.

    Args:
        c2ws: ``[N, 4, 4]`` rigid camera-to-world poses (a single ``[4, 4]`` also works).

    Returns:
        ``(normalized c2ws [N, 4, 4] float64, frame)``.

    Raises:
        ViewrtError: as :meth:`NormalizationFrame.from_cameras`.
    """
    frame = NormalizationFrame.from_cameras(c2ws)
    return frame.apply(c2ws), frame


# --------------------------------------------------------------------------- images


def resize_center_crop(image: Any, fxfycxcy: Any, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize so the short side is ``size``, centre-crop a square, adjust intrinsics.

    Resampling is PIL bicubic on each channel in float32 (PIL widens the kernel when
    shrinking, so downscaling is antialiased); the result is clipped to ``[0, 1]``. An
    image already ``size x size`` is passed through unchanged. The resized size is
    ``(round(W * size / short), round(H * size / short))`` and the actual factors
    ``sx = W'/W``, ``sy = H'/H`` are used: ``fx, cx *= sx``; ``fy, cy *= sy``; then the
    crop offsets ``left = (W' - size) // 2``, ``top = (H' - size) // 2`` are subtracted
    from ``cx``, ``cy``.

    Args:
        image: ``[H, W, 3]`` uint8 (0..255) or float (0..1) RGB.
        fxfycxcy: intrinsics in pixels of ``image``.
        size: output side in pixels.

    Returns:
        ``(image float32 [3, size, size] in [0, 1], fxfycxcy float64 [4])``.

    Raises:
        ViewrtError: on a bad image shape/dtype/NaN, size or intrinsics.
    """

    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ViewrtError(f"image: expected an [H, W, 3] RGB array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        img = arr.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ViewrtError("image: expected finite values, got NaN or inf")
        img = arr.astype(np.float32)
    else:
        raise ViewrtError(f"image: expected dtype uint8 or float, got {arr.dtype}")
    s = _check_size(size, "size")
    k = _check_intrinsics(fxfycxcy, "image")
    h, w = img.shape[:2]
    short = min(h, w)
    new_w = max(s, int(round(w * s / short)))
    new_h = max(s, int(round(h * s / short)))
    if (new_h, new_w) != (h, w):
        from PIL import Image

        channels = [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(img[..., c])).resize(
                    (new_w, new_h), resample=Image.Resampling.BICUBIC
                ),
                dtype=np.float32,
            )
            for c in range(3)
        ]
        img = np.clip(np.stack(channels, axis=-1), 0.0, 1.0)
    sx, sy = new_w / w, new_h / h
    left, top = (new_w - s) // 2, (new_h - s) // 2
    crop = img[top : top + s, left : left + s]
    out = np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32)
    fx, fy, cx, cy = k
    new_k = np.array([fx * sx, fy * sy, cx * sx - left, cy * sy - top], dtype=np.float64)
    return out, new_k


def image_to_uint8(image: Any) -> np.ndarray:
    """Float ``[3, H, W]`` image in ``[0, 1]`` to ``[H, W, 3]`` uint8 for a PNG.

    Values are clipped to ``[0, 1]`` and rounded to the nearest of 0..255.

    Raises:
        ViewrtError: on a wrong shape, non-float dtype or NaN/inf.
    """
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ViewrtError(f"image: expected a [3, H, W] float image, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ViewrtError(f"image: expected a float image in [0, 1], got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ViewrtError("image: expected finite values, got NaN or inf")
    q = np.rint(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(q.transpose(1, 2, 0))


def uint8_to_image(array: Any) -> np.ndarray:
    """``[H, W, 3]`` uint8 (e.g. a decoded PNG) to a float32 ``[3, H, W]`` image in [0, 1].

    Raises:
        ViewrtError: on a wrong shape or dtype.
    """
    arr = np.asarray(array)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ViewrtError(f"image: expected an [H, W, 3] uint8 array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ViewrtError(f"image: expected dtype uint8, got {arr.dtype}")
    out = arr.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


@dataclass(frozen=True, eq=False)
class Camera:
    """A posed pinhole camera in the dataset's convention (OpenCV c2w, pixels).

    Attributes:
        c2w: float64 ``[4, 4]`` camera-to-world pose.
        fxfycxcy: float64 ``[4]`` intrinsics in pixels of the image it comes with.
    """

    c2w: np.ndarray
    fxfycxcy: np.ndarray

    def __post_init__(self) -> None:
        m, k = check_camera(self.c2w, self.fxfycxcy)
        object.__setattr__(self, "c2w", m)
        object.__setattr__(self, "fxfycxcy", k)

    @classmethod
    def from_w2c(cls, w2c: Any, fxfycxcy: Any) -> Camera:
        return cls(w2c_to_c2w(w2c), fxfycxcy)


# --------------------------------------------------------------------------- pose encodings
#
# The streaming geometry family (gct-stream) predicts a camera as a 9-vector ``pose_enc``:
# ``[t (3), q (4), fov_h, fov_w]``. Conventions are VGGT's "absT_quaR_FoV" encoding, which
# lingbot-map's camera head inherits (VGGT ``vggt/utils/pose_enc.py`` and
# ``vggt/utils/rotation.py``; lingbot-map ``lingbot_map/utils/geometry.py`` keeps VGGT's
# "OpenCV, cam from world" extrinsics):
#
# * ``t`` and ``q`` are the world-to-camera extrinsics ``[R | t]`` (OpenCV axes), not the
#   camera pose: ``c2w = rigid_inverse(w2c)``;
# * ``q`` is a quaternion with the real part last, ``(x, y, z, w)``;
# * ``fov_h = 2 atan(H / (2 fy))`` and ``fov_w = 2 atan(W / (2 fx))`` in radians; decoding
#   puts the principal point at the image centre, ``cx = W / 2``, ``cy = H / 2``.

POSE_ENC_SIZE = 9
"""Length of a pose encoding: translation 3, quaternion 4 (x, y, z, w), FoV 2 (h, w)."""


def quaternion_to_rotation(q: Any) -> np.ndarray:
    """Rotation matrices of quaternions ``(x, y, z, w)`` (real part last).

    The quaternion is normalized first (a network's output need not have unit norm);
    ``q`` and ``-q`` give the same rotation.

    Args:
        q: ``[4]`` or ``[N, 4]`` finite numbers, not all zero.
    Returns:
        float64 ``[3, 3]`` or ``[N, 3, 3]`` rotation matrices (det +1).
    Raises:
        ViewrtError: on a wrong shape, NaN/inf or a zero quaternion.
    """
    arr = np.array(q, dtype=np.float64)
    single = arr.ndim == 1
    arr = np.atleast_2d(arr)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ViewrtError(f"quaternion: expected shape [4] or [N, 4], got shape {np.shape(q)}")
    if not np.all(np.isfinite(arr)):
        raise ViewrtError("quaternion: expected finite values, got NaN or inf")
    norm = np.linalg.norm(arr, axis=1, keepdims=True)
    if np.any(norm < 1e-12):
        raise ViewrtError("quaternion: a zero quaternion has no rotation")
    x, y, z, w = (arr / norm).T
    rot = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )
    return rot[0] if single else rot


def rotation_to_quaternion(rot: Any) -> np.ndarray:
    """Quaternions ``(x, y, z, w)`` (real part last, ``w >= 0``) of rotation matrices.

    Shepperd's method: the largest of ``1 + trace`` and ``1 + 2 R_ii - trace`` picks the
    component computed from a square root, the others from off-diagonal sums, so no
    branch divides by a small number.

    Args:
        rot: ``[3, 3]`` or ``[N, 3, 3]`` rotation matrices (orthonormal, det +1 within
            :data:`RIGID_TOL`).
    Returns:
        float64 ``[4]`` or ``[N, 4]`` unit quaternions with ``w >= 0``.
    Raises:
        ViewrtError: on a wrong shape, NaN/inf or a matrix that is not a rotation.
    """
    arr = np.array(rot, dtype=np.float64)
    single = arr.shape == (3, 3)
    arr = arr[None] if single else arr
    if arr.ndim != 3 or arr.shape[1:] != (3, 3):
        raise ViewrtError(
            f"rotation: expected shape [3, 3] or [N, 3, 3], got shape {np.shape(rot)}"
        )
    out = np.empty((len(arr), 4))
    for i, m in enumerate(arr):
        pose = np.eye(4)
        pose[:3, :3] = m
        _check_rigid(_as_array(pose, f"rotation[{i}]", (4, 4)), f"rotation[{i}]")
        tr = np.trace(m)
        k = int(np.argmax([tr, m[0, 0], m[1, 1], m[2, 2]]))
        if k == 0:
            s = 2.0 * np.sqrt(1.0 + tr)
            q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
        elif k == 1:
            s = 2.0 * np.sqrt(1.0 + 2 * m[0, 0] - tr)
            q = [s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
        elif k == 2:
            s = 2.0 * np.sqrt(1.0 + 2 * m[1, 1] - tr)
            q = [(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
        else:
            s = 2.0 * np.sqrt(1.0 + 2 * m[2, 2] - tr)
            q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s]
        q = np.asarray(q) / np.linalg.norm(q)
        out[i] = -q if q[3] < 0 else q
    return out[0] if single else out


def pose_enc_to_camera(pose_enc: Any, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera pose and intrinsics of pose encodings (conventions above this function).

    Args:
        pose_enc: ``[9]`` or ``[N, 9]``: ``[t (3), q (4, x y z w), fov_h, fov_w]`` with
            ``t, q`` the world-to-camera extrinsics and the FoVs in radians, in (0, pi).
        height, width: the image size in pixels the FoVs refer to.
    Returns:
        ``(c2w float64 [4, 4] or [N, 4, 4] OpenCV camera-to-world, fxfycxcy float64 [4]
        or [N, 4] in pixels, principal point at the image centre)``.
    Raises:
        ViewrtError: on a wrong shape, NaN/inf, a zero quaternion, a FoV outside (0, pi)
            or a bad size.
    """
    arr = np.array(pose_enc, dtype=np.float64)
    single = arr.ndim == 1
    arr = np.atleast_2d(arr)
    if arr.ndim != 2 or arr.shape[1] != POSE_ENC_SIZE:
        raise ViewrtError(
            f"pose_enc: expected shape [{POSE_ENC_SIZE}] or [N, {POSE_ENC_SIZE}], got shape {np.shape(pose_enc)}"
        )
    if not np.all(np.isfinite(arr)):
        raise ViewrtError("pose_enc: expected finite values, got NaN or inf")
    h, w = _check_size(height, "height"), _check_size(width, "width")
    fov = arr[:, 7:9]
    if np.any(fov <= 0.0) or np.any(fov >= np.pi):
        raise ViewrtError(f"pose_enc: field of view must be in (0, pi) radians, got {fov.tolist()}")
    w2c = np.tile(np.eye(4), (len(arr), 1, 1))
    w2c[:, :3, :3] = quaternion_to_rotation(arr[:, 3:7])
    w2c[:, :3, 3] = arr[:, :3]
    c2w = np.stack([rigid_inverse(m, "pose_enc extrinsics") for m in w2c])
    fy = (h / 2.0) / np.tan(fov[:, 0] / 2.0)
    fx = (w / 2.0) / np.tan(fov[:, 1] / 2.0)
    k = np.stack([fx, fy, np.full_like(fx, w / 2.0), np.full_like(fx, h / 2.0)], axis=1)
    return (c2w[0], k[0]) if single else (c2w, k)


def camera_to_pose_enc(c2w: Any, fxfycxcy: Any, height: int, width: int) -> np.ndarray:
    """Pose encodings of cameras (the inverse of :func:`pose_enc_to_camera`).

    Args:
        c2w: ``[4, 4]`` or ``[N, 4, 4]`` rigid OpenCV camera-to-world poses.
        fxfycxcy: ``[4]`` (shared) or ``[N, 4]`` intrinsics in pixels; the principal point
            is not encoded (decoding puts it at the centre).
        height, width: the image size in pixels.
    Returns:
        float64 ``[9]`` or ``[N, 9]``: ``[t, q (x y z w, w >= 0), fov_h, fov_w]`` of the
        world-to-camera extrinsics, FoVs in radians.
    Raises:
        ViewrtError: on a wrong shape, NaN/inf, a non-rigid pose, a non-positive focal
            length or a bad size.
    """
    poses, single = _as_pose_stack(c2w, "c2w")
    k = np.array(fxfycxcy, dtype=np.float64)
    k = np.broadcast_to(k, (len(poses), 4)) if k.shape == (4,) else k
    if k.shape != (len(poses), 4):
        raise ViewrtError(f"fxfycxcy: expected shape [4] or [{len(poses)}, 4], got shape {k.shape}")
    h, w = _check_size(height, "height"), _check_size(width, "width")
    out = np.empty((len(poses), POSE_ENC_SIZE))
    for i, (pose, ki) in enumerate(zip(poses, k)):
        _check_intrinsics(ki, f"camera {i}")
        w2c = rigid_inverse(pose, f"c2w[{i}]")
        out[i, :3] = w2c[:3, 3]
        out[i, 3:7] = rotation_to_quaternion(w2c[:3, :3])
        out[i, 7] = 2.0 * np.arctan((h / 2.0) / ki[1])
        out[i, 8] = 2.0 * np.arctan((w / 2.0) / ki[0])
    return out[0] if single else out
