"""The session manager and the JSON API over it, without Ray or HTTP: parity with a
renderer of its own, the bounds (sessions, cache bytes), the idle timeout (an injected
clock), refusals that name the bound and change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import viewrt.runtime as vrt
from helpers import random_cameras
from helpers.imports import imported_modules
from viewrt.errors import ViewrtError
from viewrt.serve import api, codec
from viewrt.serve.errors import BadRequest, Refused, SessionGone, UnknownSession
from viewrt.serve.session import Limits, SessionManager

ROOT = Path(__file__).resolve().parents[2]
ATOL = 1e-5


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _image(rng, size):
    return rng.uniform(0, 1, (3, size, size)).astype(np.float32)


@pytest.fixture
def export(tiny_export):
    return tiny_export[0]


def _manager(export, clock=None, **limits):
    kw = {"clock": clock} if clock else {}
    return SessionManager(export, "ort", Limits(**limits), {"threads": 1}, opener=vrt.open, **kw)


def test_session_renders_as_its_own_renderer(export):
    rng = np.random.default_rng(1)
    m = _manager(export)
    sid = m.create(max_views=4, window=3, pinned=1)
    with vrt.open(export, max_views=4, window=3, pinned=1, threads=1) as ref:
        size = ref.size
        for cam in random_cameras(rng, 5, size):  # past the window: eviction in both
            img = _image(rng, size)
            assert m.add_view(sid, img, cam) == ref.add_view(img, cam)
        targets = random_cameras(rng, 3, size)
        np.testing.assert_allclose(m.render(sid, targets), ref.render(targets), atol=ATOL, rtol=0)
        vid = ref.info()["cached_ids"][-1]
        m.remove_view(sid, vid)
        ref.remove_view(vid)
        np.testing.assert_allclose(m.render(sid, targets), ref.render(targets), atol=ATOL, rtol=0)
        info = m.info(sid)
        assert info["cached_ids"] == ref.info()["cached_ids"]
    assert info["session"] == sid and info["cache_bytes"] == 4 * m.manifest.kv_bytes_per_view
    m.close(sid)
    with pytest.raises(SessionGone, match="closed by its client"):
        m.render(sid, targets)


def test_sessions_bound_refuses_and_names_it(export):
    m = _manager(export, max_sessions=2)
    a, b = m.create(max_views=1), m.create(max_views=1)
    before = m.stats()
    with pytest.raises(Refused, match=r"holds 2 sessions.*max_sessions 2"):
        m.create(max_views=1)
    assert m.stats() == before
    m.close(a)
    c = m.create(max_views=1)  # room again
    assert m.stats()["sessions"] == 2 and c not in (a, b)
    assert m.info(b)["session"] == b and m.info(c)["session"] == c


def test_sessions_open_with_the_given_opener(export):
    """The manager imports no runtime: every renderer comes from the opener it was given,
    called with the session's options and the manager's open options."""
    calls = []

    def opener(export_dir, **options):
        calls.append((Path(export_dir), options))
        return vrt.open(export_dir, **options)

    m = SessionManager(export, "ort", Limits(), {"threads": 1}, opener=opener)
    sid = m.create(max_views=2, window=1)
    first = {"max_views": 2, "window": 1, "pinned": 0, "frame": None, "backend": "ort"}
    assert calls == [(Path(export), {**first, "threads": 1})]
    m.reopen(sid, window=None)
    assert calls[1] == (Path(export), {**first, "window": None, "threads": 1})
    assert m.renderer(sid).max_views == 2 and m.info(sid)["window"] is None
    m.close_all()
    with pytest.raises(ViewrtError, match="opener must be callable"):
        SessionManager(export, opener="viewrt.runtime:open")


def test_cache_bytes_bound_refuses_and_names_it(export):
    per_view = SessionManager(export, opener=vrt.open).manifest.kv_bytes_per_view
    m = _manager(export, max_cache_bytes=5 * per_view)
    m.create(max_views=4)
    before = m.stats()
    with pytest.raises(Refused, match=r"max_cache_bytes"):
        m.create(max_views=2)  # 4 + 2 views > 5
    assert m.stats() == before
    m.create(max_views=1)  # 4 + 1 fits
    assert m.stats()["cache_bytes"] == 5 * per_view


def test_a_bad_option_opens_nothing(export):
    m = _manager(export, max_sessions=1)
    for bad in ({"window": -1}, {"max_views": 99}, {"max_views": "4"}, {"pinned": 1.5}):
        with pytest.raises(ViewrtError):
            m.create(**bad)
    assert m.stats()["sessions"] == 0 and m.stats()["cache_bytes"] == 0
    m.create()  # the one slot is still free


def test_idle_sessions_expire(export):
    clock = FakeClock()
    m = _manager(export, clock=clock, idle_timeout_s=60)
    old, busy = m.create(max_views=1), m.create(max_views=1)
    clock.t += 45
    m.info(busy)  # resets busy's idle clock
    clock.t += 30  # old: 75 s idle, busy: 30 s
    assert m.sweep() == [old]
    with pytest.raises(SessionGone, match="60 s idle"):
        m.info(old)
    assert m.info(busy)["session"] == busy
    clock.t += 61
    with pytest.raises(SessionGone, match="idle"):  # expired on the call itself
        m.info(busy)
    assert m.stats()["sessions"] == 0


def test_unknown_and_bad_ids(export):
    m = _manager(export)
    with pytest.raises(UnknownSession, match="unknown session 'nope'"):
        m.info("nope")
    with pytest.raises(BadRequest, match="must be a string"):
        m.info(3)


@pytest.mark.parametrize(
    "limits",
    [{"max_sessions": 0}, {"max_cache_bytes": -1}, {"idle_timeout_s": 0}, {"max_sessions": True}],
)
def test_limits_are_checked(limits):
    with pytest.raises(ViewrtError):
        Limits(**limits)


# -- the JSON API without a transport ---------------------------------------------------------
def _call(m, method, path, body=None):
    status, payload = api.handle(m, method, path, None if body is None else json.dumps(body))
    json.dumps(payload)  # JSON-ready
    return status, payload


def test_api_over_the_manager(export):
    rng = np.random.default_rng(2)
    m = _manager(export)
    size = m.manifest.image_size
    cam, target = random_cameras(rng, 2, size)
    frame = codec.encode_frame([cam, target])  # the scene's frame from every camera
    status, made = _call(m, "POST", "/sessions", {"max_views": 3, "frame": frame})
    assert status == 201 and made["info"]["max_views"] == 3
    assert made["info"]["frame_source"] == "caller"
    sid = made["session"]
    img = _image(rng, size)
    status, added = _call(
        m,
        "POST",
        f"/sessions/{sid}/views",
        {"image": codec.encode_array(img), "camera": codec.encode_camera(cam)},
    )
    assert (status, added) == (201, {"view_id": 0})
    status, out = _call(
        m, "POST", f"/sessions/{sid}/render", {"cameras": [codec.encode_camera(target)]}
    )
    with vrt.open(
        export, max_views=3, threads=1, frame=[vrt.Camera(*cam), vrt.Camera(*target)]
    ) as ref:
        ref.add_view(img, cam)
        want = ref.render([target])
    np.testing.assert_allclose(codec.decode_array(out["images"]), want, atol=ATOL, rtol=0)
    assert _call(m, "GET", "/")[1]["sessions"] == 1
    assert _call(m, "DELETE", f"/sessions/{sid}/views/0") == (200, {"removed": 0})
    assert _call(m, "DELETE", f"/sessions/{sid}") == (200, {"closed": sid})
    assert _call(m, "GET", f"/sessions/{sid}")[0] == 410


@pytest.mark.parametrize(
    "method, path, body, status, match",
    [
        ("GET", "/nothing", None, 404, "no endpoint"),
        ("PUT", "/sessions", None, 405, "allowed: POST"),
        ("POST", "/sessions", {"max_view": 3}, 400, "unexpected"),
        ("POST", "/sessions", [1], 400, "JSON object"),
        ("POST", "/sessions", {"frame": [[1, 2]]}, 400, "4x4 c2w"),
        ("POST", "/sessions", {"frame": [(2 * np.eye(4)).tolist()]}, 400, "rigid camera"),
        ("DELETE", "/sessions/x/views/one", None, 400, "view id must be an integer"),
    ],
)
def test_api_errors_are_one_line(export, method, path, body, status, match):
    m = _manager(export)
    got, payload = _call(m, method, path, body)
    assert got == status and match in payload["error"] and "\n" not in payload["error"]


def test_codec_round_trips_and_refuses():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(codec.decode_array(codec.encode_array(x)), x)
    png = codec.decode_array(codec.encode_array(x, "png"))
    np.testing.assert_allclose(png, x, atol=0.5 / 255 + 1e-7, rtol=0)
    good = codec.encode_array(x[0])
    for bad, match in [
        ({**good, "shape": [3, 8, 9]}, "bytes, expected"),
        ({**good, "f32": "***"}, "base64"),
        ({"png": "aGVsbG8="}, "PNG"),
        ({"jpg": ""}, "expected an object"),
        ([], "expected an object"),
    ]:
        with pytest.raises(BadRequest, match=match):
            codec.decode_array(bad)
    for bad, match in [
        ({"c2w": np.eye(4).tolist()}, "fxfycxcy"),
        ({"c2w": [[1, 2]], "fxfycxcy": [1, 1, 1, 1]}, "camera"),
        ({"c2w": np.eye(4).tolist(), "fxfycxcy": ["a", 1, 1, 1]}, "numbers"),
        ({"c2w": (2 * np.eye(4)).tolist(), "fxfycxcy": [1, 1, 1, 1]}, "camera"),
    ]:
        with pytest.raises(BadRequest, match=match):
            codec.decode_camera(bad)


# -- layering: the session layer is engine-neutral, the runtime knows nothing of it ------------
@pytest.mark.parametrize("name", ["__init__", "session", "api", "codec", "errors", "client"])
def test_session_layer_imports_no_engine(name):
    bad = {
        n
        for n in imported_modules(ROOT / "viewrt" / "serve" / f"{name}.py")
        if n.split(".")[0] in ("ray", "starlette", "fastapi", "torch", "http")
        or n == "viewrt.serve.app"
    }
    assert not bad, f"viewrt/serve/{name}.py imports {sorted(bad)}"


def test_runtime_imports_nothing_of_serve():
    bad = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "runtime").rglob("*.py")
        if any(n.startswith("viewrt.serve") for n in imported_modules(p))
    ]
    assert not bad


def test_serve_and_studio_load_no_runtime():
    """The runtime's ``open`` comes from the CLI (the manager's opener): importing the session
    layer and the studio's state loads no module of the runtime, imported transitively or not."""
    import subprocess
    import sys

    code = (
        "import sys, viewrt.serve, viewrt.serve.load, viewrt.studio.state\n"
        "print(sorted(m for m in sys.modules if m.startswith('viewrt.runtime')))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr


@pytest.mark.parametrize("command", ["serve", "serve-bench"])
def test_serve_without_ray_says_how_to_install_it(tiny_export, monkeypatch, command):
    import importlib.util

    from click.testing import CliRunner

    from viewrt.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("ray") else real(name, *a),
    )
    res = CliRunner().invoke(main, [command, str(tiny_export[0])])
    assert res.exit_code == 1
    assert (
        res.output.strip()
        == f'error: viewrt {command} needs Ray Serve: pip install ".[serve]" (from the viewrt clone)'
    )


def test_checking_for_ray_does_not_import_it():
    """Ray reads its single-machine switch when first imported: the check for the serve extra
    must not import it, or local mode would listen on every interface."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from viewrt.cli.serve import _require_ray\n"
        "try:\n    _require_ray('x')\nexcept Exception:\n    pass\n"
        "print('ray' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "False", res.stderr


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data): what a decompression bomb
    looks like to a decoder that trusts the header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_an_image_too_large_to_decode_is_a_bad_request():
    import base64

    from viewrt.serve import codec
    from viewrt.serve.errors import BadRequest

    data = base64.b64encode(_png_header_only(30000, 30000)).decode()
    with pytest.raises(BadRequest, match="image too large"):
        codec.decode_array({"png": data}, "image")


@pytest.mark.parametrize("max_views", [0, -1, 10**6])
def test_max_views_out_of_range_is_a_bad_request_before_any_bound(tiny_export, max_views):
    """A max_views outside the export's range is the request's fault (400), whatever the
    bounds say (it was a 503 naming max_cache_bytes for a huge one)."""
    from viewrt.serve.errors import BadRequest

    m = _manager(tiny_export[0])
    with pytest.raises(BadRequest, match="max_views must be in 1.."):
        m.create(max_views=max_views)
    assert m.ids() == []
