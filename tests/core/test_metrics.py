"""viewrt.metrics against scikit-image (the reference's evaluation) and known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from viewrt.errors import ViewrtError
from viewrt.metrics import LPIPS_NOTE, psnr, ssim

ATOL = 1e-12  # same float64 inputs, same formula: equal up to rounding


def _sk_ssim(pred, gt):
    return structural_similarity(
        gt, pred, win_size=11, gaussian_weights=True, data_range=1.0, channel_axis=0
    )


def _pair(seed: int, shape=(3, 32, 40), noise=0.1):
    rng = np.random.default_rng(seed)
    gt = rng.random(shape)
    pred = np.clip(gt + noise * rng.standard_normal(shape), 0.0, 1.0)
    return pred, gt


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("noise", [0.01, 0.1, 0.5])
def test_random_pairs_match_skimage(seed, noise):
    pred, gt = _pair(seed, noise=noise)
    assert psnr(pred, gt) == pytest.approx(
        peak_signal_noise_ratio(gt, pred, data_range=1.0), abs=ATOL
    )
    assert ssim(pred, gt) == pytest.approx(_sk_ssim(pred, gt), abs=ATOL)


def test_structured_pair_matches_skimage():
    y, x = np.mgrid[0:48, 0:48] / 47.0
    gt = np.stack([x, y, 0.5 * (x + y)])  # smooth gradients
    pred = gt.copy()
    pred[:, 10:30, 10:30] = 0.2  # a flat patch where the gradient was
    assert psnr(pred, gt) == pytest.approx(
        peak_signal_noise_ratio(gt, pred, data_range=1.0), abs=ATOL
    )
    assert ssim(pred, gt) == pytest.approx(_sk_ssim(pred, gt), abs=ATOL)
    assert ssim(pred, gt) < 1.0


def test_known_psnr_values():
    gt = np.full((3, 16, 16), 0.25)
    assert psnr(gt + 0.1, gt) == pytest.approx(20.0, abs=1e-9)  # MSE 0.01
    assert psnr(gt + 0.01, gt) == pytest.approx(40.0, abs=1e-9)  # MSE 1e-4
    assert psnr(np.ones((3, 16, 16)), np.zeros((3, 16, 16))) == pytest.approx(
        0.0, abs=1e-12
    )  # MSE 1


def test_identical_images():
    pred, _ = _pair(0)
    assert psnr(pred, pred) == math.inf  # decision: inf (as skimage); infer writes it as null
    assert ssim(pred, pred) == pytest.approx(1.0, abs=1e-12)


def test_float32_inputs_are_scored_in_float64():
    pred, gt = _pair(1)
    p32, g32 = pred.astype(np.float32), gt.astype(np.float32)
    p64, g64 = p32.astype(np.float64), g32.astype(np.float64)
    assert psnr(p32, g32) == pytest.approx(
        peak_signal_noise_ratio(g64, p64, data_range=1.0), abs=ATOL
    )
    assert ssim(p32, g32) == pytest.approx(_sk_ssim(p64, g64), abs=ATOL)


def test_symmetric():
    pred, gt = _pair(2)
    assert psnr(pred, gt) == pytest.approx(psnr(gt, pred), abs=ATOL)
    assert ssim(pred, gt) == pytest.approx(ssim(gt, pred), abs=1e-12)


@pytest.mark.parametrize(
    "pred, gt, match",
    [
        (np.zeros((3, 16, 16)), np.zeros((3, 16, 17)), "differ in shape"),
        (np.zeros((16, 16, 3)), np.zeros((16, 16, 3)), r"\[3, H, W\]"),
        (np.zeros((3, 16, 16), np.uint8), np.zeros((3, 16, 16)), "dtype uint8"),
        (np.full((3, 16, 16), np.nan), np.zeros((3, 16, 16)), "NaN"),
        (np.full((3, 16, 16), 2.0), np.zeros((3, 16, 16)), r"\[0, 1\]"),
    ],
)
def test_bad_inputs(pred, gt, match):
    with pytest.raises(ViewrtError, match=match):
        psnr(pred, gt)
    with pytest.raises(ViewrtError, match=match):
        ssim(pred, gt)


def test_ssim_needs_the_window():
    with pytest.raises(ViewrtError, match="at least 11x11"):
        ssim(np.zeros((3, 10, 32)), np.zeros((3, 10, 32)))


def test_lpips_is_declared_unavailable():
    assert "LPIPS" in LPIPS_NOTE and "not computed" in LPIPS_NOTE
