"""Image metrics for view synthesis, as the reference models report them (numpy +
scikit-image).

* PSNR on images in [0, 1]: ``10 * log10(1 / MSE)`` over all pixels and channels of one
  image, computed in float64 (the same number as scikit-image's
  ``peak_signal_noise_ratio(gt, pred, data_range=1)``). Identical images have an infinite
  PSNR: :func:`psnr` returns ``inf`` (as scikit-image does, without its warning); callers
  that write JSON turn it into ``null`` (see ``viewrt.evaluation``).
* SSIM: scikit-image ``structural_similarity`` with an 11-tap Gaussian window
  (``win_size=11, gaussian_weights=True``, sigma 1.5), ``data_range=1``, averaged over
  the three channels (``channel_axis=0``), on float64 copies of the inputs: the settings
  of the upstream (LVSM / Efficient-LVSM) evaluation.
* LPIPS (VGG) is not computed: its network weights are not available offline, and a
  stand-in would not be comparable to published numbers. :data:`LPIPS_NOTE` says so.

Images are float ``[3, H, W]`` in [0, 1] (the runtime's layout), ``H, W >= 11``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from viewrt.errors import ViewrtError

# Lazy: scikit-image (heavy, optional: the report extra), imported where used.

SSIM_WINDOW = 11
"""Side of the Gaussian SSIM window (sigma 1.5, as Wang et al. 2004 and upstream)."""

LPIPS_NOTE = (
    "LPIPS (VGG) is not computed: its network weights are not available offline, and "
    "another network's number would not be comparable to published LPIPS"
)

__all__ = ["LPIPS_NOTE", "SSIM_WINDOW", "psnr", "ssim"]


def _pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 ``[3, H, W]`` after checking shape, dtype, range, NaN."""
    out = []
    for name, image in (("pred", pred), ("gt", gt)):
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[0] != 3:
            raise ViewrtError(f"{name}: expected a [3, H, W] image, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ViewrtError(
                f"{name}: expected a float image in [0, 1], got dtype {arr.dtype} (divide uint8 data by 255)"
            )
        if not np.isfinite(arr).all():
            raise ViewrtError(f"{name}: contains NaN or inf")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-6 or hi > 1.0 + 1e-6:
            raise ViewrtError(f"{name}: expected values in [0, 1], got range [{lo:g}, {hi:g}]")
        out.append(arr.astype(np.float64))
    if out[0].shape != out[1].shape:
        raise ViewrtError(f"pred and gt differ in shape: {out[0].shape} vs {out[1].shape}")
    return out[0], out[1]


def psnr(pred: Any, gt: Any) -> float:
    """Peak signal-to-noise ratio in dB of one image against its ground truth.

    Args:
        pred: float ``[3, H, W]`` in [0, 1].
        gt: float ``[3, H, W]`` in [0, 1].
    Returns:
        ``10 * log10(1 / mean((pred - gt)^2))`` in float64; ``inf`` for identical images.
    Raises:
        ViewrtError: on a shape mismatch, a non-float dtype, NaN or values outside [0, 1].
    """
    p, g = _pair(pred, gt)
    mse = float(np.mean((p - g) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(1.0 / mse)


def ssim(pred: Any, gt: Any) -> float:
    """Structural similarity of one image against its ground truth (upstream's settings).

    Args:
        pred: float ``[3, H, W]`` in [0, 1], ``H, W >= 11``.
        gt: float ``[3, H, W]`` in [0, 1].
    Returns:
        Mean SSIM over pixels and channels (1.0 for identical images).
    Raises:
        ViewrtError: as :func:`psnr`, or an image smaller than the 11-pixel window.
    """
    from skimage.metrics import structural_similarity

    p, g = _pair(pred, gt)
    if min(p.shape[1:]) < SSIM_WINDOW:
        raise ViewrtError(
            f"ssim: images must be at least {SSIM_WINDOW}x{SSIM_WINDOW} (the window), got {p.shape[1]}x{p.shape[2]}"
        )
    return float(
        structural_similarity(
            g, p, win_size=SSIM_WINDOW, gaussian_weights=True, data_range=1.0, channel_axis=0
        )
    )
