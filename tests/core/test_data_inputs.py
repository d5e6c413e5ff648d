"""Inputs checked against what they describe (issue 10, items 4 and 5): intrinsics against
the image, every PIL image mode scaled to [0, 1] (or refused clearly), and the evaluation
index's frames chosen by upstream's rule."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from viewrt.data import (
    Frame,
    check_intrinsics_plausible,
    image_to_float_rgb,
    load_frame,
    select_index_frames,
)
from viewrt.errors import ViewrtError
from viewrt.evaluation import SceneSkipped, select_frames

EXACT = 1e-6  # float32 rounding of k / 255 or k / 65535


def _frame(path: Path, k) -> Frame:
    return Frame(image_path=path, fxfycxcy=np.asarray(k, np.float64), w2c=np.eye(4))


# --------------------------------------------------------------------------- intrinsics


@pytest.mark.parametrize(
    "k, w, h, match",
    [
        # the reported input: normalized intrinsics on a 640x360 frame (179.4 deg horizontal)
        (
            [0.89, 1.58, 0.5, 0.5],
            640,
            360,
            "horizontal field of view 179.[0-9] deg.*principal point.*look normalized",
        ),
        # the same kind on a square image and on a tall one
        ([1.0, 1.0, 0.5, 0.5], 256, 256, "look normalized"),
        ([0.7, 0.4, 0.5, 0.5], 360, 640, "look normalized"),
        # pixels of another resolution: twice (principal point at the corner), half (a quarter in)
        ([1000.0, 1000.0, 640.0, 360.0], 640, 360, r"principal point \(640, 360\) px outside"),
        ([250.0, 250.0, 80.0, 45.0], 640, 360, r"principal point \(80, 45\) px outside"),
        # a focal length of a few pixels, or a pinhole narrower than 1 degree
        ([3.0, 3.0, 320.0, 180.0], 640, 360, "horizontal field of view 17[0-9]"),
        (
            [1e5, 1e5, 320.0, 180.0],
            640,
            360,
            "horizontal field of view 0.4 deg.*vertical field of view 0.2 deg",
        ),
    ],
)
def test_implausible_intrinsics_refused(k, w, h, match):
    with pytest.raises(ViewrtError, match=match) as info:
        check_intrinsics_plausible(k, w, h, name="scene 'x' frame 3")
    msg = str(info.value)
    assert (
        msg.startswith("scene 'x' frame 3: implausible intrinsics")
        and "--no-intrinsics-check" in msg
    )
    assert "\n" not in msg


@pytest.mark.parametrize(
    "k, w, h",
    [
        ([64.0, 64.0, 32.0, 32.0], 64, 64),  # the synthetic generator's cameras (53 deg)
        ([0.9 * 640, 1.6 * 360, 320.0, 180.0], 640, 360),  # RealEstate10K-like, in pixels
        ([300.0, 300.0, 340.0, 170.0], 640, 360),  # off-centre a little, wide (94 deg)
        ([60.0, 60.0, 320.0, 180.0], 640, 360),  # 158 deg: still a pinhole here
        ([1e4, 1e4, 480.0, 270.0], 640, 360),  # 3.7 deg telephoto, principal point at 3/4
    ],
)
def test_plausible_intrinsics_accepted(k, w, h):
    check_intrinsics_plausible(k, w, h)


def test_intrinsics_checked_at_load_with_opt_out(tmp_path):
    Image.new("RGB", (640, 360), (10, 20, 30)).save(tmp_path / "f.png")
    frame = _frame(tmp_path / "f.png", [0.89, 1.58, 0.5, 0.5])
    with pytest.raises(ViewrtError, match=r"f\.png: implausible intrinsics.*640x360"):
        load_frame(frame, 32)
    image, _, _ = load_frame(
        frame, 32, check_intrinsics=False
    )  # an unusual lens: the caller says so
    np.testing.assert_allclose(image[:, 0, 0], np.array([10, 20, 30]) / 255, atol=EXACT)


def test_infer_names_scene_and_frame_and_opt_out(tiny_export, tmp_path):
    from click.testing import CliRunner

    from viewrt.cli import main

    c2ws = [np.eye(4), np.eye(4), np.eye(4)]
    for i, c in enumerate(c2ws):
        c[:3, 3] = [0.1 * i, 0.0, 0.0]
    for i in range(3):
        Image.fromarray(np.full((360, 640, 3), 40 * i + 20, np.uint8)).save(tmp_path / f"{i}.png")
    frames = [
        {
            "image_path": f"{i}.png",
            "fxfycxcy": [576.0, 576.0, 320.0, 180.0],
            "w2c": np.linalg.inv(c).tolist(),
        }
        for i, c in enumerate(c2ws)
    ]
    frames[1]["fxfycxcy"] = [0.89, 1.58, 0.5, 0.5]
    scene = tmp_path / "s.json"
    scene.write_text(json.dumps({"scene_name": "lens", "frames": frames}))
    args = [
        "infer",
        str(tiny_export[0]),
        "--scene",
        str(scene),
        "--targets",
        "2",
        "--out",
        str(tmp_path / "o"),
    ]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 1
    (line,) = r.stderr.strip().splitlines()  # stdout starts with the memory estimate
    assert (
        line.startswith("error: scene 'lens'")
        and "frame 1: " in line
        and "implausible intrinsics" in line
    )
    r = CliRunner().invoke(main, [*args, "--no-intrinsics-check"], catch_exceptions=False)
    assert r.exit_code == 0, r.output


# --------------------------------------------------------------------------- image modes


RAMP16 = np.tile(
    np.linspace(0, 65535, 64).round().astype(np.uint16), (64, 1)
)  # [64, 64], 0..65535 along x
RAMP8 = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))  # [64, 64]


def _roundtrip(im: Image.Image, fmt: str, tmp_path: Path) -> Path:
    path = tmp_path / f"img.{fmt}"
    im.save(path)
    return path


def test_16bit_png_ramp_loads_as_0_to_1(tmp_path):
    """The reported input: a 16-bit greyscale PNG ramp loaded with mean 0.985 (clipped)."""
    path = _roundtrip(Image.fromarray(RAMP16), "png", tmp_path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # Pillow opens it as I;16 (or I in older versions)
    img, _, _ = load_frame(_frame(path, [64, 64, 32, 32]), 64)
    want = RAMP16.astype(np.float64) / 65535
    for c in range(3):
        np.testing.assert_allclose(img[c], want, atol=EXACT)
    assert img.mean() == pytest.approx(0.5, abs=1e-3)


def _modes_cases():
    """(mode, PIL image, expected float [H, W, 3]) for every mode PIL creates."""
    g = RAMP8[:4, :6]  # [4, 6]
    gf = g.astype(np.float64) / 255
    grey = np.repeat(gf[..., None], 3, axis=2)
    rgb = np.stack([g, 255 - g, np.full_like(g, 77)], axis=2)
    rgbf = rgb / 255.0
    alpha = np.full_like(g, 0)  # fully transparent: colour kept as stored
    pal = Image.new("P", (6, 4))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.putdata([0, 1, 2, 1, 0, 2] * 4)
    pal_rgb = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)[
        np.array([0, 1, 2, 1, 0, 2] * 4).reshape(4, 6)
    ]
    pa = pal.convert("PA")
    bits = Image.fromarray(g > 128)
    i16 = RAMP16[:4, :6]
    i16f = np.repeat((i16 / 65535.0)[..., None], 3, axis=2)
    return [
        ("1", bits, np.repeat((g > 128).astype(float)[..., None], 3, axis=2)),
        ("L", Image.fromarray(g, "L"), grey),
        ("P", pal, pal_rgb),
        ("PA", pa, pal_rgb),
        ("RGB", Image.fromarray(rgb, "RGB"), rgbf),
        ("RGBA", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), rgbf),
        ("RGBX", Image.fromarray(np.dstack([rgb, alpha]), "RGBX"), rgbf),
        ("LA", Image.fromarray(np.dstack([g, alpha]), "LA"), grey),
        ("I;16", Image.fromarray(i16), i16f),
        ("I;16B", _i16b(i16), i16f),
        ("I", Image.fromarray(i16.astype(np.int32), "I"), i16f),
        ("F", Image.fromarray((g / 255.0).astype(np.float32), "F"), grey),
        (
            "CMYK",
            Image.new("CMYK", (6, 4), (0, 255, 255, 0)),
            np.broadcast_to([1.0, 0, 0], (4, 6, 3)),
        ),
        ("YCbCr", Image.new("YCbCr", (6, 4), (255, 128, 128)), np.ones((4, 6, 3))),
        ("HSV", Image.new("HSV", (6, 4), (0, 255, 255)), np.broadcast_to([1.0, 0, 0], (4, 6, 3))),
        (
            "RGBa",
            Image.new("RGBa", (6, 4), (100, 50, 0, 128)),
            np.broadcast_to(np.array([199, 99, 0]) / 255, (4, 6, 3)),
        ),
        ("La", Image.new("La", (6, 4), (100, 128)), np.full((4, 6, 3), 199 / 255)),
        ("LAB", Image.new("LAB", (6, 4), (255, 128, 128)), np.ones((4, 6, 3))),
    ]


def _i16b(a: np.ndarray) -> Image.Image:
    return Image.frombytes("I;16B", (a.shape[1], a.shape[0]), a.astype(">u2").tobytes())


@pytest.mark.parametrize("mode, im, want", _modes_cases(), ids=[c[0] for c in _modes_cases()])
def test_every_mode_scaled(mode, im, want):
    assert im.mode == mode
    got = image_to_float_rgb(im)
    assert got.dtype == np.float32 and got.shape == (im.size[1], im.size[0], 3)
    tol = (
        2 / 255 if mode in ("YCbCr", "LAB", "RGBa", "La") else EXACT
    )  # PIL's colour conversions round
    np.testing.assert_allclose(got, want, atol=tol)


@pytest.mark.parametrize(
    "fmt, mode",
    [
        ("png", "1"),
        ("png", "P"),
        ("png", "LA"),
        ("png", "RGBA"),
        ("tiff", "I;16B"),
        ("tiff", "F"),
        ("tiff", "CMYK"),
        ("tiff", "I"),
    ],
)
def test_modes_from_files(tmp_path, fmt, mode):
    ((_, im, want),) = [c for c in _modes_cases() if c[0] == mode]
    path = _roundtrip(im, fmt, tmp_path)
    img, _, _ = load_frame(
        _frame(path, [6, 6, 3, 2]), 4
    )  # 6x4: no resize (short side 4), centre crop
    assert img.shape == (3, 4, 4)
    # the crop is columns 1..4
    np.testing.assert_allclose(img.transpose(1, 2, 0), np.asarray(want)[:, 1:5], atol=EXACT)


@pytest.mark.parametrize(
    "im, match",
    [
        (
            Image.fromarray(np.array([[0, 70000]], np.int32), "I"),
            r"mode I\) with values 0\.\.70000",
        ),
        (Image.fromarray(np.array([[-1, 5]], np.int32), "I"), "mode I"),
        (
            Image.fromarray(np.array([[0.0, 2.0]], np.float32), "F"),
            r"mode F\) with values outside \[0, 1\]",
        ),
        (Image.fromarray(np.array([[0.0, np.nan]], np.float32), "F"), "not finite"),
    ],
)
def test_out_of_range_modes_refused(im, match):
    with pytest.raises(ViewrtError, match=match):
        image_to_float_rgb(im, "x.tif")


def test_every_pil_mode_scaled_or_refused():
    """Whatever mode PIL can make: float32 RGB in [0, 1], or a ViewrtError (no other exception)."""
    from PIL import ImageMode

    modes = set(Image.MODES) | {
        "I;16",
        "I;16L",
        "I;16B",
        "I;16N",
        "LA",
        "La",
        "PA",
        "RGBX",
        "RGBa",
        "LAB",
        "HSV",
    }
    made = 0
    for mode in sorted(modes):
        try:
            ImageMode.getmode(mode)
            im = Image.new(mode, (3, 2))
        except (ValueError, KeyError):
            continue
        made += 1
        try:
            got = image_to_float_rgb(im)
        except ViewrtError:
            continue
        assert got.dtype == np.float32 and got.shape == (2, 3, 3), mode
        assert np.all((got >= 0) & (got <= 1)), mode
    assert made >= 15


# --------------------------------------------------------------------------- evaluation index


def test_index_rule_known_values():
    assert select_index_frames([0, 3, 6, 9], 2) == [
        0,
        9,
    ]  # upstream: first and last (viewrt took [0, 3])
    assert select_index_frames([0, 3, 6, 9], 3) == [0, 3, 9]
    assert select_index_frames([0, 3, 6, 9]) == [0, 3, 6, 9]
    assert select_index_frames([0, 3, 6, 9], 1) == [0]
    assert select_index_frames([0, 9], 4) == [
        0,
        3,
        6,
        9,
    ]  # more views than listed: spread (viewrt refused)
    assert select_index_frames([0, 5], 3) == [
        0,
        2,
        5,
    ]  # rint: 2.5 rounds to even, as upstream's numpy
    assert select_index_frames([0, 7], 3) == [0, 4, 7]  # 3.5 -> 4
    assert select_index_frames([10, 2], 3) == [
        10,
        6,
        2,
    ]  # a context listed backwards keeps its order
    assert select_index_frames([4, 5], 4) == [
        4,
        4,
        5,
        5,
    ]  # fewer frames than views: repeats, as upstream
    for bad in (0, -1):
        with pytest.raises(ViewrtError, match="views"):
            select_index_frames([0, 1], bad)


@settings(max_examples=300, deadline=None)
@given(ctx=st.lists(st.integers(0, 400), min_size=1, max_size=8), views=st.integers(1, 24))
def test_index_rule_random_contexts(ctx, views):
    got = select_index_frames(ctx, views)
    assert len(got) == views and all(isinstance(v, int) for v in got)
    assert got[0] == ctx[0]
    if views > 1:
        assert got[-1] == ctx[-1]
    if views <= len(ctx):
        # the first views-1 of the context, then its last
        assert got[:-1] == ctx[: views - 1] if views > 1 else got == ctx[:1]
    else:
        first, last = ctx[0], ctx[-1]
        for k, v in enumerate(got):  # within half a frame of the even spread, ends exact
            assert abs(v - (first + k * (last - first) / (views - 1))) <= 0.5 + 1e-9
        steps = np.diff(got) * (1 if last >= first else -1)
        assert np.all(steps >= 0)  # monotone from first to last


def _stub(n: int, name: str = "stub"):
    return SimpleNamespace(name=name, path=Path(f"{name}.json"), frames=[None] * n)


def test_select_frames_follows_upstream():
    scene = _stub(12)
    index = {"stub": {"context": [0, 3, 6, 9], "target": [4, 5]}, "gone": None}
    sel = select_frames(scene, views=2, index=index)
    assert sel["inputs"] == [0, 9] and sel["targets"] == [4, 5]
    assert select_frames(_stub(12), views=6, index={"stub": {"context": [0, 10], "target": [4]}})[
        "inputs"
    ] == [0, 2, 4, 6, 8, 10]
    with pytest.raises(SceneSkipped, match="lists it as null"):
        select_frames(_stub(12, "gone"), index=index)
    with pytest.raises(SceneSkipped, match="does not list it"):  # not run with default frames
        select_frames(_stub(12, "absent"), index=index)
    with pytest.raises(ViewrtError, match="exceed the cache capacity of 4"):
        select_frames(scene, views=6, index=index, max_views=4)


def test_16bit_rgb_png_scaled(tmp_path):
    """A 48-bit RGB PNG (written by hand: Pillow cannot write one) reads at the right scale;
    Pillow keeps its top 8 bits."""
    import struct
    import zlib

    h, w = 4, 4
    a = np.zeros((h, w, 3), ">u2")
    a[..., 0], a[..., 1], a[..., 2] = 65535, 32768, 256

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    (tmp_path / "rgb16.png").write_bytes(png)
    img, _, _ = load_frame(_frame(tmp_path / "rgb16.png", [4, 4, 2, 2]), 4)
    np.testing.assert_allclose(
        img[:, 0, 0], [1.0, 128 / 255, 1 / 255], atol=EXACT
    )  # 65535, 32768, 256 >> 8
