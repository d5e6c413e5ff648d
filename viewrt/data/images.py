"""A frame's image: decoded by mode to float RGB, its intrinsics checked against it, and
brought to the model size (:func:`load_frame`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from viewrt.data.readers import Frame
from viewrt.data.roots import not_found_message
from viewrt.errors import ViewrtError
from viewrt.geometry import resize_center_crop

__all__ = ["check_intrinsics_plausible", "image_to_float_rgb", "load_frame"]


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
        raise ViewrtError(not_found_message("image", path, frame.tried))
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
