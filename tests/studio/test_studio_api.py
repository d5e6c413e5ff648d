"""The studio's JSON API without a browser (Starlette's test client): every endpoint, the
renders against the runtime's own, and bad input: one-line errors, state unchanged."""

from __future__ import annotations

import base64
import io
import shutil

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

import viewrt.runtime as vrt
from helpers.studio import make_studio
from viewrt.metrics import psnr
from viewrt.runtime import backends as registry
from viewrt.studio.app import make_app
from viewrt.studio.scenes import interpolate

ROUND = 0.5 / 255 + 1e-5  # a PNG's 8-bit rounding, plus float noise


@pytest.fixture
def export(tiny_export):
    return tiny_export[0]


@pytest.fixture
def client(export, scene_list):
    studio = make_studio(export, scene_list, max_sessions=3)
    with TestClient(make_app(studio)) as c:
        c.studio = studio
        yield c
    studio.manager.close_all()


def _png(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.asarray(im.convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0


def _ok(res, status=200) -> dict:
    assert res.status_code == status, res.text
    return res.json()


def _refused(res, status: int, *words) -> str:
    """A one-line error with that status, naming ``words``."""
    assert res.status_code == status, res.text
    body = res.json()
    msg = body["error"]
    assert set(body) == {"error"} and "\n" not in msg and "Traceback" not in msg, body
    for w in words:
        assert w in msg, msg
    return msg


def _session(client, scene=None, **options) -> dict:
    scene = scene or client.get("/api/server").json()["scenes"][0]["id"]
    return _ok(client.post("/api/sessions", json={"scene": scene, **options}), 201)


def _reference(export, scene, frames, target_cam, backend="ort", **options):
    """The runtime's own render of ``frames`` of ``scene`` (same frame, same options)."""
    frame = np.stack([c.c2w for c in scene.cameras])
    with vrt.open(export, backend=backend, frame=frame, threads=1, **options) as r:
        for f in frames:
            r.add_view(scene.images[f], scene.cameras[f])
        return np.clip(r.render([target_cam])[0], 0, 1)


def test_server_lists_scenes_backends_and_bounds(client, scene_list):
    s = _ok(client.get("/api/server"))
    kinds = [x["kind"] for x in s["scenes"]]
    assert kinds == ["synthetic", "synthetic", "file", "file"]
    by_id = {b["id"]: b for b in s["backends"]}
    assert set(by_id) >= set(registry.names())
    assert by_id["ort"]["available"] and by_id["ort"]["why"] is None
    for name in registry.names():
        assert by_id[name]["available"] == (
            registry.unavailable(name, vrt.load_manifest(client.studio.manager.export_dir)) is None
        )
    assert s["max_sessions"] == 3 and s["sessions"] == 0


def test_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "viewrt studio" in page.text
    for f in ("app.js", "style.css"):
        assert client.get(f"/{f}").status_code == 200
    assert "http" not in client.get("/app.js").text.replace("HTTP ", "")  # no CDN: offline


def test_views_render_and_cache_match_the_runtime(client, export):
    s = _session(client)
    sid = s["session"]
    assert s["views"] == [] and s["cache"]["views"] == 0 and s["render"] is None
    frames = _ok(client.get(f"/api/sessions/{sid}/frames"))["frames"]
    scene = client.studio.catalogue.load(s["scene"]["id"])
    assert len(frames) == len(scene) == s["scene"]["frames"]
    np.testing.assert_allclose(_png(frames[2]), scene.images[2], atol=ROUND)
    for f in (0, 2, 4):
        s = _ok(client.post(f"/api/sessions/{sid}/views", json={"frame": f}))
    assert [v["frame"] for v in s["views"]] == [0, 2, 4]
    vid = s["views"][1]["view_id"]
    s = _ok(client.delete(f"/api/sessions/{sid}/views/{vid}"))
    assert sorted(v["frame"] for v in s["views"]) == [0, 4]
    c = s["cache"]
    assert c["views"] == 2 and c["bytes_used"] == 2 * c["bytes_per_view"]
    assert c["max_views"] == 8 and c["backend"] == "ort" and c["precision"] == "fp32"
    s = _ok(client.post(f"/api/sessions/{sid}/render", json={"target": {"frame": 5}}))
    ref = _reference(export, scene, [0, 4], scene.cameras[5])
    np.testing.assert_allclose(_png(s["render"]["image"]), ref, atol=ROUND, rtol=0)
    np.testing.assert_allclose(_png(s["render"]["truth"]), scene.images[5], atol=ROUND)
    assert s["render"]["psnr"] == pytest.approx(psnr(ref, scene.images[5]), abs=2e-3)
    ops = [t["op"] for t in s["timings"]]
    assert ops == ["add", "add", "add", "remove", "render"]
    last = s["timings"][-1]
    assert last["decode"] > 0 and last["encode"] == 0
    assert last["total"] == pytest.approx(
        last["encode"] + last["cache"] + last["decode"] + last["other"], abs=1e-3
    )


def test_free_camera_between_two_frames(client, export):
    sid = _session(client)["session"]
    scene = client.studio.catalogue.load(_ok(client.get(f"/api/sessions/{sid}"))["scene"]["id"])
    _ok(client.post(f"/api/sessions/{sid}/views", json={"frame": 1}))
    s = _ok(
        client.post(f"/api/sessions/{sid}/render", json={"target": {"between": [0, 5], "t": 0.25}})
    )
    cam = interpolate(scene.cameras[0], scene.cameras[5], 0.25)
    ref = _reference(export, scene, [1], cam)
    np.testing.assert_allclose(_png(s["render"]["image"]), ref, atol=ROUND, rtol=0)
    assert s["render"]["truth"] is None and s["render"]["psnr"] is None
    ends = [interpolate(scene.cameras[0], scene.cameras[5], t) for t in (0.0, 1.0)]
    np.testing.assert_allclose(ends[0].c2w, scene.cameras[0].c2w, atol=1e-9)
    np.testing.assert_allclose(ends[1].c2w, scene.cameras[5].c2w, atol=1e-9)


def test_window_next_eviction_is_what_the_next_add_evicts(client):
    sid = _session(client, window=2)["session"]
    s = None
    for f in (0, 1):
        s = _ok(client.post(f"/api/sessions/{sid}/views", json={"frame": f}))
    assert s["next_evicts"]["evicts"] == [{"view_id": s["views"][0]["view_id"], "frame": 0}]
    predicted = s["next_evicts"]["evicts"][0]["view_id"]
    s = _ok(client.post(f"/api/sessions/{sid}/views", json={"frame": 2}))
    held = [v["view_id"] for v in s["views"]]
    assert predicted not in held and sorted(v["frame"] for v in s["views"]) == [1, 2]


def test_pin_keeps_a_view_through_the_window(client, export):
    sid = _session(client, window=2)["session"]
    for f in (0, 1):
        s = _ok(client.post(f"/api/sessions/{sid}/views", json={"frame": f}))
    v1 = next(v for v in s["views"] if v["frame"] == 1)
    s = _ok(
        client.post(f"/api/sessions/{sid}/pin", json={"view_id": v1["view_id"], "pinned": True})
    )
    assert s["cache"]["pinned"] == 1 and [v["frame"] for v in s["views"] if v["pinned"]] == [1]
    for f in (2, 3, 4):
        s = _ok(client.post(f"/api/sessions/{sid}/views", json={"frame": f}))
    assert sorted(v["frame"] for v in s["views"]) == [1, 3, 4]
    pinned = next(v for v in s["views"] if v["pinned"])
    s = _ok(
        client.post(
            f"/api/sessions/{sid}/pin", json={"view_id": pinned["view_id"], "pinned": False}
        )
    )
    assert s["cache"]["pinned"] == 0 and not any(v["pinned"] for v in s["views"])


def test_settings_reopen_with_the_same_views_and_reset_empties(client):
    sid = _session(client)["session"]
    for f in (0, 1, 2):
        _ok(client.post(f"/api/sessions/{sid}/views", json={"frame": f}))
    s = _ok(client.post(f"/api/sessions/{sid}/settings", json={"window": 2, "pinned": 1}))
    assert s["cache"]["window"] == 2 and s["cache"]["pinned"] == 1
    assert [v["frame"] for v in s["views"]] == [0, 1, 2] and s["views"][0]["pinned"]
    s = _ok(client.post(f"/api/sessions/{sid}/reset"))
    assert s["views"] == [] and s["cache"]["views"] == 0 and s["cache"]["window"] == 2


def test_non_keyframe_view_is_used_once(client):
    sid = _session(client)["session"]
    _ok(client.post(f"/api/sessions/{sid}/views", json={"frame": 0}))
    s = _ok(client.post(f"/api/sessions/{sid}/views", json={"frame": 3, "keyframe": False}))
    assert s["cache"]["pending_non_keyframe"] == s["views"][1]["view_id"]
    s = _ok(client.post(f"/api/sessions/{sid}/render", json={"target": {"frame": 2}}))
    assert s["render"]["frames"] == [0, 3]
    assert [v["frame"] for v in s["views"]] == [0] and s["cache"]["pending_non_keyframe"] is None


def test_scene_switch_and_a_scene_file(client, export):
    sid = _session(client)["session"]
    _ok(client.post(f"/api/sessions/{sid}/views", json={"frame": 0}))
    s = _ok(client.post(f"/api/sessions/{sid}/scene", json={"scene": "file-0"}))
    assert s["scene"]["id"] == "file-0" and s["scene"]["kind"] == "file" and s["views"] == []
    _ok(client.post(f"/api/sessions/{sid}/views", json={"frame": 0}))
    s = _ok(client.post(f"/api/sessions/{sid}/render", json={"target": {"frame": 3}}))
    scene = client.studio.catalogue.load("file-0")
    ref = _reference(export, scene, [0], scene.cameras[3])
    np.testing.assert_allclose(_png(s["render"]["image"]), ref, atol=ROUND, rtol=0)


@pytest.mark.skipif(
    registry.missing("openvino-f32") is not None, reason="OpenVINO is not installed"
)
def test_backend_switch_keeps_the_views(client, export):
    sid = _session(client, window=3)["session"]
    for f in (0, 2, 4):
        _ok(client.post(f"/api/sessions/{sid}/views", json={"frame": f}))
    v = _ok(client.get(f"/api/sessions/{sid}"))["views"][0]
    _ok(client.post(f"/api/sessions/{sid}/pin", json={"view_id": v["view_id"], "pinned": True}))
    s = _ok(client.post(f"/api/sessions/{sid}/backend", json={"backend": "openvino-f32"}))
    assert s["backend"] == "openvino-f32" and s["cache"]["backend"] == "openvino"
    assert s["session"] == sid and [v["frame"] for v in s["views"]] == [0, 2, 4]
    assert s["cache"]["window"] == 3 and [v["frame"] for v in s["views"] if v["pinned"]] == [0]
    s = _ok(client.post(f"/api/sessions/{sid}/render", json={"target": {"frame": 5}}))
    scene = client.studio.catalogue.load(s["scene"]["id"])
    ref = _reference(export, scene, [0, 2, 4], scene.cameras[5], backend="openvino-f32")
    np.testing.assert_allclose(_png(s["render"]["image"]), ref, atol=ROUND, rtol=0)
    assert client.studio.manager.stats()["sessions"] == 1


# --------------------------------------------------------------------------- bad input


def _bad_calls(sid: str, view_id: int) -> list:
    """(method, path, body, status, words in the error) that must each change nothing."""
    p = f"/api/sessions/{sid}"
    return [
        ("DELETE", f"{p}/views/999", None, 400, ["view 999", "not in the cache"]),
        ("DELETE", f"{p}/views/x", None, 400, ["view id"]),
        ("POST", f"{p}/views", {"frame": 99}, 400, ["frame", "0..7"]),
        ("POST", f"{p}/views", {"frame": "0"}, 400, ["frame"]),
        ("POST", f"{p}/views", {"frame": 0, "keyframe": "yes"}, 400, ["keyframe"]),
        ("POST", f"{p}/views", {"frame": 0, "extra": 1}, 400, ["unexpected ['extra']"]),
        ("POST", f"{p}/views", "not json{", 400, ["not valid JSON"]),
        ("POST", f"{p}/render", {"target": {"between": [0, 5], "t": 2}}, 400, ["t must be"]),
        ("POST", f"{p}/render", {"target": {"between": [0], "t": 0.5}}, 400, ["between"]),
        ("POST", f"{p}/render", {"target": {"frame": -1}}, 400, ["frame"]),
        ("POST", f"{p}/render", {"target": [1, 2]}, 400, ["target"]),
        ("POST", f"{p}/render", {}, 400, ["missing ['target']"]),
        ("POST", f"{p}/pin", {"view_id": 999, "pinned": True}, 400, ["not a cached keyframe"]),
        ("POST", f"{p}/pin", {"view_id": view_id, "pinned": 1}, 400, ["pinned must be"]),
        ("POST", f"{p}/settings", {"window": 8, "pinned": 2}, 400, ["exceeds the cache capacity"]),
        ("POST", f"{p}/settings", {"window": 0, "pinned": 0}, 400, ["window"]),
        ("POST", f"{p}/settings", {"window": None, "pinned": -1}, 400, ["pinned"]),
        ("POST", f"{p}/backend", {"backend": "tensorflow"}, 400, ["unknown backend"]),
        ("POST", f"{p}/backend", {"backend": "trt"}, 400, ["cannot run here"]),
        ("POST", f"{p}/scene", {"scene": "nope"}, 400, ["unknown scene"]),
        ("GET", "/api/sessions/nope", None, 404, ["unknown session"]),
        ("POST", "/api/sessions/nope/views", {"frame": 0}, 404, ["unknown session"]),
        ("PUT", f"{p}/views", None, 405, ["method not allowed"]),
        ("GET", "/api/nothing", None, 404, ["no such path"]),
    ]


def _call(client, method, path, body):
    if isinstance(body, str):
        return client.request(method, path, content=body)
    return (
        client.request(method, path, json=body)
        if body is not None
        else client.request(method, path)
    )


def test_bad_input_is_one_line_and_changes_nothing(client):
    sid = _session(client, window=3)["session"]
    for f in (0, 1):
        _ok(client.post(f"/api/sessions/{sid}/views", json={"frame": f}))
    s = _ok(client.post(f"/api/sessions/{sid}/render", json={"target": {"frame": 4}}))
    before = _ok(client.get(f"/api/sessions/{sid}"))
    assert before == s
    for method, path, body, status, words in _bad_calls(sid, s["views"][0]["view_id"]):
        _refused(_call(client, method, path, body), status, *words)
        after = _ok(client.get(f"/api/sessions/{sid}"))
        assert after == before, f"{method} {path} {body} changed the session"
    assert client.studio.manager.stats()["sessions"] == 1


def test_render_without_views_and_a_full_cache(client):
    sid = _session(client, max_views=2)["session"]
    _refused(
        client.post(f"/api/sessions/{sid}/render", json={"target": {"frame": 1}}), 400, "no views"
    )
    for f in (0, 1):
        s = _ok(client.post(f"/api/sessions/{sid}/views", json={"frame": f}))
    assert "cache full" in s["next_evicts"]["refused"]
    _refused(client.post(f"/api/sessions/{sid}/views", json={"frame": 2}), 400, "cache full")
    assert _ok(client.get(f"/api/sessions/{sid}")) == s


def test_too_many_sessions_is_refused_naming_the_bound(client):
    sids = [_session(client)["session"] for _ in range(3)]
    _refused(client.post("/api/sessions", json={"scene": "file-0"}), 503, "max_sessions 3")
    assert client.studio.manager.stats()["sessions"] == 3
    _ok(client.delete(f"/api/sessions/{sids[0]}"))
    _refused(client.get(f"/api/sessions/{sids[0]}"), 410, "gone", "closed by its client")
    _session(client)


def test_cache_bytes_bound(export, scene_list):
    per_view = vrt.load_manifest(export).kv_bytes_per_view
    studio = make_studio(export, scene_list, max_cache_bytes=3 * per_view)
    with TestClient(make_app(studio)) as c:
        sid = _ok(c.post("/api/sessions", json={"scene": "file-0", "max_views": 2}), 201)["session"]
        _refused(
            c.post("/api/sessions", json={"scene": "file-0", "max_views": 2}),
            503,
            "max_cache_bytes",
        )
        _ok(c.get(f"/api/sessions/{sid}"))
    studio.manager.close_all()


def test_bad_create_options_keep_nothing(client):
    for body, words in [
        ({"scene": "nope"}, ["unknown scene"]),
        ({"scene": "file-0", "max_views": 99}, ["max_views must be in 1..8"]),
        ({"scene": "file-0", "window": 9}, ["exceeds the cache capacity"]),
        ({"scene": "file-0", "backend": "bogus"}, ["unknown backend"]),
        ({}, ["missing ['scene']"]),
    ]:
        _refused(client.post("/api/sessions", json=body), 400, *words)
    assert client.studio.manager.stats()["sessions"] == 0


def test_a_removed_scene_file(export, tmp_path):
    from viewrt.data import make_synthetic_list

    size = vrt.load_manifest(export).image_size
    lst = make_synthetic_list(tmp_path, 2, n_views=4, size=size, seed=920000)
    studio = make_studio(export, lst, synthetic=0)
    with TestClient(make_app(studio)) as c:
        s = _ok(c.post("/api/sessions", json={"scene": "file-0"}), 201)
        sid = s["session"]
        s = _ok(c.post(f"/api/sessions/{sid}/views", json={"frame": 1}))
        shutil.rmtree(tmp_path / "synthetic_001")
        _refused(
            c.post(f"/api/sessions/{sid}/scene", json={"scene": "file-1"}),
            400,
            "scene file not found",
        )
        assert _ok(c.get(f"/api/sessions/{sid}")) == s
        _refused(c.post("/api/sessions", json={"scene": "file-1"}), 400, "not found")
        assert studio.manager.stats()["sessions"] == 1
    studio.manager.close_all()


def test_idle_session_expires(export, scene_list):
    now = [1000.0]
    studio = make_studio(export, scene_list, clock=lambda: now[0], idle_timeout_s=60)
    with TestClient(make_app(studio)) as c:
        sid = _ok(c.post("/api/sessions", json={"scene": "file-0"}), 201)["session"]
        now[0] += 59
        _ok(c.get(f"/api/sessions/{sid}"))  # a call resets the idle clock
        now[0] += 61
        _refused(c.get(f"/api/sessions/{sid}"), 410, "gone", "60 s idle")
        assert studio.manager.ids() == []
        new = _ok(c.post("/api/sessions", json={"scene": "file-0"}), 201)["session"]
        assert list(studio._sessions) == studio.manager.ids() == [new]  # the expired page dropped
    studio.manager.close_all()


def test_quantized_sibling_export_is_offered_and_runs(export, tmp_path):
    """A calib export next to the export becomes ``<config>-int8`` choices; switching to
    one keeps the views and runs the int8 graphs."""
    from viewrt.calib.quantize import quantize_export

    root = tmp_path / "exports"
    shutil.copytree(export, root / "model")
    quantize_export(root / "model", root / "model-int8", "int8", synthetic=1)
    studio = make_studio(root / "model", synthetic=1)
    expected = {f"{n}-int8" for n, row in registry.configs().items() if "int8" in row.quantized}
    assert expected and expected <= set(studio.backends)
    assert all(studio.backends[k].export_dir == root / "model-int8" for k in expected)
    with TestClient(make_app(studio)) as c:
        s = _ok(
            c.post("/api/sessions", json={"scene": c.get("/api/server").json()["scenes"][0]["id"]}),
            201,
        )
        sid = s["session"]
        for f in (0, 3):
            _ok(c.post(f"/api/sessions/{sid}/views", json={"frame": f}))
        s = _ok(c.post(f"/api/sessions/{sid}/backend", json={"backend": "ort-int8"}))
        assert s["cache"]["precision"] == "int8" and [v["frame"] for v in s["views"]] == [0, 3]
        s = _ok(c.post(f"/api/sessions/{sid}/render", json={"target": {"frame": 5}}))
        assert s["render"]["psnr"] > 5
    studio.manager.close_all()
