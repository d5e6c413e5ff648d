"""viewrt infer on a token-window export (gct-stream, stream-tiny): the output tree, the
predictions against the PyTorch reference's own streaming cache, the untrained label in every
file, a folder of images, and bad input ending in one line with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from viewrt.cli import main
from viewrt.data import iter_frames, load_sequence
from viewrt.geometry import image_to_uint8, pose_enc_to_camera

FRAMES = 6  # frames run (the generated sequence is longer: --max-frames)
WINDOW = 3  # < FRAMES - pinned: frames are evicted
PARITY = 1e-4  # runtime (ORT) vs the PyTorch reference, per frame


def _invoke(*args):
    return CliRunner().invoke(main, ["infer", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def export_dir(stream_export):
    """The session's stream-tiny export (tests/conftest.py)."""
    return stream_export[0]


@pytest.fixture(scope="module")
def ort_run(export_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("stream_infer") / "ort"
    r = _invoke(
        export_dir, "--backend", "ort", "--threads", 1, "--window", WINDOW,
        "--max-frames", FRAMES, "--out", out,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return out, r.output


def test_output_tree_and_labels(ort_run):
    out, output = ort_run
    assert f"synthetic: {FRAMES} frames" in output and "untrained weights" in output
    for name in ("poses.json", "poses.npz", "poses.csv", "trajectory.png", "latency.json",
                 "latency.png", "summary.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert len(list((out / "depth").glob("frame_*_depth.npy"))) == FRAMES
    assert len(list((out / "depth").glob("frame_*.png"))) == FRAMES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["untrained"] and summary["weights"] == "built-in, untrained"
    assert summary["window"] == WINDOW and summary["pinned"] == 2 and summary["prefill_frames"] == 2
    assert summary["ground_truth"] == {"poses": True, "depth": True}
    assert "aligning the first frame" in summary["alignment"]
    for name in ("poses.json", "latency.json"):
        assert json.loads((out / name).read_text())["weights"] == "built-in, untrained"
    assert str(np.load(out / "poses.npz")["weights"]) == "built-in, untrained"
    for png in [out / "trajectory.png", out / "latency.png", *(out / "depth").glob("*.png")]:
        assert Image.open(png).text.get("viewrt-weights") == "built-in, untrained", png


def test_predictions_match_the_pytorch_reference(ort_run, export_dir):
    """Every frame's pose_enc and depth from the runtime equal the reference's own streaming
    cache on the same frames (window eviction included); c2w is pose_enc decoded."""
    from viewrt.contract.manifest import load_manifest
    from viewrt.models.stream_baselines import open_reference, reference_model

    out, _ = ort_run
    manifest = load_manifest(export_dir)
    frames = list(iter_frames(load_sequence(out / "_scene" / "synthetic"), 28))[:FRAMES]
    ref = open_reference(reference_model(manifest, export_dir), manifest, WINDOW, None)
    preds = ref.prefill(np.stack([f.image for f in frames[:2]]))
    preds += [ref.add_frame(f.image) for f in frames[2:]]
    poses = json.loads((out / "poses.json").read_text())["frames"]
    assert [p["frame"] for p in poses] == list(range(FRAMES))
    for p, q in zip(poses, preds):
        assert np.abs(np.array(p["pose_enc"]) - q.pose_enc).max() <= PARITY
        depth = np.load(out / p["depth_files"]["depth"])
        assert depth.shape == (28, 28)
        assert np.abs(depth - q.depth).max() <= PARITY * max(1.0, float(np.abs(q.depth).max()))
        c2w, _ = pose_enc_to_camera(
            np.r_[np.array(p["pose_enc"][:7]), np.pi / 2, np.pi / 2], 28, 28
        )
        np.testing.assert_allclose(np.array(p["c2w"]), c2w, atol=1e-9)
        assert p["errors"]["rotation_error_deg"] is not None and p["latency_ms"] > 0
    npz = np.load(out / "poses.npz")
    assert npz["pose_enc"].shape == (FRAMES, 9) and npz["gt_c2w"].shape == (FRAMES, 4, 4)
    # frame 0 is aligned onto the ground truth's frame 0
    np.testing.assert_allclose(npz["aligned_c2w"][0], npz["gt_c2w"][0], atol=1e-9)


def test_image_folder_on_torch(export_dir, tmp_path):
    """A plain folder of images (other size than the model's: resized and cropped), no
    ground truth: poses, depth, latency and the trajectory of the prediction alone."""
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(image_to_uint8(rng.random((3, 40, 50)))).save(folder / f"{i:03d}.png")
    out = tmp_path / "out"
    r = _invoke(export_dir, "--backend", "torch", "--threads", 1, "--frames", folder, "--out", out)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 4 and summary["mean_errors"] is None
    assert summary["ground_truth"] == {"poses": False, "depth": False}
    assert (out / "trajectory.png").is_file() and not (out / "_scene").exists()


def _one_line_error(r, text: str):
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], r.output


def test_bad_input_one_line_and_nothing_written(export_dir, tmp_path):
    out = tmp_path / "out"
    r = _invoke(export_dir, "--frames", tmp_path / "missing", "--out", out)
    _one_line_error(r, "frame sequence not found")
    assert not out.exists()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(mixed / "a.png")
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(mixed / "b.png")
    Image.fromarray(np.zeros((30, 28, 3), np.uint8)).save(mixed / "c.png")
    r = _invoke(export_dir, "--threads", 1, "--frames", mixed, "--out", out)
    _one_line_error(r, "one frame size")
    assert not out.exists()
    short = tmp_path / "short"
    short.mkdir()
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(short / "a.png")
    _one_line_error(_invoke(export_dir, "--frames", short, "--out", out), "at least that many")
    _one_line_error(_invoke(export_dir, "--views", 2, "--out", out), "--views do(es) not apply")
    _one_line_error(_invoke(export_dir, "--window", 99, "--out", out), "window")
    assert not out.exists()
    r = _invoke(export_dir, "--window", 0, "--out", out)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
