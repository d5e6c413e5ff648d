"""Tests of viewrt.data: readers, their errors, and the synthetic scene generator."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from viewrt.data import (
    Frame,
    load_eval_index,
    load_frame,
    load_scene,
    load_scene_list,
    make_eval_index,
    make_synthetic_list,
    make_synthetic_scene,
    synthetic_cameras,
)
from viewrt.errors import ViewrtError
from viewrt.geometry import NormalizationFrame, check_camera


def _write_scene(path: Path, frames, name="s0"):
    path.write_text(json.dumps({"scene_name": name, "frames": frames}))
    return path


def _frame(image_path="img.png", k=(10.0, 10.0, 5.0, 5.0), w2c=None):
    return {
        "image_path": image_path,
        "fxfycxcy": list(k),
        "w2c": (np.eye(4) if w2c is None else np.asarray(w2c)).tolist(),
    }


# --------------------------------------------------------------------------- synthetic


def test_synthetic_scene_roundtrip(tmp_path):
    json_path = make_synthetic_scene(tmp_path, name="syn", n_views=6, size=32, seed=3)
    assert json_path == tmp_path / "syn" / "scene.json"
    scene = load_scene(json_path)
    assert scene.name == "syn" and len(scene.frames) == 6 and scene.path == json_path
    c2ws, k = synthetic_cameras(6, 32, 3)
    assert c2ws.shape == (6, 4, 4)
    np.testing.assert_array_equal(k, [32.0, 32.0, 16.0, 16.0])
    images = []
    for i, frame in enumerate(scene.frames):
        assert frame.image_path == tmp_path / "syn" / "images" / f"{i:05d}.png"
        np.testing.assert_allclose(frame.c2w, c2ws[i], atol=1e-9)
        np.testing.assert_array_equal(frame.fxfycxcy, k)
        check_camera(frame.c2w, frame.fxfycxcy)
        with Image.open(frame.image_path) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
        img, k2, c2w = load_frame(frame, 32)
        assert img.shape == (3, 32, 32) and img.dtype == np.float32
        np.testing.assert_array_equal(k2, k)
        np.testing.assert_allclose(c2w, c2ws[i], atol=1e-9)
        assert img.std() > 0.05, "image must not be constant"
        images.append(img)
    assert np.abs(images[0] - images[1]).mean() > 0.01, "two views must differ"
    # cameras normalize cleanly (the arc keeps the mean forward well defined)
    out = NormalizationFrame.from_cameras(c2ws).apply(c2ws)
    assert np.all(np.isfinite(out))


def test_synthetic_deterministic_and_seed_dependent(tmp_path):
    a = load_scene(make_synthetic_scene(tmp_path / "a", n_views=2, size=24, seed=5))
    b = load_scene(make_synthetic_scene(tmp_path / "b", n_views=2, size=24, seed=5))
    c = load_scene(make_synthetic_scene(tmp_path / "c", n_views=2, size=24, seed=6))
    ia = load_frame(a.frames[0], 24)[0]
    np.testing.assert_array_equal(ia, load_frame(b.frames[0], 24)[0])
    np.testing.assert_array_equal(a.frames[1].w2c, b.frames[1].w2c)
    assert np.abs(ia - load_frame(c.frames[0], 24)[0]).mean() > 0.01
    assert not np.allclose(a.frames[0].w2c, c.frames[0].w2c)


def test_load_frame_resizes(tmp_path):
    scene = load_scene(make_synthetic_scene(tmp_path, n_views=1, size=32, seed=0))
    img, k, _ = load_frame(scene.frames[0], 16)
    assert img.shape == (3, 16, 16)
    np.testing.assert_allclose(k, [16.0, 16.0, 8.0, 8.0])


def test_synthetic_list_and_eval_index(tmp_path):
    list_path = make_synthetic_list(tmp_path, 2, n_views=6, size=16, seed=0)
    paths = load_scene_list(list_path)
    assert paths == [tmp_path / f"synthetic_00{k}" / "scene.json" for k in (0, 1)]
    names = [load_scene(p).name for p in paths]
    assert names == ["synthetic_000", "synthetic_001"]
    index = load_eval_index(make_eval_index(list_path, n_context=2, n_target=3))
    # 6 frames: context = ends [0, 5]; targets evenly over the rest [1, 2, 3, 4]
    assert index == {
        "synthetic_000": {"context": [0, 5], "target": [1, 3, 4]},
        "synthetic_001": {"context": [0, 5], "target": [1, 3, 4]},
    }
    small_path = make_eval_index(list_path, tmp_path / "i.json", n_context=4, n_target=3)
    small = load_eval_index(small_path)
    assert small == {"synthetic_000": None, "synthetic_001": None}


# --------------------------------------------------------------------------- readers


def test_load_scene_paths_and_values(tmp_path):
    abs_img = str(tmp_path / "elsewhere" / "x.png")
    rot = np.array([[0.0, -1, 0, 0.5], [1, 0, 0, -1], [0, 0, 1, 2], [0, 0, 0, 1]])
    p = _write_scene(tmp_path / "s.json", [_frame("sub/a.png", w2c=rot), _frame(abs_img)])
    scene = load_scene(p)
    assert isinstance(scene.frames[0], Frame)
    assert scene.frames[0].image_path == tmp_path / "sub" / "a.png"
    assert scene.frames[1].image_path == Path(abs_img)
    np.testing.assert_array_equal(scene.frames[0].w2c, rot)
    np.testing.assert_allclose(scene.frames[0].c2w @ rot, np.eye(4), atol=1e-12)


def _scene_json(*frames):
    return json.dumps({"scene_name": "s", "frames": list(frames)})


_NAN_FRAME = (
    '{"scene_name": "s", "frames": [{"image_path": "a", "fxfycxcy": [1, NaN, 1, 1], '
    '"w2c": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}'
)


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"scene_name": "s"}), "'frames'"),
        (json.dumps({"frames": []}), "'scene_name'"),
        (_scene_json(), "empty"),
        (_scene_json(_frame(), {"image_path": "a"}), "frame 1: missing key 'fxfycxcy'"),
        (_scene_json(_frame(), _frame(w2c=np.eye(3))), r"frame 1 'w2c'.*\(3, 3\)"),
        (_scene_json(_frame(w2c=np.diag([2.0, 2, 2, 1]))), "frame 0 'w2c'.*orthonormal"),
        (_scene_json(_frame(k=(0, 1, 1, 1))), "frame 0 fxfycxcy.*fx"),
        (_scene_json(_frame(k=(1, 1, 1))), r"frame 0 fxfycxcy.*\(4,\)"),
        (_scene_json(_frame(k=(1, "a", 1, 1))), "frame 0 fxfycxcy"),
        (_scene_json(_frame(image_path=3)), "frame 0: 'image_path'"),
        (_NAN_FRAME, "NaN"),
    ],
)
def test_load_scene_errors(tmp_path, content, match):
    p = tmp_path / "bad_scene.json"
    p.write_text(content)
    with pytest.raises(ViewrtError, match=match) as info:
        load_scene(p)
    assert "bad_scene.json" in str(info.value)


def test_load_scene_missing_file(tmp_path):
    with pytest.raises(ViewrtError, match="not found.*nope.json"):
        load_scene(tmp_path / "nope.json")


def test_load_frame_missing_or_bad_image(tmp_path):
    p = _write_scene(tmp_path / "s.json", [_frame("missing.png"), _frame("broken.png")])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    scene = load_scene(p)  # lazy: no image is opened here
    with pytest.raises(ViewrtError, match="missing.png"):
        load_frame(scene.frames[0], 8)
    with pytest.raises(ViewrtError, match="broken.png"):
        load_frame(scene.frames[1], 8)


def test_load_frame_grayscale_converted(tmp_path):
    Image.fromarray(np.full((10, 20), 128, dtype=np.uint8), mode="L").save(tmp_path / "g.png")
    scene = load_scene(_write_scene(tmp_path / "s.json", [_frame("g.png", k=(10, 10, 10, 5))]))
    img, k, _ = load_frame(scene.frames[0], 5)
    assert img.shape == (3, 5, 5)
    np.testing.assert_allclose(img, 128 / 255, atol=1e-6)
    # 20x10 -> 10x5 (factor 0.5), left = (10 - 5) // 2 = 2: cx = 10*0.5 - 2, cy = 5*0.5
    np.testing.assert_allclose(k, [5.0, 5.0, 3.0, 2.5])


def test_load_scene_list(tmp_path):
    lst = tmp_path / "lists" / "scenes.txt"
    lst.parent.mkdir()
    lines = ["# header", "", " a/scene.json ", str(tmp_path / "b.json"), "  # indented", "m.json"]
    lst.write_text("\n".join(lines) + "\n")
    paths = load_scene_list(lst)
    assert paths == [lst.parent / "a" / "scene.json", tmp_path / "b.json", lst.parent / "m.json"]
    with pytest.raises(ViewrtError, match="not found.*none.txt"):
        load_scene_list(tmp_path / "none.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(ViewrtError, match="empty.txt"):
        load_scene_list(empty)


def test_load_eval_index(tmp_path):
    p = tmp_path / "index.json"
    entry = {"context": [0, 10], "target": [3, 5, 7], "extra": 1}
    p.write_text(json.dumps({"a": entry, "b": None}))
    assert load_eval_index(p) == {"a": {"context": [0, 10], "target": [3, 5, 7]}, "b": None}
    for bad, match in [
        ({"a": {"context": [0, 1]}}, "'a'.*missing key 'target'"),
        ({"a": {"context": [0, -1], "target": [2]}}, "'a' 'context'"),
        ({"a": {"context": [0, 1.5], "target": [2]}}, "'context'"),
        ({"a": {"context": [], "target": [2]}}, "'context'"),
        ({"a": [0, 1]}, "'a'.*object or null"),
        ([1, 2], "JSON object"),
    ]:
        p.write_text(json.dumps(bad))
        with pytest.raises(ViewrtError, match=match):
            load_eval_index(p)
    with pytest.raises(ViewrtError, match="not found"):
        load_eval_index(tmp_path / "missing.json")
