"""The JSON encoding of images and cameras used by the HTTP API and its client.

An image (or a stack of images) is one of:

- ``{"f32": <base64 of little-endian float32 bytes>, "shape": [3, S, S]}`` (exact; a render
  is ``[Vt, 3, S, S]``), or
- ``{"png": <base64 of an 8-bit RGB PNG>}`` (a render: ``{"png": [<base64>, ...]}``, one per
  target), values ``/ 255`` into [0, 1].

A camera is ``{"c2w": 4x4 nested list, "fxfycxcy": [fx, fy, cx, cy]}`` in the dataset's
convention (OpenCV camera-to-world, pixels).

Every decoding error is a :class:`viewrt.serve.errors.BadRequest` with one line naming the
field.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np

from viewrt.errors import ViewrtError
from viewrt.geometry import Camera
from viewrt.serve.errors import BadRequest

FORMATS = ("f32", "png")
_MAX_ELEMENTS = 1 << 28  # 1 GiB of float32: a shape beyond it is refused before allocating


def _b64(data, what: str) -> bytes:
    if not isinstance(data, str):
        raise BadRequest(f"{what}: expected a base64 string, got {type(data).__name__}")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadRequest(f"{what}: not valid base64 ({e})") from None


def encode_array(array: np.ndarray, fmt: str = "f32") -> dict:
    """Encode float images in [0, 1]: ``[3, S, S]`` or ``[N, 3, S, S]``.

    Args:
        array: float array.
        fmt: "f32" (exact) or "png" (8 bits per channel; one PNG per image of a stack).
    Returns: a JSON-ready dict (see the module docstring).
    Raises: ViewrtError for an unknown format.
    """
    if fmt == "f32":
        a = np.ascontiguousarray(array, dtype="<f4")
        return {"f32": base64.b64encode(a.tobytes()).decode("ascii"), "shape": list(a.shape)}
    if fmt == "png":
        a = np.asarray(array)
        pngs = [_png(x) for x in a] if a.ndim == 4 else _png(a)
        return {"png": pngs}
    raise ViewrtError(f"image format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _png(image: np.ndarray) -> str:
    from PIL import Image

    rgb = (np.clip(np.asarray(image, np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb.transpose(1, 2, 0)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _unpng(data: str, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(_b64(data, what))) as im:
            rgb = np.asarray(im.convert("RGB"), np.float32) / 255.0
    except Image.DecompressionBombError as e:
        raise BadRequest(f"{what}: image too large ({e})") from None
    except UnidentifiedImageError:
        raise BadRequest(f"{what}: not a readable PNG (not an image file PIL can identify)") from None
    except (OSError, ValueError) as e:
        raise BadRequest(f"{what}: not a readable PNG ({e})") from None
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))  # [3, H, W]


def decode_array(obj, what: str = "image") -> np.ndarray:
    """Decode :func:`encode_array`'s dicts into float32 arrays.

    Returns: float32 ``[3, S, S]`` (or ``[N, 3, S, S]`` for a stack).
    Raises: BadRequest naming ``what`` for a missing key, bad base64, a shape that does not
        match the bytes, or an unreadable PNG.
    """
    if not isinstance(obj, dict):
        raise BadRequest(
            f"{what}: expected an object with 'f32' and 'shape' or 'png', got {type(obj).__name__}"
        )
    if "f32" in obj:
        return _decode_f32(obj, what)
    if "png" in obj:
        p = obj["png"]
        if isinstance(p, list):
            return np.stack([_unpng(x, f"{what}.png[{i}]") for i, x in enumerate(p)])
        return _unpng(p, f"{what}.png")
    raise BadRequest(
        f"{what}: expected an object with 'f32' and 'shape' or 'png', got keys {sorted(obj)}"
    )


def _decode_f32(obj: dict, what: str) -> np.ndarray:
    shape = obj.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise BadRequest(f"{what}.shape: expected a list of non-negative integers, got {shape!r}")
    n = int(np.prod(shape, dtype=np.int64))
    if n > _MAX_ELEMENTS:
        raise BadRequest(f"{what}.shape: {shape} is too large ({n} floats)")
    raw = _b64(obj["f32"], f"{what}.f32")
    if len(raw) != 4 * n:
        raise BadRequest(
            f"{what}.f32: {len(raw)} bytes, expected {4 * n} for shape {shape} of float32"
        )
    return np.frombuffer(raw, "<f4").reshape(shape).astype(np.float32)


def encode_camera(camera) -> dict:
    """``{"c2w": [[4 x 4]], "fxfycxcy": [4]}`` of a Camera or a (c2w, fxfycxcy) pair."""
    if not isinstance(camera, Camera):
        camera = Camera(*camera)
    return {"c2w": camera.c2w.tolist(), "fxfycxcy": camera.fxfycxcy.tolist()}


def decode_camera(obj, what: str = "camera") -> Camera:
    """A Camera from ``{"c2w", "fxfycxcy"}``.

    Raises: BadRequest naming ``what``: not an object, missing keys, non-numbers, a pose
        that is not rigid, a non-positive focal (the checks of :class:`viewrt.geometry.Camera`).
    """
    if not isinstance(obj, dict) or not {"c2w", "fxfycxcy"} <= set(obj):
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise BadRequest(
            f"{what}: expected an object with 'c2w' (4x4) and 'fxfycxcy' (4), got {got}"
        )
    try:
        c2w = np.asarray(obj["c2w"], np.float64)
        k = np.asarray(obj["fxfycxcy"], np.float64)
    except (TypeError, ValueError) as e:
        raise BadRequest(f"{what}: c2w and fxfycxcy must be lists of numbers ({e})") from None
    try:
        return Camera(c2w, k)
    except ViewrtError as e:
        raise BadRequest(f"{what}: {e}") from None


def encode_frame(cameras) -> list:
    """The ``frame`` option of a new session: the c2w matrices (4x4 nested lists) of Cameras,
    (c2w, fxfycxcy) pairs or 4x4 arrays, from which the scene's normalization frame is
    computed."""
    out = []
    for c in cameras:
        if isinstance(c, Camera):
            c = c.c2w
        elif isinstance(c, (tuple, list)) and len(c) == 2:
            c = c[0]
        out.append(np.asarray(c, np.float64).tolist())
    return out


def decode_frame(obj, what: str = "frame") -> np.ndarray:
    """float64 ``[N, 4, 4]`` c2w matrices of the ``frame`` option (N >= 1).

    Raises: BadRequest naming ``what`` for anything but a non-empty list of 4x4 numbers.
    """
    try:
        m = np.asarray(obj, np.float64)
    except (TypeError, ValueError):
        m = None
    if m is None or m.ndim != 3 or m.shape[1:] != (4, 4) or not len(m):
        raise BadRequest(f"{what}: expected a non-empty list of 4x4 c2w matrices")
    return m
