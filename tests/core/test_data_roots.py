"""Datasets moved between machines (issue 15): the absolute paths that upstream's
preprocessing writes (list lines, image_path) resolve with --data-root OLD=NEW and with the
fallback under the files' own roots; the right frames are read (checked by image content);
what cannot be found names the path as written and the places tried; mass failures end in
one short line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from viewrt.data import DataRoots, load_frame, load_scene, load_scene_list, make_processed_dataset
from viewrt.errors import ViewrtError
from viewrt.failures import failure_kind, summarize_failures

SIZE = 16
N_SCENES, N_VIEWS = 3, 4


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0  # [3, H, W]


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """A processed-layout dataset written under one root, its pixels recorded per
    (scene, frame), then moved to another root: (old root, new root, pixels)."""
    base = tmp_path_factory.mktemp("data")
    old = base / "cluster" / "re10k" / "test"
    make_processed_dataset(old, N_SCENES, n_views=N_VIEWS, size=SIZE, seed=7)
    pixels = {}
    for k in range(N_SCENES):
        name = f"synthetic_{k:03d}"
        for i in range(N_VIEWS):
            pixels[name, i] = _pixels(old / "images" / name / f"{i:05d}.png")
    new = base / "workstation" / "data" / "test"
    new.parent.mkdir(parents=True)
    shutil.move(str(old), str(new))
    assert not old.exists()
    return old, new, pixels


def _check_scenes(paths, roots, new, pixels):
    """Every scene and every frame resolves under the new root and reads its own image."""
    assert len(paths) == N_SCENES
    seen = []
    for p in paths:
        scene = load_scene(p, roots)
        assert scene.path.parent == new / "metadata"
        for i, frame in enumerate(scene.frames):
            assert frame.image_path == new / "images" / scene.name / f"{i:05d}.png"
            img, _, _ = load_frame(frame, SIZE)
            np.testing.assert_array_equal(img, pixels[scene.name, i])  # the right frame, by content
        seen.append(scene.name)
    assert seen == [f"synthetic_{k:03d}" for k in range(N_SCENES)]


def test_moved_dataset_paths_are_absolute_and_stale(moved):
    old, new, _ = moved
    lines = (new / "full_list.txt").read_text().split()
    assert lines == [str(old / "metadata" / f"synthetic_{k:03d}.json") for k in range(N_SCENES)]
    frame0 = json.loads((new / "metadata" / "synthetic_000.json").read_text())["frames"][0]
    assert frame0["image_path"] == str(old / "images" / "synthetic_000" / "00000.png")
    # without help, nothing is found, and the error gives the path as written
    with pytest.raises(
        ViewrtError,
        match=r"^scene file not found: .*cluster/re10k/test/metadata/synthetic_000\.json$",
    ):
        load_scene(load_scene_list(new / "full_list.txt")[0], DataRoots(fallback=False))


def test_data_root_option_resolves_list_scenes_and_images(moved):
    old, new, pixels = moved
    roots = DataRoots.parse([f"{old}={new}"], fallback=False)
    _check_scenes(load_scene_list(new / "full_list.txt"), roots, new, pixels)
    # a trailing slash and a shorter prefix map the same way; the longest matching prefix wins
    roots = DataRoots.parse(
        [f"{old.parent.parent}/={new.parent.parent}", f"{old}/={new}"], fallback=False
    )
    _check_scenes(load_scene_list(new / "full_list.txt"), roots, new, pixels)


def test_fallback_under_the_files_own_roots(moved):
    _, new, pixels = moved
    lst = new / "full_list.txt"
    _check_scenes(load_scene_list(lst), DataRoots().for_list(lst), new, pixels)
    # a list kept in a sub-folder of the root: its parent is searched too
    sub = new / "lists"
    sub.mkdir(exist_ok=True)
    shutil.copy(lst, sub / "full_list.txt")
    _check_scenes(
        load_scene_list(sub / "full_list.txt"),
        DataRoots().for_list(sub / "full_list.txt"),
        new,
        pixels,
    )
    # a scene JSON opened directly: its images are found under its own root (<root>/metadata/..)
    scene = load_scene(new / "metadata" / "synthetic_001.json")
    np.testing.assert_array_equal(load_frame(scene.frames[2], SIZE)[0], pixels["synthetic_001", 2])


def test_not_found_names_the_path_and_the_places_tried(moved, tmp_path):
    old, new, _ = moved
    lonely = tmp_path / "elsewhere" / "list.txt"
    lonely.parent.mkdir()
    shutil.copy(new / "full_list.txt", lonely)
    written = old / "metadata" / "synthetic_000.json"
    roots = DataRoots.parse([f"/nowhere={new}"]).for_list(lonely)  # a map that does not match
    with pytest.raises(ViewrtError) as info:
        load_scene(load_scene_list(lonely)[0], roots)
    msg = str(info.value)
    assert msg.startswith(f"scene file not found: {written} (also tried: ")
    assert str(lonely.parent / "metadata" / "synthetic_000.json") in msg
    assert str(tmp_path / "metadata" / "synthetic_000.json") in msg
    assert "\n" not in msg
    # images: the scene JSON is found (by the map) but its images are gone
    copy = tmp_path / "copy"
    shutil.copytree(new / "metadata", copy / "metadata")
    scene = load_scene(copy / "metadata" / "synthetic_000.json")
    frame = scene.frames[1]
    assert frame.image_path == old / "images" / "synthetic_000" / "00001.png"  # as written
    with pytest.raises(ViewrtError) as info:
        load_frame(frame, SIZE)
    msg = str(info.value)
    assert msg.startswith(f"image not found: {frame.image_path} (also tried: ")
    assert str(copy / "images" / "synthetic_000" / "00001.png") in msg


@pytest.mark.parametrize(
    "spec, match",
    [
        ("noequals", "expected OLD=NEW"),
        ("=/x", "expected OLD=NEW"),
        ("/x=", "expected OLD=NEW"),
        ("/x=/surely/not/a/folder", "is not a folder"),
    ],
)
def test_data_root_spec_errors(spec, match):
    with pytest.raises(ViewrtError, match=match):
        DataRoots.parse([spec])


def test_candidates_order():
    roots = DataRoots(maps=(("/a", "/n1"), ("/a/b", "/n2")), search=(Path("/s"),))
    c = roots.candidates("/a/b/images/sc/00001.png", Path("/base"), "image", own=(Path("/own"),))
    assert c == [
        Path("/n2/images/sc/00001.png"),
        Path("/n1/b/images/sc/00001.png"),
        Path("/a/b/images/sc/00001.png"),
        Path("/own/images/sc/00001.png"),
        Path("/s/images/sc/00001.png"),
    ]
    # whole components only: /a does not match /ab; relative paths join the base
    assert DataRoots(maps=(("/a", "/n"),), fallback=False).candidates(
        "/ab/x.json", None, "scene"
    ) == [Path("/ab/x.json")]
    assert DataRoots(fallback=False).candidates("m/x.json", Path("/l"), "scene") == [
        Path("/l/m/x.json")
    ]


# --------------------------------------------------------------------------- mass failures


def _missing(n: int) -> list[dict]:
    paths = [f"/cluster/re10k/test/metadata/{k:016x}.json" for k in range(n)]
    return [
        {
            "scene": p,
            "scene_json": p,
            "error": f"scene file not found: {p} (also tried: /here/metadata/{Path(p).name})",
        }
        for p in paths
    ]


def test_summarize_failures_one_kind():
    line = summarize_failures(_missing(19), 19, "out/summary.json")
    assert (
        line
        == "19 of 19 scenes failed: scene file not found (first: .../0000000000000000.json); all in out/summary.json"
    )
    assert (
        len(summarize_failures(_missing(7194), 7194, "out/summary.json")) <= len(line) + 6
    )  # does not grow with n


def test_summarize_failures_several_kinds():
    failures = _missing(2) + [
        {
            "scene": "s1",
            "scene_json": "/d/s1.json",
            "error": "scene 's1' (/d/s1.json) frame 2: image not found: /d/images/s1/00002.png",
        },
        {
            "scene": "s2",
            "scene_json": "/d/s2.json",
            "error": "scene 's2' (/d/s2.json) frame 0: cannot read image /d/x.png: bad",
        },
        {
            "scene": "s3",
            "scene_json": "/d/s3.json",
            "error": "scene 's3' (/d/s3.json) frame 0: /d/y.png: implausible intrinsics: ...",
        },
        {
            "scene": "s4",
            "scene_json": "/d/s4.json",
            "error": "/d/s4.json frame 1: missing key 'w2c'",
        },
    ]
    line = summarize_failures(failures, 9, "o/summary.json")
    assert line == (
        "6 of 9 scenes failed: 2 scene file not found (first: .../0000000000000000.json), "
        "1 image not found (first: s1, .../00002.png), 1 cannot read image (first: s2, .../x.png), "
        "2 more of 2 other kinds; all in o/summary.json"
    )
    assert failure_kind(failures[-1]["error"]) == "missing key 'w2c'"
    assert failure_kind(failures[-2]["error"]) == "implausible intrinsics"
    # the scene's own prefix without a frame (a scene-wide error): the kind is the cause, and
    # scenes failing for one cause count as one kind
    same = [
        {"scene": f"s{i}", "scene_json": f"/d/s{i}/scene.json",
         "error": f"scene 's{i}' (/d/s{i}/scene.json): target frame(s) [99] out of range; the scene has 6 frames"}
        for i in range(2)
    ]  # fmt: skip
    assert summarize_failures(same, 2) == (
        "2 of 2 scenes failed: target frame(s) [99] out of range (first: s0)"
    )


# --------------------------------------------------------------------------- viewrt infer


def _invoke(*args):
    from viewrt.cli import main

    return CliRunner().invoke(main, ["infer", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def moved32(tmp_path_factory):
    """A 2-scene processed dataset at the tiny export's 32 px, moved: (old, new)."""
    base = tmp_path_factory.mktemp("data32")
    old, new = base / "old" / "root", base / "new" / "root"
    make_processed_dataset(old, 2, n_views=5, size=32, seed=1)
    new.parent.mkdir()
    shutil.move(str(old), str(new))
    return old, new


@pytest.mark.parametrize("how", ["data-root", "fallback"])
def test_infer_runs_a_moved_list(tiny_export, moved32, tmp_path, how):
    old, new = moved32
    extra = ["--data-root", f"{old}={new}"] if how == "data-root" else []
    out = tmp_path / "out"
    r = _invoke(
        tiny_export[0],
        "--list",
        new / "full_list.txt",
        *extra,
        "--views",
        2,
        "--targets",
        2,
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_ok"], summary["n_failed"]) == (2, 0)
    for k in range(2):
        name = f"synthetic_{k:03d}"
        s = json.loads((out / name / "summary.json").read_text())
        assert s["scene_json"] == str(new / "metadata" / f"{name}.json")
        gt = _pixels(out / name / "view_001" / "images" / "target_0_gt.png")
        np.testing.assert_array_equal(
            gt, _pixels(new / "images" / name / "00002.png")
        )  # frame 2, this scene's


def test_infer_mass_failure_is_one_short_line(tiny_export, moved32, tmp_path):
    old, _ = moved32
    lst = tmp_path / "list.txt"
    n = 25
    lst.write_text("".join(f"{old}/metadata/{k:016x}.json\n" for k in range(n)))
    out = tmp_path / "out"
    r = _invoke(tiny_export[0], "--list", lst, "--out", out)
    assert r.exit_code == 1
    err = r.stderr.strip().splitlines()
    assert err == [
        f"error: {n} of {n} scenes failed: scene file not found (first: .../0000000000000000.json); "
        f"all in {out / 'summary.json'}"
    ]
    assert (
        len(r.stdout.strip().splitlines()) <= 6
    )  # the estimate, 3 failures echoed, the count line, the weights note
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_failed"] == n and all(
        "(also tried: " in f["error"] for f in summary["failed"]
    )


def test_infer_bad_data_root(tiny_export, moved32, tmp_path):
    r = _invoke(
        tiny_export[0],
        "--list",
        moved32[1] / "full_list.txt",
        "--data-root",
        "nonsense",
        "--out",
        tmp_path / "o",
    )
    assert (
        r.exit_code == 1
        and r.output.count("\n") == 1
        and "--data-root 'nonsense': expected OLD=NEW" in r.output
    )
    assert not (tmp_path / "o").exists()
