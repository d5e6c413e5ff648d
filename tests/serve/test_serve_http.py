"""``viewrt serve`` over HTTP on 127.0.0.1 (one local Ray for the module, 2 CPUs): every
endpoint; bad inputs answered by one-line errors with their status, the session unchanged;
8 concurrent sessions x 50 random operations against single-process renderers (1e-5); a
replica killed mid-run (its sessions report lost, the others finish exactly)."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from helpers import random_cameras

# viewrt serve's local mode: Ray's processes on loopback (read by Ray when it is imported)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install '.[serve]' (the serve extra)"
)
serve = pytest.importorskip(
    "ray.serve", reason="Ray Serve is not installed: pip install '.[serve]'"
)

import viewrt.runtime as vrt  # noqa: E402
from viewrt.errors import ViewrtError  # noqa: E402
from viewrt.serve import Client, Limits, SessionGone, codec  # noqa: E402
from viewrt.serve import app as serve_app  # noqa: E402

ATOL = 1e-5


@pytest.fixture(scope="module")
def port():
    """One local Ray + Serve HTTP proxy on 127.0.0.1 for the whole module."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    serve_app.init_ray(num_cpus=2, object_store_memory=100 * 2**20)  # viewrt serve's local mode
    serve.start(http_options={"host": "127.0.0.1", "port": free})
    yield free
    serve.shutdown()
    ray.shutdown()


def _start(export, port, name, replicas=2, **limits):
    return serve_app.start(
        str(export),
        opener=vrt.open,
        replicas=replicas,
        port=port,
        limits=Limits(**limits),
        open_options={"threads": 1},
        replica_cpus=0.25,
        name=name,
        route_prefix=f"/{name}",
    )


@pytest.fixture(scope="module")
def api_server(tiny_export, port):
    per_view = vrt.load_manifest(tiny_export[0]).kv_bytes_per_view
    server = _start(tiny_export[0], port, "api", max_sessions=3, max_cache_bytes=10 * per_view)
    yield server
    server.stop()


def _http(url, method="GET", body=None):
    """(status, JSON answer) of one raw request; ``body`` bytes, str or a JSON-ready value."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _image(rng, size=32):
    return rng.uniform(0, 1, (3, size, size)).astype(np.float32)


# -- every endpoint -----------------------------------------------------------------------------
def test_every_endpoint(api_server, tiny_export):
    rng = np.random.default_rng(10)
    url = api_server.url
    status, server = _http(url + "/")
    assert status == 200 and server["export"]["preset"] == "tiny" and len(server["replicas"]) == 2
    status, made = _http(url + "/sessions", "POST", {"max_views": 3, "window": 2, "pinned": 1})
    assert status == 201 and made["info"]["window"] == 2
    sid = made["session"]
    cams = random_cameras(rng, 4, 32)
    images = [_image(rng) for _ in range(3)]
    ref = vrt.open(tiny_export[0], max_views=3, window=2, pinned=1, threads=1)
    for i, (img, cam) in enumerate(zip(images, cams)):
        enc = codec.encode_array(img, "png" if i == 1 else "f32")  # both image encodings
        body = {"image": enc, "camera": codec.encode_camera(cam), "keyframe": i != 2}
        status, added = _http(f"{url}/sessions/{sid}/views", "POST", body)
        want_img = codec.decode_array(enc)  # the PNG's 8-bit values
        assert (status, added) == (201, {"view_id": ref.add_view(want_img, cam, keyframe=i != 2)})
    target = {"cameras": [codec.encode_camera(cams[3])]}
    status, out = _http(f"{url}/sessions/{sid}/render", "POST", target)
    want = ref.render([cams[3]])
    assert status == 200
    np.testing.assert_allclose(codec.decode_array(out["images"]), want, atol=ATOL, rtol=0)
    status, out = _http(f"{url}/sessions/{sid}/render", "POST", {**target, "format": "png"})
    got = codec.decode_array(out["images"])
    np.testing.assert_allclose(got, ref.render([cams[3]]), atol=0.5 / 255 + 1e-5, rtol=0)
    status, info = _http(f"{url}/sessions/{sid}")
    assert status == 200 and info["cached_ids"] == ref.info()["cached_ids"] == [0, 1]
    assert _http(f"{url}/sessions/{sid}/views/1", "DELETE") == (200, {"removed": 1})
    ref.remove_view(1)
    status, out = _http(f"{url}/sessions/{sid}/render", "POST", target)
    np.testing.assert_allclose(codec.decode_array(out["images"]), ref.render([cams[3]]), atol=ATOL)
    assert _http(f"{url}/sessions/{sid}", "DELETE") == (200, {"closed": sid})
    status, gone = _http(f"{url}/sessions/{sid}")
    assert status == 410 and "closed by its client" in gone["error"]
    ref.close()


def _session_with_a_view(url, rng):
    cam, target = random_cameras(rng, 2, 32)
    sid = _http(url + "/sessions", "POST", {"max_views": 2})[1]["session"]
    body = {"image": codec.encode_array(_image(rng)), "camera": codec.encode_camera(cam)}
    assert _http(f"{url}/sessions/{sid}/views", "POST", body)[0] == 201
    return sid, body, {"cameras": [codec.encode_camera(target)]}


def test_bad_inputs_answer_one_line_and_change_nothing(api_server):
    rng = np.random.default_rng(11)
    url = api_server.url
    sid, good, target = _session_with_a_view(url, rng)
    s = f"{url}/sessions/{sid}"
    before_info = _http(s)[1]
    before = codec.decode_array(_http(s + "/render", "POST", target)[1]["images"])
    nan = np.full((3, 32, 32), np.nan, np.float32)
    cases = [
        (
            s + "/views",
            "POST",
            {**good, "image": codec.encode_array(np.zeros((3, 16, 16)))},
            400,
            "shape",
        ),
        (s + "/views", "POST", {**good, "image": codec.encode_array(nan)}, 400, "image"),
        (
            s + "/views",
            "POST",
            {**good, "image": {"f32": "!!", "shape": [3, 32, 32]}},
            400,
            "base64",
        ),
        (s + "/views", "POST", {**good, "image": {"png": "aGk="}}, 400, "PNG"),
        (
            s + "/views",
            "POST",
            {**good, "camera": {"c2w": (2 * np.eye(4)).tolist(), "fxfycxcy": [9, 9, 16, 16]}},
            400,
            "camera",
        ),
        (
            s + "/views",
            "POST",
            {**good, "camera": {"c2w": np.eye(4).tolist(), "fxfycxcy": [-9, 9, 16, 16]}},
            400,
            "camera",
        ),
        (s + "/views", "POST", {**good, "keyframe": "yes"}, 400, "keyframe"),
        (s + "/views", "POST", {"image": good["image"]}, 400, "missing"),
        (s + "/views", "POST", "{not json", 400, "not valid JSON"),
        (s + "/views/7", "DELETE", None, 400, "not in the cache"),
        (s + "/render", "POST", {"cameras": []}, 400, "at least one"),
        (s + "/render", "POST", {**target, "format": "jpg"}, 400, "format"),
        (s + "/render", "GET", None, 405, "allowed: POST"),
        (url + "/sessions/0-000000-0123456789abcdef", "GET", None, 404, "unknown session"),
        (url + "/sessions/nope/render", "POST", target, 404, "unknown session"),
        (url + "/elsewhere", "GET", None, 404, "no endpoint"),
    ]
    for where, method, body, status, match in cases:
        got, answer = _http(where, method, body)
        assert (got, match in answer.get("error", "")) == (status, True), (where, body, answer)
        assert list(answer) == ["error"] and "\n" not in answer["error"]
    # a full cache (max_views 2, no window) refuses the third view
    assert _http(s + "/views", "POST", good)[0] == 201
    full = _http(s + "/views", "POST", good)
    assert full[0] == 400 and "full" in full[1]["error"]
    _http(s + "/views/1", "DELETE")
    status, after_info = _http(s)
    before_info.pop("age_s"), after_info.pop("age_s")
    assert (status, after_info) == (200, before_info)
    after = codec.decode_array(_http(s + "/render", "POST", target)[1]["images"])
    np.testing.assert_array_equal(after, before)
    _http(s, "DELETE")


def test_bounds_refuse_with_503_naming_the_bound(api_server):
    url = api_server.url
    before = _http(url + "/")[1]
    big = [_http(url + "/sessions", "POST", {"max_views": 8}) for _ in range(2)]  # one per replica
    assert [b[0] for b in big] == [201, 201]
    status, refused = _http(url + "/sessions", "POST", {"max_views": 8})
    assert status == 503 and "all 2 replicas refused" in refused["error"]
    assert "max_cache_bytes" in refused["error"]
    small = [_http(url + "/sessions", "POST", {"max_views": 1}) for _ in range(4)]  # 3 per replica
    assert [b[0] for b in small] == [201] * 4
    status, refused = _http(url + "/sessions", "POST", {"max_views": 1})
    assert status == 503 and "max_sessions 3" in refused["error"]
    for b in big + small:
        _http(f"{url}/sessions/{b[1]['session']}", "DELETE")
    assert _http(url + "/")[1]["sessions"] == before["sessions"]


def _descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (Ray's GCS, raylet, workers, agents)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += children.get(p, [])
    return out


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for p in pids:
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                link = os.readlink(f"/proc/{p}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    return inodes


LOOPBACK = ("0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
def test_every_listening_socket_is_on_loopback(api_server, port):
    """Local mode: the HTTP proxy and every socket of Ray's processes listen on 127.0.0.1
    (not 0.0.0.0 / ::), unless --host asks."""
    ours = _socket_inodes(_descendants(os.getpid()))
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                addr, p = fields[1].split(":")
                if fields[3] == "0A" and fields[9] in ours:
                    listening.append((addr, int(p, 16)))
    assert port in [p for _, p in listening]  # the HTTP proxy is among them
    assert len(listening) > 3 and [x for x in listening if x[0] not in LOOPBACK] == []


# -- isolation under load -----------------------------------------------------------------------
def _random_op(rng, ref, size):
    """One random operation for a session whose twin renderer is ``ref``."""
    r = rng.uniform()
    if r < 0.45:
        (cam,) = random_cameras(rng, 1, size)
        return ("add", _image(rng, size), cam, bool(rng.uniform() < 0.8))
    if r < 0.6:
        cached = ref.info()["cached_ids"]
        vid = int(rng.choice(cached)) if cached and rng.uniform() < 0.9 else 999
        return ("remove", vid)
    return ("render", random_cameras(rng, int(rng.integers(1, 4)), size))


def _apply(target, op):
    """Run an operation on a client session or a renderer: its result, or "error"."""
    try:
        if op[0] == "add":
            return target.add_view(op[1], op[2], keyframe=op[3])
        if op[0] == "remove":
            return target.remove_view(op[1])
        return target.render(op[1])
    except SessionGone:  # the served session is lost: not an answer to compare
        raise
    except ViewrtError:
        return "error"


def _check(a, b, where):
    """None when a served result matches the renderer's, else what differs."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.shape != b.shape:
            return f"{where}: {type(a).__name__} vs {type(b).__name__}"
        err = float(np.abs(a - b).max())
        return None if err <= ATOL else f"{where}: max abs diff {err:.2e}"
    return None if a == b else f"{where}: {a!r} != {b!r}"


def _session_worker(client, export, seed, n_ops, failures, counts, gate=None):
    """n_ops random operations on a new session and on its twin renderer, compared."""
    rng = np.random.default_rng(seed)
    opts = {"max_views": int(rng.choice([4, 6])), "window": [None, 3][seed % 2]}
    opts["pinned"] = int(seed % 3 == 0)
    with client.session(**opts) as s, vrt.open(export, threads=1, **opts) as ref:
        counts[seed] = {"session": s.id, "renders": 0, "ops": 0}
        for i in range(n_ops):
            if gate is not None and i == gate[0]:
                gate[1].wait()  # every session pauses here while the test kills a replica
                gate[2].wait()
            op = _random_op(rng, ref, ref.size)
            try:
                got = _apply(s, op)
            except SessionGone as e:
                counts[seed]["lost"] = str(e)
                return
            msg = _check(got, _apply(ref, op), f"session {seed} op {i} {op[0]}")
            if msg:
                failures.append(msg)
            counts[seed]["ops"] += 1
            counts[seed]["renders"] += isinstance(got, np.ndarray)
        if s.info()["cached_ids"] != ref.info()["cached_ids"]:
            failures.append(f"session {seed}: cached ids differ")


def _run_sessions(url, export, seeds, n_ops, gate=None):
    failures, counts = [], {}
    threads = [
        threading.Thread(
            target=_session_worker,
            args=(Client(url), export, seed, n_ops, failures, counts, gate),
        )
        for seed in seeds
    ]
    for t in threads:
        t.start()
    return threads, failures, counts


def test_eight_sessions_under_load_match_single_process(tiny_export, port):
    server = _start(tiny_export[0], port, "load", replicas=2, max_sessions=8)
    try:
        threads, failures, counts = _run_sessions(server.url, tiny_export[0], range(8), 50)
        for t in threads:
            t.join(timeout=300)
        assert not failures, failures[:5]
        assert sorted(counts) == list(range(8)) and all(c["ops"] == 50 for c in counts.values())
        assert all(c["renders"] >= 5 for c in counts.values()), counts  # the test compared images
        assert {c["session"][0] for c in counts.values()} == {"0", "1"}  # both replicas served
    finally:
        server.stop()


# -- a replica dies mid-run -------------------------------------------------------------------
def test_a_killed_replica_loses_its_sessions_only(tiny_export, port):
    server = _start(tiny_export[0], port, "fault", replicas=2, max_sessions=4)
    try:
        victim = server.replicas()[0]
        gate = (10, threading.Barrier(5), threading.Barrier(5))  # 4 sessions + this test
        threads, failures, counts = _run_sessions(server.url, tiny_export[0], range(4), 30, gate)
        gate[1].wait(timeout=120)  # every session has run 10 operations
        os.kill(victim["pid"], signal.SIGKILL)
        time.sleep(0.5)
        gate[2].wait(timeout=120)
        for t in threads:
            t.join(timeout=300)
        assert not failures, failures[:5]
        on_victim = {k: c for k, c in counts.items() if c["session"].startswith("0-")}
        others = {k: c for k, c in counts.items() if not c["session"].startswith("0-")}
        assert len(on_victim) == len(others) == 2, counts
        for c in on_victim.values():
            assert c["ops"] == 10 and c["session"] in c["lost"] and "lost" in c["lost"], c
        for c in others.values():
            assert c["ops"] == 30 and "lost" not in c, c
        # the server goes on: replica 0 came back empty, new sessions work
        client = Client(server.url)
        deadline = time.time() + 60
        while server.replicas()[0]["pid"] == victim["pid"] and time.time() < deadline:
            time.sleep(0.5)
        with client.session() as s:
            rng = np.random.default_rng(5)
            cam, target = random_cameras(rng, 2, 32)
            s.add_view(_image(rng), cam)
            assert s.render([target]).shape == (1, 3, 32, 32)
    finally:
        server.stop()
