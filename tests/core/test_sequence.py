"""Frame sequences (viewrt.data.sequence) and the synthetic sequences with ground-truth depth
(viewrt.data.synthetic_sequence, make_synthetic_sequence)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from viewrt.data import (
    iter_frames,
    load_sequence,
    make_synthetic_scene,
    make_synthetic_sequence,
    synthetic_cameras,
    synthetic_sequence,
    synthetic_views,
)
from viewrt.errors import ViewrtError
from viewrt.geometry import image_to_uint8


def _unproject(depth, c2w, k):
    """World points [H, W, 3] of a z-depth map through pixel centres."""
    h, w = depth.shape
    fx, fy, cx, cy = k
    u = (np.arange(w) + 0.5 - cx) / fx
    v = (np.arange(h) + 0.5 - cy) / fy
    cam = np.stack(
        [np.broadcast_to(u[None], (h, w)), np.broadcast_to(v[:, None], (h, w)), np.ones((h, w))], -1
    )
    cam = cam * depth[..., None]
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def test_synthetic_depth_is_z_depth():
    images, c2ws, k, depths = synthetic_sequence(4, 32, seed=3)
    assert (
        images.shape == (4, 3, 32, 32)
        and depths.shape == (4, 32, 32)
        and depths.dtype == np.float32
    )
    for c2w, d in zip(c2ws, depths):
        hit = d > 0
        assert 0.3 < hit.mean() < 1.0  # ground and objects, and some sky
        pts = _unproject(d.astype(np.float64), c2w, k)[hit]
        # every surface is the ground (z = 0) or an object (at most 0.9 + margin high); a
        # ray distance instead of the z-depth would put off-centre ground points off the plane
        assert pts[:, 2].min() > -1e-3 and pts[:, 2].max() < 1.2
        assert (np.abs(pts[:, 2]) < 1e-3).mean() > 0.2


def test_sequence_images_are_the_scene_views_and_video_steps_are_small():
    # same scene and cameras as synthetic_views for the arc trajectory
    images, c2ws, _, _ = synthetic_sequence(3, 16, seed=1, trajectory="arc")
    ref, ref_c2ws, _ = synthetic_views(3, 16, seed=1)
    np.testing.assert_array_equal(images, ref)
    np.testing.assert_array_equal(c2ws, ref_c2ws)
    vid, _ = synthetic_cameras(30, 16, seed=1, trajectory="video")
    steps = np.linalg.norm(np.diff(vid[:, :3, 3], axis=0), axis=1)
    arc, _ = synthetic_cameras(30, 16, seed=1)
    assert steps.max() < 0.25 and steps.max() < np.linalg.norm(arc[0, :3, 3] - arc[-1, :3, 3])
    with pytest.raises(ViewrtError, match="trajectory"):
        synthetic_cameras(3, 16, trajectory="spiral")


def test_written_sequence_reads_back(tmp_path):
    path = make_synthetic_sequence(tmp_path, "seq", n_frames=4, size=24, seed=2)
    data = json.loads(path.read_text())
    assert all(f["depth_path"].startswith("depths/") for f in data["frames"])
    images, c2ws, k, depths = synthetic_sequence(4, 24, seed=2)
    for source in (path, path.parent):  # the JSON, or the folder holding scene.json
        seq = load_sequence(source)
        assert len(seq) == 4 and seq.has_poses and seq.has_depth and seq.name == "seq"
        frames = list(iter_frames(seq, 24))
        for f in frames:
            np.testing.assert_allclose(f.c2w, c2ws[f.index], atol=1e-12)
            np.testing.assert_array_equal(f.depth, depths[f.index])
            np.testing.assert_allclose(f.fxfycxcy, k)
            assert np.abs(f.image - images[f.index]).max() <= 0.5 / 255 + 1e-6  # 8-bit PNG
    # at another model size the depth is resized with the nearest sample: only stored values
    small = next(iter_frames(load_sequence(path), 12))
    assert small.depth.shape == (12, 12) and set(np.unique(small.depth)) <= set(
        np.unique(depths[0])
    )


def test_scene_without_depth_and_image_folder(tmp_path):
    scene = make_synthetic_scene(tmp_path, "plain", n_views=3, size=16)
    seq = load_sequence(scene)
    assert seq.has_poses and not seq.has_depth
    assert next(iter_frames(seq, 16)).depth is None
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.png", "c.jpg"):
        Image.fromarray(image_to_uint8(rng.random((3, 20, 30)))).save(folder / name)
    (folder / "notes.txt").write_text("not a frame")
    seq = load_sequence(folder)
    assert [p.name for p in seq.image_paths] == ["a.png", "b.png", "c.jpg"]
    assert not seq.has_poses and not seq.has_depth
    frames = list(iter_frames(seq, 16))
    assert [f.image.shape for f in frames] == [(3, 16, 16)] * 3
    assert frames[0].c2w is None and frames[0].fxfycxcy is None


def test_bad_sequences_one_line(tmp_path):
    with pytest.raises(ViewrtError, match="frame sequence not found"):
        load_sequence(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ViewrtError, match="no image files"):
        load_sequence(tmp_path / "empty")
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "0.png")
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(folder / "1.png")
    frames = iter_frames(load_sequence(folder), 16)
    next(frames)
    with pytest.raises(ViewrtError, match=r"24x20 pixels.*20x20.*one frame size") as e:
        next(frames)
    assert "\n" not in str(e.value)


def test_scene_command_writes_video_sequences(tmp_path):
    from click.testing import CliRunner

    from viewrt.cli import main

    out = tmp_path / "scenes"
    r = CliRunner().invoke(
        main, ["scene", "--out", str(out), "--views", "4", "--size", "16", "--trajectory", "video"]
    )
    assert r.exit_code == 0, r.output
    seq = load_sequence(out / "synthetic_000")
    assert len(seq) == 4 and seq.has_depth and seq.has_poses
    _, c2ws, _, depths = synthetic_sequence(4, 16, seed=0, trajectory="video")
    np.testing.assert_allclose(seq.c2ws, c2ws, atol=1e-12)
    np.testing.assert_array_equal(next(iter_frames(seq, 16)).depth, depths[0])
    # the default stays the arc scenes, without depth
    r = CliRunner().invoke(
        main, ["scene", "--out", str(tmp_path / "arc"), "--views", "3", "--size", "16"]
    )
    assert r.exit_code == 0 and not load_sequence(tmp_path / "arc" / "synthetic_000").has_depth
