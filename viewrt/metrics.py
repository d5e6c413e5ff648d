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

Camera and depth metrics of a frame sequence (the streaming geometry family), per frame,
as trajectory and depth evaluations report them (translation error, rotation angle, FoV
error; depth AbsRel and delta < 1.25):

* :func:`align_first_frame`: predicted poses are compared after moving them so that the
  first predicted camera coincides with the first ground-truth camera (what a user of a
  streaming model does: the model's world is its first camera's), with the scale of the
  predicted trajectory fitted to the ground truth by least squares (a model from images
  has no metric scale);
* :func:`pose_errors`: camera-centre distance (ground-truth units), rotation angle of
  ``R_pred^T R_gt`` in degrees, FoV differences in degrees;
* :func:`depth_errors`: AbsRel and delta < 1.25 over the pixels with a ground-truth depth
  and a high confidence (at or above the frame's confidence quantile), after median
  scaling (the ratio of medians, as monocular depth evaluations do) unless told not to.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from viewrt.errors import ViewrtError
from viewrt.geometry import rigid_inverse

# Lazy: scikit-image (heavy, optional: the report extra), imported where used.

SSIM_WINDOW = 11
"""Side of the Gaussian SSIM window (sigma 1.5, as Wang et al. 2004 and upstream)."""

LPIPS_NOTE = (
    "LPIPS (VGG) is not computed: its network weights are not available offline, and "
    "another network's number would not be comparable to published LPIPS"
)

__all__ = [
    "LPIPS_NOTE",
    "SSIM_WINDOW",
    "DEPTH_DELTA",
    "align_first_frame",
    "depth_errors",
    "pose_errors",
    "psnr",
    "ssim",
]


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


# --------------------------------------------------------------------------- cameras and depth

DEPTH_DELTA = 1.25
"""Threshold of the depth accuracy ``max(d/g, g/d) < 1.25`` (Eigen et al. 2014)."""


def _poses(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (4, 4) or len(arr) < 1:
        raise ViewrtError(f"{name}: expected poses [N, 4, 4] with N >= 1, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ViewrtError(f"{name}: contains NaN or inf")
    return arr


def align_first_frame(pred_c2w: Any, gt_c2w: Any, scale: bool = True) -> tuple[np.ndarray, float]:
    """Predicted camera poses in the ground truth's world, aligned on the first frame.

    ``A = gt[0] @ inv(pred[0])`` maps the first predicted camera onto the first
    ground-truth one; every predicted pose becomes ``A @ pred[i]``. With ``scale``, the
    camera centres are then scaled about the first one by ``s = sum <p_i, g_i> / sum
    <p_i, p_i>`` (``p_i``, ``g_i``: centres relative to frame 0; the least-squares scale),
    1 when the predicted centres do not move.

    Args:
        pred_c2w: float ``[N, 4, 4]`` rigid camera-to-world poses as predicted.
        gt_c2w: float ``[N, 4, 4]`` ground-truth camera-to-world poses.
        scale: fit the scale of the predicted trajectory (False: rigid alignment only).
    Returns:
        ``(aligned c2w float64 [N, 4, 4], scale s)``.
    Raises:
        ViewrtError: different counts, a wrong shape, NaN/inf or a non-rigid first pose.
    """
    pred, gt = _poses(pred_c2w, "pred_c2w"), _poses(gt_c2w, "gt_c2w")
    if len(pred) != len(gt):
        raise ViewrtError(f"pred_c2w and gt_c2w differ in length: {len(pred)} vs {len(gt)}")
    a = gt[0] @ rigid_inverse(pred[0], "pred_c2w[0]")
    out = a[None] @ pred
    s = 1.0
    if scale:
        p = out[:, :3, 3] - out[0, :3, 3]
        g = gt[:, :3, 3] - gt[0, :3, 3]
        pp = float(np.sum(p * p))
        if pp > 1e-24:
            s = float(np.sum(p * g)) / pp
        out[:, :3, 3] = out[0, :3, 3] + s * p
    return out, s


def pose_errors(
    pred_c2w: Any, pred_k: Any, gt_c2w: Any, gt_k: Any, height: int, width: int
) -> dict:
    """Per-frame camera errors of poses already aligned (see :func:`align_first_frame`).

    Args:
        pred_c2w, gt_c2w: float ``[N, 4, 4]`` camera-to-world poses.
        pred_k, gt_k: float ``[N, 4]`` intrinsics ``fxfycxcy`` in pixels of an image
            ``height x width``.
        height, width: the image size in pixels.
    Returns:
        ``{"translation_error": [N] distance of the camera centres (ground-truth units),
        "rotation_error_deg": [N] angle of R_pred^T R_gt in degrees, "fov_h_error_deg",
        "fov_w_error_deg": [N] |FoV_pred - FoV_gt| in degrees}``, float64 arrays.
    Raises:
        ViewrtError: on mismatched shapes or NaN/inf.
    """
    pred, gt = _poses(pred_c2w, "pred_c2w"), _poses(gt_c2w, "gt_c2w")
    kp, kg = np.asarray(pred_k, np.float64), np.asarray(gt_k, np.float64)
    if len(pred) != len(gt) or kp.shape != (len(pred), 4) or kg.shape != (len(gt), 4):
        raise ViewrtError(
            f"pose_errors: expected N poses and [N, 4] intrinsics each, got {pred.shape}, {kp.shape}, "
            f"{gt.shape}, {kg.shape}"
        )
    trans = np.linalg.norm(pred[:, :3, 3] - gt[:, :3, 3], axis=1)
    rel = np.einsum("nji,njk->nik", pred[:, :3, :3], gt[:, :3, :3])  # R_pred^T R_gt
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    rot = np.degrees(np.arccos(cos))

    def fov(f, size):
        return np.degrees(2.0 * np.arctan(size / (2.0 * f)))

    return {
        "translation_error": trans,
        "rotation_error_deg": rot,
        "fov_h_error_deg": np.abs(fov(kp[:, 1], height) - fov(kg[:, 1], height)),
        "fov_w_error_deg": np.abs(fov(kp[:, 0], width) - fov(kg[:, 0], width)),
    }


def depth_errors(
    pred: Any,
    gt: Any,
    conf: Any | None = None,
    conf_quantile: float = 0.5,
    median_scale: bool = True,
) -> dict:
    """Depth errors of one frame over the valid, confident pixels.

    Valid: the ground truth is finite and > 0 (0 marks no surface, e.g. sky) and the
    prediction is finite and > 0. Confident: ``conf >= quantile(conf[valid],
    conf_quantile)`` (all valid pixels when ``conf`` is None or the quantile is 0). With
    ``median_scale`` the prediction is first multiplied by ``median(gt) / median(pred)``
    over those pixels.

    Args:
        pred: float ``[H, W]`` predicted z-depth.
        gt: float ``[H, W]`` ground-truth z-depth (0: none).
        conf: float ``[H, W]`` confidence, higher is surer, or None.
        conf_quantile: in [0, 1): the fraction of valid pixels with the lowest confidence
            left out.
        median_scale: align the prediction's scale by the ratio of medians.
    Returns:
        ``{"abs_rel": mean |d - g| / g, "delta_1_25": fraction with max(d/g, g/d) < 1.25,
        "pixels": count used, "scale": the factor applied (1.0 without median scaling)}``;
        the two errors are NaN when no pixel is used.
    Raises:
        ViewrtError: on mismatched shapes or a quantile outside [0, 1).
    """
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if p.ndim != 2 or p.shape != g.shape:
        raise ViewrtError(
            f"depth: expected pred and gt of one shape [H, W], got {p.shape} and {g.shape}"
        )
    if not 0.0 <= conf_quantile < 1.0:
        raise ViewrtError(f"conf_quantile: expected a value in [0, 1), got {conf_quantile}")
    valid = np.isfinite(g) & (g > 0) & np.isfinite(p) & (p > 0)
    if conf is not None:
        c = np.asarray(conf, np.float64)
        if c.shape != p.shape:
            raise ViewrtError(f"depth_conf: expected shape {p.shape}, got {c.shape}")
        if valid.any() and conf_quantile > 0:
            valid &= c >= np.quantile(c[valid], conf_quantile)
    n = int(valid.sum())
    if n == 0:
        return {"abs_rel": math.nan, "delta_1_25": math.nan, "pixels": 0, "scale": 1.0}
    d, t = p[valid], g[valid]
    s = float(np.median(t) / np.median(d)) if median_scale else 1.0
    d = d * s
    ratio = np.maximum(d / t, t / d)
    return {
        "abs_rel": float(np.mean(np.abs(d - t) / t)),
        "delta_1_25": float(np.mean(ratio < DEPTH_DELTA)),
        "pixels": n,
        "scale": s,
    }
