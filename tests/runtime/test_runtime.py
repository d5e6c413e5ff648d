"""Runtime parity with PyTorch at every step, cache policies, zero copy, errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import viewrt.runtime as vrt
from viewrt.data import synthetic_cameras
from viewrt.errors import ViewrtError
from viewrt.geometry import input_view, plucker

ATOL = 1e-4  # fp32 graphs vs PyTorch, rendered images (docs/design.md)


class Scene:
    """Fresh random images on exact synthetic cameras, plus the PyTorch reference."""

    def __init__(self, model, n_views: int, n_targets: int = 2, seed=None):
        size = model.cfg.image_size
        rng = np.random.default_rng(seed)
        c2ws, k = synthetic_cameras(n_views + n_targets, size, int(rng.integers(1 << 30)))
        self.model = model
        self.images = rng.random((n_views, 3, size, size), dtype=np.float32)
        self.cams = [vrt.Camera(c2ws[i], k) for i in range(n_views)]
        self.targets = [vrt.Camera(c2ws[n_views + i], k) for i in range(n_targets)]
        self.frame = vrt.NormalizationFrame.from_cameras(c2ws)

    def reference(self, view_indices: list[int], frame=None) -> np.ndarray:
        """One batch PyTorch forward over the given views (any order)."""
        frame = frame or self.frame
        size = self.model.cfg.image_size
        views = np.stack(
            [
                input_view(self.images[i], frame.apply(self.cams[i].c2w), self.cams[i].fxfycxcy)
                for i in view_indices
            ]
        )
        rays = np.stack([plucker(frame.apply(c.c2w), c.fxfycxcy, size, size) for c in self.targets])
        with torch.no_grad():
            return self.model(torch.from_numpy(views)[None], torch.from_numpy(rays)[None])[
                0
            ].numpy()


def assert_parity(renderer, scene, view_indices, frame=None):
    got = renderer.render(scene.targets)
    want = scene.reference(view_indices, frame)
    assert np.abs(want).max() > 0.01  # never compare zeros
    err = np.abs(got - want).max()
    assert err <= ATOL, f"views {view_indices}: max abs {err:.3g} > {ATOL}"


@pytest.mark.parametrize("export", ["tiny_export", "small_export"])
def test_scripted_sequence_parity(export, request, backend):
    out_dir, model = request.getfixturevalue(export)
    sc = Scene(model, n_views=8)
    with vrt.open(out_dir, frame=sc.frame, **backend) as r:
        ids, live = [], []
        for i in range(5):  # add x 5, parity after each
            ids.append(r.add_view(sc.images[i], sc.cams[i]))
            live.append(i)
            assert_parity(r, sc, live)
        r.remove_view(ids[2])  # from the middle
        live.remove(2)
        assert_parity(r, sc, live)
        assert r.info()["slots"] == [
            ids[0],
            ids[1],
            ids[4],
            ids[3],
        ]  # last slot moved into the hole
        r.remove_view(ids[3])  # the last slot
        live.remove(3)
        assert_parity(r, sc, live)
        r.add_view(sc.images[5], sc.cams[5], keyframe=False)  # used once, not cached
        assert_parity(r, sc, live + [5])
        assert_parity(r, sc, live)
        r.reset()
        assert r.info()["views"] == 0
        r.add_view(sc.images[6], sc.cams[6])
        assert_parity(r, sc, [6])


def test_window_with_pinned_views(tiny_export, backend):
    out_dir, model = tiny_export
    sc = Scene(model, n_views=8)
    with vrt.open(out_dir, max_views=6, window=3, pinned=2, frame=sc.frame, **backend) as r:
        ids = [r.add_view(sc.images[i], sc.cams[i]) for i in range(5)]
        assert_parity(r, sc, [0, 1, 2, 3, 4])
        ids.append(r.add_view(sc.images[5], sc.cams[5]))  # evicts view 2 (oldest unpinned)
        assert_parity(r, sc, [0, 1, 3, 4, 5])
        ids.append(r.add_view(sc.images[6], sc.cams[6]))  # evicts view 3
        assert_parity(r, sc, [0, 1, 4, 5, 6])
        info = r.info()
        assert info["pinned_ids"] == [ids[0], ids[1]] and info["views"] == 5
        r.add_view(sc.images[7], sc.cams[7], keyframe=False)  # free slot 5: scratch
        assert_parity(r, sc, [0, 1, 4, 5, 6, 7])
        r.remove_view(ids[5])  # remove with a pending scratch view: it stays pending
        r.add_view(sc.images[7], sc.cams[7], keyframe=False)
        r.remove_view(ids[4])
        assert_parity(r, sc, [0, 1, 6, 7])
        assert_parity(r, sc, [0, 1, 6])


def test_frame_from_first_view(tiny_export, backend):
    out_dir, model = tiny_export
    sc = Scene(model, n_views=3)
    with vrt.open(out_dir, **backend) as r:
        assert r.info()["frame_source"] == "not fixed yet"
        r.add_view(sc.images[0], sc.cams[0])
        r.add_view(sc.images[1], sc.cams[1])
        frame = vrt.NormalizationFrame.from_cameras(sc.cams[0].c2w[None])
        assert (
            np.allclose(r.frame.transform, frame.transform)
            and r.info()["frame_source"] == "first added view"
        )
        assert_parity(r, sc, [0, 1], frame)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["add", "add", "add", "nonkey", "remove", "render", "reset"]),
            st.integers(0, 1 << 16),
        ),
        min_size=1,
        max_size=14,
    ),
    window=st.sampled_from([None, 2, 3]),
    pinned=st.integers(0, 2),
)
def test_random_operation_sequences(tiny_export, backend, ops, window, pinned):
    """Random add / non-keyframe add / remove / render / reset sequences against a
    plain-Python model of the policy and the PyTorch reference."""
    out_dir, model = tiny_export
    max_views = 5
    sc = Scene(model, n_views=len(ops) + 1)
    cached: list[tuple[int, int, bool]] = []  # (view id, scene index, pinned) in insertion order
    added, pending = 0, None  # pending: scene index of the non-keyframe view the next render uses
    with vrt.open(
        out_dir, max_views=max_views, window=window, pinned=pinned, frame=sc.frame, **backend
    ) as r:
        for step, (op, pick) in enumerate(ops):
            if op in ("add", "nonkey"):
                keyframe = op == "add"
                limit = max_views if window is None else pinned + window
                evictable = [c for c in cached if not c[2]]
                p = pending is not None
                if not keyframe:
                    refused = not p and len(cached) + 1 > max_views
                elif len(cached) < limit:
                    refused = len(cached) + 1 + p > max_views
                else:
                    refused = window is None or not evictable
                if refused:
                    before = r.info()
                    with pytest.raises(ViewrtError):
                        r.add_view(sc.images[step], sc.cams[step], keyframe=keyframe)
                    assert r.info() == before
                    continue
                vid = r.add_view(sc.images[step], sc.cams[step], keyframe=keyframe)
                if not keyframe:
                    pending = step  # a second non-keyframe replaces the first
                    continue
                if len(cached) >= limit:
                    cached.remove(evictable[0])
                cached.append((vid, step, added < pinned))
                added += 1
            elif op == "remove" and cached:
                victim = cached[pick % len(cached)]
                r.remove_view(victim[0])
                cached.remove(victim)
            elif op == "remove":
                with pytest.raises(ViewrtError):
                    r.remove_view(10**6)
            elif op == "reset":
                r.reset()
                cached, added, pending = [], 0, None
            elif cached or pending is not None:
                assert_parity(
                    r, sc, [c[1] for c in cached] + ([pending] if pending is not None else [])
                )
                pending = None
            assert sorted(r.info()["cached_ids"]) == sorted(c[0] for c in cached)


def _snapshot(r):
    return [r.backend.download(b) for b in r.cache.buffers]


def test_zero_copy_add_and_render(tiny_export, backend, monkeypatch):
    out_dir, model = tiny_export
    sc = Scene(model, n_views=4)
    with vrt.open(out_dir, max_views=4, frame=sc.frame, **backend) as r:
        buffers = list(r.cache.buffers)
        ptrs = [b.ptr for b in buffers]
        host_ptrs = [b.host.ctypes.data for b in buffers]
        copies = []
        monkeypatch.setattr(r.backend, "copy", lambda dst, src: copies.append((dst, src)))
        T = r.cache.T
        for i in range(3):
            before = _snapshot(r)
            r.add_view(sc.images[i], sc.cams[i])
            after = _snapshot(r)
            with torch.no_grad():
                view = input_view(sc.images[i], sc.frame.apply(sc.cams[i].c2w), sc.cams[i].fxfycxcy)
                kv = [
                    t[0].numpy()
                    for pair in model.encode_view(torch.from_numpy(view)[None])
                    for t in pair
                ]
            for b0, b1, want in zip(before, after, kv):
                slot = slice(i * T, (i + 1) * T)
                assert (
                    np.abs(b1[0, slot] - want).max() <= ATOL
                )  # the encoder's outputs are in the slot
                assert not np.array_equal(b0[0, slot], b1[0, slot])  # ... and they changed it
                rest = np.ones(b0.shape[1], bool)
                rest[slot] = False
                assert np.array_equal(b0[0, rest], b1[0, rest])  # nothing else was written
            r.render(sc.targets)
            assert _snapshot(r)[0].tobytes() == after[0].tobytes()  # render reads in place
        assert copies == []  # no copy on add or render
        assert [b.ptr for b in r.cache.buffers] == ptrs and [
            b.host.ctypes.data for b in r.cache.buffers
        ] == host_ptrs
        assert all(a is b for a, b in zip(r.cache.buffers, buffers))  # never reallocated
        m = r.manifest
        # capacity 4 plus the one free slot a new view is written to before it is committed
        assert (
            r.info()["bytes_reserved"]
            == m.n_layers * 2 * (4 + 1) * m.tokens_per_view * m.n_heads * m.head_dim * 4
        )


def test_remove_moves_one_view(tiny_export, backend):
    out_dir, model = tiny_export
    sc = Scene(model, n_views=4)
    with vrt.open(out_dir, max_views=4, frame=sc.frame, **backend) as r:
        ids = [r.add_view(sc.images[i], sc.cams[i]) for i in range(4)]
        before = _snapshot(r)
        calls = []
        real_copy = r.backend.copy
        r.backend.copy = lambda dst, src: (calls.append(src.shape), real_copy(dst, src))
        r.remove_view(ids[1])
        T = r.cache.T
        assert len(calls) == 2 * r.manifest.n_layers and all(s[1] == T for s in calls)
        after = _snapshot(r)
        for b0, b1 in zip(before, after):
            assert np.array_equal(b1[0, T : 2 * T], b0[0, 3 * T : 4 * T])
        assert_parity(r, sc, [0, 2, 3])


def test_fp16_export_runtime_close_to_fp32(tiny_export, tiny_export_fp16, backend):
    out32, model = tiny_export
    out16, _ = tiny_export_fp16
    sc = Scene(model, n_views=4)
    with (
        vrt.open(out32, frame=sc.frame, **backend) as a,
        vrt.open(out16, frame=sc.frame, **backend) as b,
    ):
        for i in range(4):
            a.add_view(sc.images[i], sc.cams[i])
            b.add_view(sc.images[i], sc.cams[i])
            x, y = a.render(sc.targets), b.render(sc.targets)
            assert np.abs(x - y).max() <= 1e-2
        assert b.info()["bytes_reserved"] * 2 == a.info()["bytes_reserved"]


# -- errors: clear message, nothing changed ------------------------------------------------------


def _bad_inputs(sc, size):
    good_img, cam = sc.images[0], sc.cams[0]
    nonrigid = cam.c2w.copy()
    nonrigid[:3, :3] *= 1.1
    nan_img = good_img.copy()
    nan_img[0, 0, 0] = np.nan
    return [
        ("wrong size", np.zeros((3, size + 8, size + 8), np.float32), cam, "shape"),
        ("uint8", (good_img * 255).astype(np.uint8), cam, "dtype"),
        ("range", good_img * 255, cam, "[0, 1]"),
        ("nan", nan_img, cam, "NaN"),
        ("non-rigid", good_img, (nonrigid, cam.fxfycxcy), "rigid"),
        ("focal", good_img, (cam.c2w, np.array([-1.0, 30, 16, 16])), "f"),
    ]


def test_bad_inputs_change_nothing(tiny_export, backend):
    out_dir, model = tiny_export
    sc = Scene(model, n_views=3)
    size = model.cfg.image_size
    with vrt.open(out_dir, max_views=2, frame=sc.frame, **backend) as r:
        r.add_view(sc.images[1], sc.cams[1])
        for what, image, cam, word in _bad_inputs(sc, size):
            before, bufs = r.info(), _snapshot(r)
            with pytest.raises(ViewrtError, match=None) as e:
                r.add_view(image, cam)
            assert word.lower() in str(e.value).lower(), (what, str(e.value))
            assert r.info() == before and all(
                np.array_equal(a, b) for a, b in zip(bufs, _snapshot(r))
            )
        with pytest.raises(ViewrtError, match="not in the cache"):
            r.remove_view(12345)
        r.add_view(sc.images[2], sc.cams[2])
        before, bufs = r.info(), _snapshot(r)
        with pytest.raises(ViewrtError, match="cache full"):
            r.add_view(sc.images[0], sc.cams[0])
        assert r.info() == before and all(np.array_equal(a, b) for a, b in zip(bufs, _snapshot(r)))


def test_open_errors(tiny_export, tmp_path, backend):
    out_dir, _ = tiny_export
    with pytest.raises(ViewrtError, match="no such folder"):
        vrt.open(tmp_path / "nope")
    with pytest.raises(ViewrtError, match="no manifest"):
        vrt.open(tmp_path)
    with pytest.raises(ViewrtError, match="unknown backend"):
        vrt.open(out_dir, backend="bogus")
    with pytest.raises(ViewrtError, match="max_views"):
        vrt.open(out_dir, max_views=100)
    with pytest.raises(ViewrtError, match="exceeds the cache capacity"):
        vrt.open(out_dir, max_views=4, window=4, pinned=1)
    with vrt.open(out_dir, **backend) as r, pytest.raises(ViewrtError, match="no views"):
        r.render([vrt.Camera(np.eye(4), [30.0, 30.0, 16.0, 16.0])])


def test_manifest_checksum_mismatch(tiny_export, tmp_path, backend):
    import shutil

    src, _ = tiny_export
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    data = bytearray((dst / "decoder.onnx").read_bytes())
    data[-1] ^= 0xFF
    (dst / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(ViewrtError, match="checksum"):
        vrt.open(dst, **backend)


def test_runtime_does_not_import_torch(tiny_export, backend):
    out_dir, _ = tiny_export
    code = textwrap.dedent(
        f"""
        import sys, numpy as np
        import viewrt.runtime as vrt
        from viewrt.data import synthetic_cameras
        c2ws, k = synthetic_cameras(3, 32, 0)
        with vrt.open({str(out_dir)!r}, **{backend!r}) as r:
            r.add_view(np.random.rand(3, 32, 32).astype(np.float32), vrt.Camera(c2ws[0], k))
            img = r.render([vrt.Camera(c2ws[2], k)])
        assert img.shape == (1, 3, 32, 32) and np.isfinite(img).all()
        bad = [m for m in ("torch", "viewrt.models", "viewrt.export", "onnx") if m in sys.modules]
        print("IMPORTED", bad)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "IMPORTED []" in out.stdout


def test_resident_memory_stable_over_1000_operations(tiny_export, backend):
    """1,000 add/remove/render operations: RSS grows < 5% after the first 50."""
    psutil = pytest.importorskip("psutil")
    out_dir, model = tiny_export
    sc = Scene(model, n_views=8, n_targets=2)
    proc = psutil.Process()
    rng = np.random.default_rng()
    with vrt.open(out_dir, max_views=6, window=4, pinned=1, frame=sc.frame, **backend) as r:
        ids = []
        for step in range(1000):
            op = rng.integers(3)
            if op == 0 or not ids:
                ids.append(r.add_view(sc.images[step % 8], sc.cams[step % 8]))
                ids = [i for i in ids if i in r.info()["slots"]]
            elif op == 1:
                r.remove_view(ids.pop(rng.integers(len(ids))))
            else:
                r.render(sc.targets)
            if step == 49:
                rss50 = proc.memory_info().rss
        rss = proc.memory_info().rss
    assert rss < rss50 * 1.05, f"RSS grew from {rss50 / 2**20:.1f} MiB to {rss / 2**20:.1f} MiB"


@pytest.mark.trt
@pytest.mark.gpu
def test_tensorrt_backend_matches_onnxruntime(tiny_export, tmp_path):
    """Build tiny engines and run the same sequence on TensorRT and ONNX Runtime."""
    import shutil

    from viewrt.export.engines import build_engines

    src, model = tiny_export
    dst = tmp_path / "trt"
    shutil.copytree(src, dst)
    build_engines(dst, None, None, 4)
    sc = Scene(model, n_views=4)
    with vrt.open(dst, backend="trt", frame=sc.frame) as t, vrt.open(dst, frame=sc.frame) as o:
        ids = []
        for i in range(4):
            ids.append(t.add_view(sc.images[i], sc.cams[i]))
            o.add_view(sc.images[i], sc.cams[i])
            assert np.abs(t.render(sc.targets) - o.render(sc.targets)).max() <= 1e-3
        t.remove_view(ids[1])
        o.remove_view(ids[1])
        assert np.abs(t.render(sc.targets) - o.render(sc.targets)).max() <= 1e-3


def test_targets_per_call_gives_the_same_images(tiny_export, backend):
    out_dir, model = tiny_export
    sc = Scene(model, n_views=3, n_targets=5)
    with (
        vrt.open(out_dir, frame=sc.frame, **backend) as a,
        vrt.open(out_dir, frame=sc.frame, targets_per_call=2, **backend) as b,
    ):
        for i in range(3):
            a.add_view(sc.images[i], sc.cams[i])
            b.add_view(sc.images[i], sc.cams[i])
        x = a.render(sc.targets)
        assert np.abs(x - b.render(sc.targets)).max() <= 1e-5
        assert np.abs(x - sc.reference([0, 1, 2])).max() <= ATOL
    with pytest.raises(ViewrtError, match="targets_per_call"):
        vrt.open(out_dir, targets_per_call=0)


def test_attention_budget_bounds_targets_per_call(tiny_export):
    """ONNX Runtime's plain decoder materializes attention: the budget splits targets across
    calls. (Its fused MultiHeadAttention variant, the default on the CPU, needs no split.)"""
    out_dir, model = tiny_export
    sc = Scene(model, n_views=4, n_targets=3)
    m = vrt.load_manifest(out_dir)
    per_target_view = 2 * m.tokens_per_view**2 * m.n_heads * 4  # bytes per target per cached view
    budget_mib = 2.5 * per_target_view / 2**20  # room for 2 targets at 1 view, 1 target at 2+ views
    with vrt.open(out_dir, "ort", frame=sc.frame, attention_budget_mib=budget_mib) as r:
        assert r._targets_per_call(4) == m.max_targets  # fused: all at once whatever the budget
    with vrt.open(out_dir, "ort-plain", frame=sc.frame, attention_budget_mib=budget_mib) as r:
        assert (
            r._targets_per_call(1) == 2
            and r._targets_per_call(2) == 1
            and r._targets_per_call(4) == 1
        )
        for i in range(4):
            r.add_view(sc.images[i], sc.cams[i])
        assert_parity(r, sc, [0, 1, 2, 3])
    with vrt.open(out_dir, "ort-plain") as r:
        assert r._targets_per_call(4) == m.max_targets  # the default budget holds all 8 here


def test_tensorrt_ep_options_from_the_manifest(tiny_export):
    """The TensorRT execution provider gets one profile spanning the manifest's dynamic
    axes and caches next to the export (the session itself needs a GPU)."""
    from viewrt.runtime.backends.ort import OrtBackend

    out_dir, _ = tiny_export
    m = vrt.load_manifest(out_dir)
    be = OrtBackend(m, "tensorrt:0")
    dec = be._provider_options("TensorrtExecutionProvider", "decoder")
    T, H, Dh, S = m.tokens_per_view, m.n_heads, m.head_dim, m.image_size
    assert f"past_key.0:1x{T}x{H}x{Dh}" in dec["trt_profile_min_shapes"].split(",")
    assert f"past_value.1:1x{m.max_views * T}x{H}x{Dh}" in dec["trt_profile_max_shapes"].split(",")
    assert f"target_rays:1x{m.max_targets}x6x{S}x{S}" in dec["trt_profile_max_shapes"].split(",")
    assert dec["trt_engine_cache_enable"] and str(out_dir) in dec["trt_engine_cache_path"]
    enc = be._provider_options("TensorrtExecutionProvider", "encoder")
    assert "trt_profile_min_shapes" not in enc  # static shapes
    assert (
        not be.materializes_attention
        and OrtBackend(m, "cpu", fused_attention=False).materializes_attention
    )
    assert not OrtBackend(
        m, "cpu"
    ).materializes_attention  # the fused MultiHeadAttention decoder variant
    assert be._provider_options("CUDAExecutionProvider", "decoder") == {"device_id": 0}
