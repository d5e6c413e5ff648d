"""SessionManager.create on a session's own backend / export, and reopen: a new renderer
under the same id after a setup, all or nothing, within the cache bytes bound."""

from __future__ import annotations

import numpy as np
import pytest

import viewrt.runtime as vrt
from helpers import random_cameras
from viewrt.errors import ViewrtError
from viewrt.serve.errors import BadRequest, Refused, SessionGone
from viewrt.serve.session import Limits, SessionManager


@pytest.fixture
def export(tiny_export):
    return tiny_export[0]


def _views(rng, size, n):
    return [(rng.uniform(0, 1, (3, size, size)).astype(np.float32), c)
            for c in random_cameras(rng, n, size)]  # fmt: skip


def test_reopen_replaces_the_renderer_after_setup(export):
    rng = np.random.default_rng(3)
    m = SessionManager(export, "ort", Limits(), {"threads": 1}, opener=vrt.open)
    sid = m.create(max_views=4)
    size = m.manifest.image_size
    views = _views(rng, size, 3)
    for img, cam in views:
        m.add_view(sid, img, cam)
    targets = random_cameras(rng, 2, size)
    before = m.render(sid, targets)
    old = m.renderer(sid)

    def replay(r):
        for img, cam in views:
            r.add_view(img, cam)

    m.reopen(sid, setup=replay, window=1, pinned=1)
    new = m.renderer(sid)
    assert new is not old and old._closed and m.options(sid)["window"] == 1
    assert new.info()["pinned_ids"] == [0] and new.info()["cached_ids"] == [0, 2]  # 1 evicted
    m.reopen(
        sid, setup=replay, window=None, pinned=0
    )  # back to the same options as before: the same render
    np.testing.assert_allclose(m.render(sid, targets), before, atol=1e-5, rtol=0)
    assert m.stats()["sessions"] == 1 and m.ids() == [sid]
    m.close_all()
    assert m.ids() == []


def test_a_failed_reopen_changes_nothing(export):
    rng = np.random.default_rng(4)
    m = SessionManager(export, "ort", Limits(), {"threads": 1}, opener=vrt.open)
    sid = m.create(max_views=4)
    img, cam = _views(rng, m.manifest.image_size, 1)[0]
    m.add_view(sid, img, cam)
    r, info = m.renderer(sid), m.info(sid)
    opened = []

    def boom(new):
        opened.append(new)
        raise ViewrtError("setup failed")

    with pytest.raises(ViewrtError, match="setup failed"):
        m.reopen(sid, setup=boom)
    assert opened[0]._closed  # the new renderer is closed again
    with pytest.raises(ViewrtError, match="exceeds the cache capacity"):
        m.reopen(sid, window=9)
    with pytest.raises(BadRequest, match="unknown option"):
        m.reopen(sid, colour="red")
    assert m.renderer(sid) is r and m.info(sid)["slots"] == info["slots"]
    m.close(sid)
    with pytest.raises(SessionGone):
        m.reopen(sid)


def test_reopen_within_the_cache_bytes_bound(export):
    per_view = vrt.load_manifest(export).kv_bytes_per_view
    limits = Limits(max_cache_bytes=6 * per_view)
    m = SessionManager(export, "ort", limits, {"threads": 1}, opener=vrt.open)
    a = m.create(max_views=2)
    m.create(max_views=2)
    m.reopen(a, max_views=4)  # 4 + 2 views fit: the old reservation does not count twice
    assert m.stats()["cache_bytes"] == 6 * per_view
    with pytest.raises(Refused, match="max_cache_bytes"):
        m.reopen(a, max_views=5)
    assert m.renderer(a).max_views == 4
    m.close_all()


def test_a_session_on_its_own_backend(export):
    m = SessionManager(export, "ort", Limits(), {"threads": 1}, opener=vrt.open)
    sid = m.create(backend="ort-plain")
    assert m.options(sid)["backend"] == "ort-plain"
    assert "decoder_ort_cpu" not in m.info(sid)["decoder_graph"]
    with pytest.raises(ViewrtError, match="unknown backend"):
        m.create(backend="bogus")
    with pytest.raises(BadRequest, match="backend must be a string"):
        m.create(backend=3)
    assert m.stats()["sessions"] == 1
    m.close_all()
