"""A renderer shared by threads (calls serialized, every result equal to a single-threaded
run) and an fp16 cache that a far camera would overflow (refused, cache unchanged)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import viewrt.runtime as vrt
from viewrt.data import synthetic_cameras
from viewrt.errors import ViewrtError


def _scene(size, n, seed):
    rng = np.random.default_rng(seed)
    c2ws, k = synthetic_cameras(n, size, int(rng.integers(1 << 30)))
    images = rng.random((n, 3, size, size), dtype=np.float32)
    return images, [vrt.Camera(c, k) for c in c2ws], vrt.NormalizationFrame.from_cameras(c2ws)


def test_threads_share_one_renderer(tiny_export):
    """4 threads render their own targets 250 times each (1,000 renders) while a fifth adds
    and removes a view; every image equals a single-threaded render of the same target
    with or without that view, never another thread's image."""
    out_dir, model = tiny_export
    size = model.cfg.image_size
    images, cams, frame = _scene(size, 12, None)
    targets = {t: [cams[8 + t]] for t in range(4)}
    with vrt.open(out_dir, frame=frame, max_views=8) as r:
        for i in range(3):
            r.add_view(images[i], cams[i])
        base = {t: r.render(targets[t]) for t in targets}  # single-threaded references, 3 views
        vid = r.add_view(images[3], cams[3])
        extra = {t: r.render(targets[t]) for t in targets}  # ... and with the 4th view
        r.remove_view(vid)
        for t in targets:  # the references tell the targets and the two states apart
            assert all(np.abs(base[t] - base[u]).max() > 1e-3 for u in targets if u != t)
            assert np.abs(base[t] - extra[t]).max() > 1e-3
        errors, bad, stop = [], [], threading.Event()

        def reader(t):
            try:
                for i in range(250):
                    got = r.render(targets[t])
                    if min(np.abs(got - base[t]).max(), np.abs(got - extra[t]).max()) > 1e-5:
                        bad.append((t, i))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        def writer():
            try:
                while not stop.is_set():
                    v = r.add_view(images[3], cams[3])
                    r.remove_view(v)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        readers = [threading.Thread(target=reader, args=(t,)) for t in targets]
        w = threading.Thread(target=writer)
        w.start()
        for th in readers:
            th.start()
        for th in readers:
            th.join()
        stop.set()
        w.join()
        assert not errors, errors
        assert not bad, (
            f"{len(bad)} of 1000 renders returned another thread's image or a wrong one: {bad[:5]}"
        )


def test_fp16_overflow_is_refused_and_the_cache_is_unchanged(tiny_export_fp16):
    out_dir, model = tiny_export_fp16
    size = model.cfg.image_size
    images, cams, _ = _scene(size, 3, 0)
    with vrt.open(out_dir) as r:  # frame from the first view: a far camera is not normalized away
        r.add_view(images[0], cams[0])
        before = r.info()
        kv_before = [r.backend.download(b).copy() for b in r.cache.buffers]
        far = cams[1].c2w.copy()
        far[:3, 3] += 1e5  # 1e5 units away
        with pytest.raises(ViewrtError, match="non-finite .* normalize the scene"):
            r.add_view(images[1], vrt.Camera(far, cams[1].fxfycxcy))
        assert r.info() == before
        T = r.cache.T
        for b, kb in zip(r.cache.buffers, kv_before):
            assert np.array_equal(
                r.backend.download(b)[:, :T], kb[:, :T]
            )  # the cached view is untouched
        img = r.render([cams[2]])
        assert np.isfinite(img).all() and np.abs(img).max() > 0.01
