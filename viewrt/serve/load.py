"""The load benchmark of ``viewrt serve-bench``: concurrent sessions through the HTTP API,
and the same work in one process (a SessionManager called from as many threads).

Each session: open with ``views`` views of capacity, add ``views`` random posed views, then
``renders`` render calls of ``targets`` random targets each. Reported per run: wall time,
renders and target images per second, and p50/p99 latency of add_view and render calls.
Standard library + numpy only (the server is started by the caller).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from viewrt.geometry import look_at
from viewrt.serve.client import Client
from viewrt.serve.session import SessionManager


@dataclass(frozen=True)
class Workload:
    """What every session does (see the module docstring)."""

    sessions: int = 4
    views: int = 4
    targets: int = 4
    renders: int = 10
    seed: int = 0


def _camera(rng: np.random.Generator, size: int):
    eye = rng.normal(size=3)
    eye *= rng.uniform(1.0, 1.5) / np.linalg.norm(eye)
    up = (0.0, 0.0, 1.0) if abs(eye[2]) < 0.9 * np.linalg.norm(eye) else (0.0, 1.0, 0.0)
    f = rng.uniform(0.8, 1.2) * size
    return look_at(eye, np.zeros(3), up), [f, f, size / 2, size / 2]


def _session_ops(session, size: int, w: Workload, seed: int, lat: dict) -> None:
    """Run one session's work on an object with add_view/render (a client Session or a
    manager bound to a session id), appending latencies (s) to ``lat``."""
    rng = np.random.default_rng(seed)
    for _ in range(w.views):
        image = rng.uniform(0, 1, (3, size, size)).astype(np.float32)
        cam = _camera(rng, size)
        t = time.perf_counter()
        session.add_view(image, cam)
        lat["add_view"].append(time.perf_counter() - t)
    for _ in range(w.renders):
        cams = [_camera(rng, size) for _ in range(w.targets)]
        t = time.perf_counter()
        session.render(cams)
        lat["render"].append(time.perf_counter() - t)


def _run(w: Workload, size: int, open_session: Callable, close_session: Callable) -> dict:
    lat = {"add_view": [], "render": []}
    errors: list[str] = []

    def worker(k: int) -> None:
        try:
            s = open_session()
            try:
                _session_ops(s, size, w, w.seed + k, lat)
            finally:
                close_session(s)
        except Exception as e:  # reported, not raised from a thread
            errors.append(f"session {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(w.sessions)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return _summary(w, wall, lat, errors)


def _summary(w: Workload, wall: float, lat: dict, errors: list[str]) -> dict:
    def pct(xs, q):
        return round(float(np.percentile(np.asarray(xs) * 1e3, q)), 2) if xs else None

    renders = len(lat["render"])
    return {
        "wall_s": round(wall, 3),
        "renders_per_s": round(renders / wall, 2),
        "images_per_s": round(renders * w.targets / wall, 2),
        "render_ms_p50": pct(lat["render"], 50),
        "render_ms_p99": pct(lat["render"], 99),
        "add_view_ms_p50": pct(lat["add_view"], 50),
        "add_view_ms_p99": pct(lat["add_view"], 99),
        "render_calls": renders,
        "errors": errors,
    }


def run_http(url: str, size: int, w: Workload) -> dict:
    """The workload through ``viewrt serve`` at ``url``: one client thread per session."""
    return _run(w, size, lambda: Client(url).session(max_views=w.views), lambda s: s.close())


class _Bound:
    """A manager's session as an object with add_view / render."""

    def __init__(self, manager: SessionManager, sid: str):
        self.manager, self.id = manager, sid

    def add_view(self, image, camera):
        return self.manager.add_view(self.id, image, camera)

    def render(self, cameras):
        return self.manager.render(self.id, cameras)


def run_in_process(manager: SessionManager, w: Workload) -> dict:
    """The same workload in this process: a SessionManager called from one thread per session."""
    return _run(
        w,
        manager.manifest.image_size,
        lambda: _Bound(manager, manager.create(max_views=w.views)),
        lambda s: manager.close(s.id),
    )
