"""Tests of viewrt.geometry: rays, Plucker maps, normalization, checks, image resizing."""

import json

import numpy as np
import pytest

from viewrt.errors import ViewrtError
from viewrt.geometry import (
    NormalizationFrame,
    check_camera,
    image_to_uint8,
    input_view,
    look_at,
    normalize_scene,
    plucker,
    rays,
    resize_center_crop,
    rigid_inverse,
    target_view,
    uint8_to_image,
    w2c_to_c2w,
)

# Rotation by +90 degrees about world z: camera x -> world +y, camera y -> world -x.
ROT_Z90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def _pose(rot, t):
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = t
    return m


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _random_cameras(rng, n):
    # roughly forward-facing rig (as in RealEstate10K) with random jitter
    out = []
    for _ in range(n):
        eye = rng.normal(size=3) * 2.0 + np.array([5.0, -3.0, 1.0])
        target = eye + np.array([1.0, 0.5, 0.2]) + rng.normal(size=3) * 0.3
        c2w = look_at(eye, target, up=[0.0, 0.0, 1.0])
        if rng.random() < 0.3:  # a few arbitrary orientations
            c2w[:3, :3] = c2w[:3, :3] @ _random_rotation(rng)
        out.append(c2w)
    return np.stack(out)


# --------------------------------------------------------------------------- rays


def test_rays_identity_hand_computed():
    o, d = rays(np.eye(4), [2.0, 2.0, 1.0, 1.0], 2, 2)
    assert o.shape == (2, 2, 3) and d.shape == (2, 2, 3)
    assert o.dtype == np.float64 and d.dtype == np.float64
    # pixel (x=0, y=0): centre (0.5, 0.5) -> d_cam = [-0.25, -0.25, 1] / sqrt(1.125)
    n = np.sqrt(1.125)
    np.testing.assert_allclose(d[0, 0], [-0.25 / n, -0.25 / n, 1.0 / n], atol=1e-15)
    # row y=0, column x=1: centre (1.5, 0.5) -> [0.25, -0.25, 1] / n
    np.testing.assert_allclose(d[0, 1], [0.25 / n, -0.25 / n, 1.0 / n], atol=1e-15)
    # row y=1, column x=0: centre (0.5, 1.5) -> [-0.25, 0.25, 1] / n
    np.testing.assert_allclose(d[1, 0], [-0.25 / n, 0.25 / n, 1.0 / n], atol=1e-15)
    np.testing.assert_array_equal(o, np.zeros((2, 2, 3)))


def test_rays_rotated_translated_hand_computed():
    c2w = _pose(ROT_Z90, [1.0, 2.0, 3.0])
    # fx=4, fy=2, cx=1, cy=0.5, image 1 row x 2 columns
    o, d = rays(c2w, [4.0, 2.0, 1.0, 0.5], 1, 2)
    # x=1: d_cam = [(1.5-1)/4, (0.5-0.5)/2, 1] = [0.125, 0, 1];
    # R @ d_cam = 0.125*(0,1,0) + 1*(0,0,1) = (0, 0.125, 1); norm sqrt(1.015625)
    n = np.sqrt(1.015625)
    np.testing.assert_allclose(d[0, 1], [0.0, 0.125 / n, 1.0 / n], atol=1e-15)
    # x=0: d_cam = [-0.125, 0, 1] -> (0, -0.125, 1) / n
    np.testing.assert_allclose(d[0, 0], [0.0, -0.125 / n, 1.0 / n], atol=1e-15)
    np.testing.assert_array_equal(o[0, 0], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(o[0, 1], [1.0, 2.0, 3.0])

    p = plucker(c2w, [4.0, 2.0, 1.0, 0.5], 1, 2)
    assert p.shape == (6, 1, 2) and p.dtype == np.float32
    # moment of pixel x=1: (1,2,3) x (0,a,b) = (2b - 3a, -b, a), a=0.125/n, b=1/n
    a, b = 0.125 / n, 1.0 / n
    np.testing.assert_allclose(p[:3, 0, 1], [2 * b - 3 * a, -b, a], atol=1e-6)
    np.testing.assert_allclose(p[3:, 0, 1], [0.0, a, b], atol=1e-6)


def test_rays_reject_bad_size():
    with pytest.raises(ViewrtError, match="height"):
        rays(np.eye(4), [1, 1, 0, 0], 0, 4)
    with pytest.raises(ViewrtError, match="width"):
        rays(np.eye(4), [1, 1, 0, 0], 4, 2.5)


def test_plucker_channels_and_unit_dirs():
    rng = np.random.default_rng(0)
    c2w = _pose(_random_rotation(rng), rng.normal(size=3))
    k = [30.0, 28.0, 15.5, 11.0]
    o, d = rays(c2w, k, 20, 24)
    p = plucker(c2w, k, 20, 24)
    assert p.shape == (6, 20, 24)
    np.testing.assert_allclose(p[3:].transpose(1, 2, 0), d, atol=1e-6)
    np.testing.assert_allclose(p[:3].transpose(1, 2, 0), np.cross(o, d), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(p[3:], axis=0), 1.0, atol=1e-6)
    assert target_view is plucker


def test_plucker_moment_invariant_along_ray():
    rng = np.random.default_rng(1)
    c2w = _pose(_random_rotation(rng), rng.normal(size=3))
    k = [10.0, 10.0, 4.0, 4.0]
    p = plucker(c2w, k, 8, 8)
    d = p[3:, 5, 2].astype(np.float64)
    moved = c2w.copy()
    moved[:3, 3] += 2.5 * d  # slide the camera along the ray of pixel (x=2, y=5)
    q = plucker(moved, k, 8, 8)
    np.testing.assert_allclose(q[:, 5, 2], p[:, 5, 2], atol=1e-5)
    # other pixels' rays are different lines: their moments change
    assert np.abs(q[:3, 0, 0] - p[:3, 0, 0]).max() > 1e-2


def test_input_view_channels():
    rng = np.random.default_rng(2)
    img = rng.uniform(size=(3, 6, 5)).astype(np.float32)
    c2w = _pose(ROT_Z90, [0.5, -1.0, 2.0])
    k = [5.0, 5.0, 2.5, 3.0]
    x = input_view(img, c2w, k)
    assert x.shape == (9, 6, 5) and x.dtype == np.float32
    np.testing.assert_allclose(x[:3], 2 * img - 1, atol=1e-7)
    np.testing.assert_array_equal(x[3:], plucker(c2w, k, 6, 5))
    with pytest.raises(ViewrtError, match=r"\[0, 1\]"):
        input_view(img * 255, c2w, k)
    with pytest.raises(ViewrtError, match=r"\[3, H, W\]"):
        input_view(img.transpose(1, 2, 0), c2w, k)


# --------------------------------------------------------------------------- checks


def test_check_camera_accepts_and_rejects():
    c2w, k = check_camera(_pose(ROT_Z90, [1, 2, 3]), [1, 1, 0, 0])
    assert c2w.dtype == np.float64 and k.shape == (4,)
    with pytest.raises(ViewrtError, match="orthonormal"):
        check_camera(_pose(2.0 * np.eye(3), [0, 0, 0]), [1, 1, 0, 0], name="cam7")
    with pytest.raises(ViewrtError, match="cam7"):
        check_camera(_pose(2.0 * np.eye(3), [0, 0, 0]), [1, 1, 0, 0], name="cam7")
    with pytest.raises(ViewrtError, match="det"):
        check_camera(_pose(np.diag([1.0, 1.0, -1.0]), [0, 0, 0]), [1, 1, 0, 0])
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(ViewrtError, match="NaN"):
        check_camera(bad, [1, 1, 0, 0])
    with pytest.raises(ViewrtError, match="NaN"):
        check_camera(np.eye(4), [1, np.nan, 0, 0])
    with pytest.raises(ViewrtError, match="fx"):
        check_camera(np.eye(4), [0.0, 1, 0, 0])
    with pytest.raises(ViewrtError, match="fy=-1"):
        check_camera(np.eye(4), [1.0, -1.0, 0, 0])
    with pytest.raises(ViewrtError, match=r"\(4, 4\)"):
        check_camera(np.eye(3), [1, 1, 0, 0])
    with pytest.raises(ViewrtError, match=r"\(4,\)"):
        check_camera(np.eye(4), [1, 1, 0])
    last = np.eye(4)
    last[3, 0] = 0.5
    with pytest.raises(ViewrtError, match="last row"):
        check_camera(last, [1, 1, 0, 0])


def test_w2c_to_c2w_is_rigid_inverse():
    rng = np.random.default_rng(3)
    w2c = _pose(_random_rotation(rng), rng.normal(size=3))
    c2w = w2c_to_c2w(w2c)
    np.testing.assert_allclose(c2w @ w2c, np.eye(4), atol=1e-12)
    np.testing.assert_array_equal(c2w[:3, :3], w2c[:3, :3].T)
    np.testing.assert_array_equal(c2w[3], [0, 0, 0, 1])
    np.testing.assert_allclose(rigid_inverse(c2w), w2c, atol=1e-12)
    with pytest.raises(ViewrtError, match="w2c"):
        w2c_to_c2w(np.diag([2.0, 2.0, 2.0, 1.0]))


def test_look_at_opencv_axes():
    c2w = look_at([0.0, -3.0, 0.0], [0.0, 0.0, 0.0], up=[0.0, 0.0, 1.0])
    # looking along +y with z up: right = +x, down = -z, forward = +y
    np.testing.assert_allclose(c2w[:3, :3], [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-15)
    check_camera(c2w, [1, 1, 0, 0])
    with pytest.raises(ViewrtError, match="parallel"):
        look_at([0, 0, 0], [0, 0, 1], up=[0, 0, 1])


# --------------------------------------------------------------------------- normalization


def test_normalization_properties():
    rng = np.random.default_rng(4)
    c2ws = _random_cameras(rng, 7)
    frame = NormalizationFrame.from_cameras(c2ws)
    out = frame.apply(c2ws)
    assert out.shape == (7, 4, 4) and out.dtype == np.float64
    np.testing.assert_allclose(out[:, :3, 3].mean(axis=0), 0.0, atol=1e-9)
    # upstream: max over all cameras and coordinates of |t| (element-wise)
    assert np.isclose(np.abs(out[:, :3, 3]).max(), 1.0 / 1.35, rtol=0, atol=1e-12)
    for m in out:
        np.testing.assert_allclose(m[:3, :3].T @ m[:3, :3], np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(m[:3, :3]), 1.0)
        np.testing.assert_array_equal(m[3], [0, 0, 0, 1])
    # the mean forward becomes +z; the mean down lies in the y-z plane with y > 0
    fwd = out[:, :3, 2].mean(axis=0)
    np.testing.assert_allclose(fwd / np.linalg.norm(fwd), [0, 0, 1], atol=1e-12)
    down = out[:, :3, 1].mean(axis=0)
    assert abs(down[0]) < 1e-12 and down[1] > 0
    # a single pose is handled like a stack of one
    np.testing.assert_allclose(frame.apply(c2ws[2]), out[2], atol=1e-15)
    normed, frame2 = normalize_scene(c2ws)
    np.testing.assert_array_equal(normed, out)
    np.testing.assert_array_equal(frame2.transform, frame.transform)


def test_normalization_matches_explicit_formula():
    rng = np.random.default_rng(5)
    c2ws = _random_cameras(rng, 4)
    center = c2ws[:, :3, 3].mean(0)
    fwd = c2ws[:, :3, 2].mean(0)
    fwd /= np.linalg.norm(fwd)
    down = c2ws[:, :3, 1].mean(0)
    right = np.cross(down, fwd)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    down /= np.linalg.norm(down)
    avg = np.eye(4)
    avg[:3, :4] = np.stack([right, down, fwd, center], axis=1)
    expect = np.linalg.inv(avg) @ c2ws
    expect[:, :3, 3] /= 1.35 * np.abs(expect[:, :3, 3]).max()
    got = NormalizationFrame.from_cameras(c2ws).apply(c2ws)
    np.testing.assert_allclose(got, expect, atol=1e-10)


def test_normalization_roundtrip_and_edge_cases():
    rng = np.random.default_rng(6)
    frame = NormalizationFrame.from_cameras(_random_cameras(rng, 5))
    back = NormalizationFrame.from_dict(json.loads(json.dumps(frame.to_dict())))
    np.testing.assert_array_equal(back.transform, frame.transform)
    assert back.scale == frame.scale
    ident = NormalizationFrame.identity()
    c2w = _pose(ROT_Z90, [1, 2, 3])
    np.testing.assert_array_equal(ident.apply(c2w), c2w)
    # single camera: it becomes the identity pose, scale guarded to 1
    one = NormalizationFrame.from_cameras(c2w[None])
    assert one.scale == 1.0
    np.testing.assert_allclose(one.apply(c2w), np.eye(4), atol=1e-12)
    # two cameras facing each other: upstream would give NaN; we stay finite and rigid
    a = look_at([0, -2, 0], [0, 0, 0])
    b = look_at([0, 2, 0], [0, 0, 0])
    out = NormalizationFrame.from_cameras(np.stack([a, b])).apply(np.stack([a, b]))
    assert np.all(np.isfinite(out))
    with pytest.raises(ViewrtError, match="scale"):
        NormalizationFrame.from_dict({"transform": np.eye(4).tolist()})
    with pytest.raises(ViewrtError, match="c2ws\\[1\\]"):
        NormalizationFrame.from_cameras(np.stack([np.eye(4), np.diag([2.0, 1, 1, 1])]))
    with pytest.raises(ViewrtError, match="N, 4, 4"):
        NormalizationFrame.from_cameras(np.zeros((2, 3, 4)))
    with pytest.raises(AttributeError):
        frame.scale = 2.0  # frozen


# --------------------------------------------------------------------------- images


def test_resize_center_crop_landscape_ramp():
    h, w = 40, 80
    ramp = np.broadcast_to(((np.arange(w) + 0.5) / w)[None, :, None], (h, w, 3)).astype(np.float32)
    img, k = resize_center_crop(ramp, [50.0, 60.0, 40.0, 20.0], 32)
    assert img.shape == (3, 32, 32) and img.dtype == np.float32
    # short side 40 -> 32: factor 0.8 both ways, resized 64 x 32, crop offset left=16, top=0
    np.testing.assert_allclose(k, [40.0, 48.0, 40 * 0.8 - 16, 20 * 0.8], atol=1e-12)
    # new pixel x'' has old coordinate (x''+16+0.5)/0.8 -> ramp value (x''+16.5)/64
    np.testing.assert_allclose(img[0, 16, 4:28], (np.arange(4, 28) + 16.5) / 64, atol=2e-3)
    # the old principal point (ramp value 0.5) sits at the new cx = 16: between columns 15, 16
    assert abs(0.5 * (img[0, 16, 15] + img[0, 16, 16]) - 0.5) < 2e-3


def test_resize_center_crop_portrait_uint8_and_passthrough():
    h, w = 90, 30
    ramp = ((np.arange(h) + 0.5) / h * 255).astype(np.uint8)
    img8 = np.repeat(np.broadcast_to(ramp[:, None, None], (h, w, 1)), 3, axis=2)
    img, k = resize_center_crop(img8, [20.0, 20.0, 15.0, 45.0], 10)
    assert img.shape == (3, 10, 10)
    # factor 1/3, resized 10 x 30, top = 10: cy = 45/3 - 10 = 5 (image centre)
    np.testing.assert_allclose(k, [20 / 3, 20 / 3, 5.0, 5.0], atol=1e-12)
    assert 0.45 < 0.5 * (img[0, 4, 5] + img[0, 5, 5]) < 0.55
    sq = np.random.default_rng(7).uniform(size=(16, 16, 3))
    out, k2 = resize_center_crop(sq, [8, 8, 8, 8], 16)
    np.testing.assert_allclose(out, sq.transpose(2, 0, 1), atol=1e-7)
    np.testing.assert_array_equal(k2, [8, 8, 8, 8])
    with pytest.raises(ViewrtError, match="H, W, 3"):
        resize_center_crop(np.zeros((4, 4)), [1, 1, 1, 1], 2)
    with pytest.raises(ViewrtError, match="size"):
        resize_center_crop(sq, [8, 8, 8, 8], 0)


def test_uint8_roundtrip():
    rng = np.random.default_rng(8)
    u8 = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    img = uint8_to_image(u8)
    assert img.shape == (3, 5, 7) and img.dtype == np.float32
    assert img.min() >= 0 and img.max() <= 1
    np.testing.assert_array_equal(image_to_uint8(img), u8)
    np.testing.assert_array_equal(image_to_uint8(np.full((3, 1, 1), 1.7)), [[[255, 255, 255]]])
    with pytest.raises(ViewrtError, match="NaN"):
        image_to_uint8(np.full((3, 2, 2), np.nan))
    with pytest.raises(ViewrtError, match="uint8"):
        uint8_to_image(np.zeros((2, 2, 3), dtype=np.float32))
