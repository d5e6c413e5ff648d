"""Pose encodings (viewrt.geometry: pose_enc <-> c2w + fxfycxcy) and the per-frame camera and
depth metrics (viewrt.metrics), on hand-made cases and random round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from viewrt.errors import ViewrtError
from viewrt.geometry import (
    camera_to_pose_enc,
    look_at,
    pose_enc_to_camera,
    quaternion_to_rotation,
    rotation_to_quaternion,
)
from viewrt.metrics import align_first_frame, depth_errors, pose_errors


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _pose(rot, t):
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rot, t
    return m


def test_quaternion_hand_made():
    # 90 degrees about z: (x, y, z, w) = (0, 0, sin 45, cos 45); x axis -> y axis
    s = math.sqrt(0.5)
    rot = quaternion_to_rotation([0.0, 0.0, s, s])
    np.testing.assert_allclose(rot, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(rotation_to_quaternion(rot), [0, 0, s, s], atol=1e-15)
    # real part last: the identity is (0, 0, 0, 1); an unnormalized q is normalized
    np.testing.assert_allclose(quaternion_to_rotation([0, 0, 0, 5.0]), np.eye(3), atol=1e-15)
    # 180 degrees about x (trace -1: the branch without the real part)
    np.testing.assert_allclose(
        rotation_to_quaternion(np.diag([1.0, -1.0, -1.0])), [1, 0, 0, 0], atol=1e-15
    )


@pytest.mark.parametrize("seed", range(3))
def test_quaternion_round_trip_random(seed):
    rng = np.random.default_rng(seed)
    rots = np.stack([_random_rotation(rng) for _ in range(50)])
    q = rotation_to_quaternion(rots)
    assert (q[:, 3] >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_rotation(q), rots, atol=1e-12)
    # -q is the same rotation and comes back as q (w >= 0)
    np.testing.assert_allclose(rotation_to_quaternion(quaternion_to_rotation(-q)), q, atol=1e-12)


def test_pose_enc_hand_made():
    # camera at (1, 2, 3) looking along world +z with identity rotation: w2c t = -(1, 2, 3)
    c2w = _pose(np.eye(3), [1.0, 2.0, 3.0])
    k = [32.0, 16.0, 32.0, 16.0]  # 64 wide, 32 high: fov_w = 2 atan(1) = 90 deg, fov_h = 90 deg
    enc = camera_to_pose_enc(c2w, k, 32, 64)
    np.testing.assert_allclose(enc, [-1, -2, -3, 0, 0, 0, 1, math.pi / 2, math.pi / 2], atol=1e-15)
    back, kk = pose_enc_to_camera(enc, 32, 64)
    np.testing.assert_allclose(back, c2w, atol=1e-15)
    np.testing.assert_allclose(kk, k, atol=1e-12)
    # fov_h is the first FoV (from fy and the height), fov_w the second
    enc2 = camera_to_pose_enc(c2w, [64.0, 16.0, 32.0, 16.0], 32, 64)
    assert enc2[7] == pytest.approx(math.pi / 2) and enc2[8] == pytest.approx(2 * math.atan(0.5))


@pytest.mark.parametrize("seed", range(3))
def test_pose_enc_round_trip_random(seed):
    rng = np.random.default_rng(seed)
    n, h, w = 20, 48, 80
    c2ws = np.stack([_pose(_random_rotation(rng), rng.normal(size=3) * 3) for _ in range(n)])
    ks = np.stack([[rng.uniform(20, 200), rng.uniform(20, 200), w / 2, h / 2] for _ in range(n)])
    enc = camera_to_pose_enc(c2ws, ks, h, w)
    assert enc.shape == (n, 9)
    back, kk = pose_enc_to_camera(enc, h, w)
    np.testing.assert_allclose(back, c2ws, atol=1e-12)
    np.testing.assert_allclose(kk, ks, rtol=1e-12)
    # decoding normalizes the quaternion: a scaled q decodes to the same camera
    scaled = enc.copy()
    scaled[:, 3:7] *= 3.0
    np.testing.assert_allclose(pose_enc_to_camera(scaled, h, w)[0], c2ws, atol=1e-12)


def test_pose_enc_bad_inputs_one_line():
    with pytest.raises(ViewrtError, match="shape"):
        pose_enc_to_camera(np.zeros(8), 32, 32)
    with pytest.raises(ViewrtError, match="zero quaternion"):
        pose_enc_to_camera([0, 0, 0, 0, 0, 0, 0, 1, 1], 32, 32)
    with pytest.raises(ViewrtError, match="field of view"):
        pose_enc_to_camera([0, 0, 0, 0, 0, 0, 1, 0, 1], 32, 32)
    with pytest.raises(ViewrtError, match="NaN"):
        pose_enc_to_camera([0, 0, np.nan, 0, 0, 0, 1, 1, 1], 32, 32)
    with pytest.raises(ViewrtError, match="orthonormal"):
        rotation_to_quaternion(np.eye(3) * 2)


# --------------------------------------------------------------------------- metrics


def _trajectory(rng, n=6):
    return np.stack([look_at(rng.normal(size=3) * 2 + [4, 0, 1.5], [0, 0, 0.5]) for _ in range(n)])


def test_align_first_frame_recovers_a_similarity():
    rng = np.random.default_rng(0)
    gt = _trajectory(rng)
    # the prediction lives in its first camera's world, at half the scale
    g = _pose(_random_rotation(rng), rng.normal(size=3))
    pred = g[None] @ gt
    pred[:, :3, 3] *= 0.5
    aligned, s = align_first_frame(pred, gt)
    assert s == pytest.approx(2.0, rel=1e-12)
    np.testing.assert_allclose(aligned, gt, atol=1e-12)
    err = pose_errors(
        aligned,
        np.tile([50.0, 50, 16, 16], (6, 1)),
        gt,
        np.tile([50.0, 50, 16, 16], (6, 1)),
        32,
        32,
    )
    for v in err.values():
        np.testing.assert_allclose(v, 0.0, atol=1e-5)
    # rigid only: the scale stays, so the centres are off by half their distance to frame 0
    rigid, s1 = align_first_frame(pred, gt, scale=False)
    assert s1 == 1.0
    d = np.linalg.norm(gt[:, :3, 3] - gt[0, :3, 3], axis=1)
    np.testing.assert_allclose(
        np.linalg.norm(rigid[:, :3, 3] - gt[:, :3, 3], axis=1), d / 2, atol=1e-12
    )


def test_pose_errors_hand_made():
    gt = np.stack([np.eye(4), np.eye(4)])
    pred = np.stack(
        [
            np.eye(4),
            _pose(quaternion_to_rotation([0, 0, math.sin(0.25), math.cos(0.25)]), [3.0, 4.0, 0.0]),
        ]
    )
    # frame 1: 0.5 rad about z, centre 5 away; fx 32 vs 16 on a 32-px image: 53.13 vs 90 deg
    k_gt = np.array([[16.0, 16, 16, 16], [16.0, 16, 16, 16]])
    k_pred = np.array([[16.0, 16, 16, 16], [32.0, 16, 16, 16]])
    e = pose_errors(pred, k_pred, gt, k_gt, 32, 32)
    np.testing.assert_allclose(e["translation_error"], [0.0, 5.0], atol=1e-12)
    np.testing.assert_allclose(e["rotation_error_deg"], [0.0, math.degrees(0.5)], atol=1e-6)
    np.testing.assert_allclose(
        e["fov_w_error_deg"], [0.0, 90.0 - math.degrees(2 * math.atan(0.5))], atol=1e-9
    )
    np.testing.assert_allclose(e["fov_h_error_deg"], [0.0, 0.0], atol=1e-12)


def test_depth_errors_hand_made():
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])  # 0: no surface, never counted
    pred = np.array([[1.0, 2.0], [5.0, 7.0]])
    e = depth_errors(pred, gt, median_scale=False)
    assert e["pixels"] == 3
    assert e["abs_rel"] == pytest.approx((0 + 0 + 0.25) / 3)
    assert e["delta_1_25"] == pytest.approx(2 / 3)  # 5/4 = 1.25 is not < 1.25
    # median scaling: a prediction at twice the scale scores perfectly
    e2 = depth_errors(2 * gt + (gt == 0), gt)
    assert e2["abs_rel"] == pytest.approx(0.0, abs=1e-15) and e2["scale"] == pytest.approx(0.5)
    # confidence: the low-confidence half is left out
    conf = np.array([[3.0, 3.0], [1.0, 9.0]])
    e3 = depth_errors(pred, gt, conf=conf, conf_quantile=0.5, median_scale=False)
    assert e3["pixels"] == 2 and e3["abs_rel"] == pytest.approx(0.0)
    none = depth_errors(pred, np.zeros((2, 2)))
    assert none["pixels"] == 0 and math.isnan(none["abs_rel"])
    with pytest.raises(ViewrtError, match="shape"):
        depth_errors(pred, np.zeros((3, 2)))
