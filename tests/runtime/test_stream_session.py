"""The streaming runtime (runtime/stream_session.py) on every tested backend: at every frame
of scripted and hypothesis-random sequences (window eviction, scale frames, non-keyframes,
rollback, reset, longer than the window), its predictions equal the PyTorch streaming
reference (the model's own cache) and batch causal PyTorch (the window mask) within
1e-4 max abs; depth and confidence, exponentials, within 1e-4 x max(1, |reference|)
elementwise. Positions are absolute after eviction; bad input is refused in one line with
the session unchanged."""

from __future__ import annotations

import shutil
import types

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import viewrt.runtime as vrt
from viewrt.errors import ViewrtError

ATOL = 1e-4
KEYS = ("pose_enc", "depth", "depth_conf")


def _frames(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 3, size, size)).astype(np.float32)


def _close(pred, ref: dict, what: str) -> None:
    for k in KEYS:
        want = ref[k].detach().numpy() if isinstance(ref[k], torch.Tensor) else ref[k]
        got = getattr(pred, k)
        assert np.abs(want).max() > 0, k
        scale = np.maximum(1.0, np.abs(want)) if k != "pose_enc" else 1.0
        err = float((np.abs(got - want) / scale).max())
        assert err <= ATOL, f"{what}: {k} error {err:.3g} at position {pred.position}"


class Truth:
    """Batch causal PyTorch over the committed keyframes, and the model's own streaming
    cache beside the session (replayed after a rollback, which the reference lacks)."""

    def __init__(self, model, window, pinned):
        self.model, self.window, self.pinned = model, window, pinned
        self.kept: list[np.ndarray] = []
        self.state = model.new_stream(window, pinned)

    def batch(self, frames: list) -> dict:
        x = torch.from_numpy(np.stack(frames))
        return self.model.forward_batch(x, self.window, self.pinned)

    def prefill(self, frames, preds) -> None:
        ref = self.model.stream_prefill(self.state, torch.from_numpy(frames))
        batch = self.batch(list(frames))
        for i, p in enumerate(preds):
            assert p.position == i and p.keyframe
            _close(p, {k: ref[k][i] for k in KEYS}, "stream reference")
            _close(p, {k: batch[k][i] for k in KEYS}, "batch")
        self.kept = list(frames)

    def step(self, frame, keyframe, pred) -> None:
        assert pred.position == len(self.kept) and pred.keyframe == keyframe
        ref = self.model.stream_step(self.state, torch.from_numpy(frame), keyframe)
        _close(pred, ref, "stream reference")
        batch = self.batch(self.kept + [frame])
        _close(pred, {k: batch[k][-1] for k in KEYS}, "batch")
        if keyframe:
            self.kept.append(frame)

    def rollback(self) -> None:
        self.kept.pop()
        self.state = self.model.new_stream(self.window, self.pinned)
        self.model.stream_prefill(self.state, torch.from_numpy(np.stack(self.kept[: self.pinned])))
        for f in self.kept[self.pinned :]:
            self.model.stream_step(self.state, torch.from_numpy(f))


def test_scripted_stream_matches_pytorch(stream_export, backend, one_torch_thread):
    out_dir, model = stream_export
    S = model.cfg.image_size
    frames = _frames(14, S, 0)
    with vrt.open(out_dir, window=3, **backend) as sess:
        assert sess.pinned == 2 and sess.info()["memory"] == "token-window"
        truth = Truth(model, 3, 2)
        truth.prefill(frames[:2], sess.prefill(frames[:2]))
        keys = [True] * 14
        keys[4] = keys[9] = False
        for i in range(2, 10):
            truth.step(frames[i], keys[i], sess.add_frame(frames[i], keyframe=keys[i]))
        info = sess.info()
        assert info["frames_cached"] == [0, 1, 6, 7] or sorted(info["frames_cached"]) == [
            0,
            1,
            6,
            7,
        ]
        assert info["retained_positions"] == [2, 3, 4, 5] and info["frames_seen"] == 10
        newest = info["next_position"] - 1
        sess.remove(newest)  # roll back the newest: the frame it evicted comes back in full
        truth.rollback()
        assert sorted(sess.info()["frames_cached"]) == [0, 1, 5, 6]
        for i in range(10, 14):  # longer than the window again
            truth.step(frames[i], True, sess.add_frame(frames[i]))
        sess.reset()  # a new stream from position 0
        truth = Truth(model, 3, 2)
        truth.prefill(frames[5:7], sess.prefill(frames[5:7]))
        truth.step(frames[0], True, sess.add_frame(frames[0]))


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("key"), st.integers(0, 2**16)),
        st.tuples(st.just("non"), st.integers(0, 2**16)),
        st.tuples(st.just("rollback"), st.integers(0, 2)),
        st.tuples(st.just("reset"), st.integers(0, 2**16)),
    ),
    min_size=1,
    max_size=10,
)


_SESSIONS: dict = {}  # (backend, window, pinned) -> an open session, reset per example


@pytest.fixture(scope="module", autouse=True)
def _close_sessions():
    yield
    for sess in _SESSIONS.values():
        sess.close()
    _SESSIONS.clear()


def _session(out_dir, backend, window, pinned):
    """One session per configuration for the whole module (compiling graphs is the slow
    part on OpenVINO), reset: each example starts a new stream on it."""
    key = (str(out_dir), tuple(sorted(backend.items())), window, pinned)
    if key not in _SESSIONS:
        _SESSIONS[key] = vrt.open(out_dir, window=window, pinned=pinned, **backend)
    sess = _SESSIONS[key]
    sess.reset()
    return sess


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(window=st.integers(2, 4), pinned=st.integers(1, 2), ops=OPS, seed=st.integers(0, 2**16))
def test_random_streams_match_pytorch(
    stream_export, backend, one_torch_thread, window, pinned, ops, seed
):
    out_dir, model = stream_export
    S = model.cfg.image_size
    sess = _session(out_dir, backend, window, pinned)
    truth = Truth(model, window, pinned)
    start = _frames(pinned, S, seed)
    truth.prefill(start, sess.prefill(start))
    can_rollback = False
    for op, arg in ops:
        if op in ("key", "non"):
            f = _frames(1, S, arg)[0]
            truth.step(f, op == "key", sess.add_frame(f, keyframe=op == "key"))
            can_rollback = can_rollback if op == "non" else True
        elif op == "rollback":
            position = sess.info()["next_position"] - 1 - arg
            if arg == 0 and can_rollback:
                sess.remove(position)
                truth.rollback()
                can_rollback = False
            else:
                before = sess.info()
                with pytest.raises(ViewrtError, match="cannot remove frame"):
                    sess.remove(position)
                assert sess.info() == before
        else:
            sess.reset()
            truth = Truth(model, window, pinned)
            start = _frames(pinned, S, arg)
            truth.prefill(start, sess.prefill(start))
            can_rollback = False
    assert sess.info()["next_position"] == len(truth.kept)


def test_positions_are_absolute_after_eviction(stream_export, backend, one_torch_thread):
    """After 4 evictions, frame 9 is cached at slot 3 of 4 but keeps position 9: the
    runtime matches PyTorch at position 9, and PyTorch at the slot's index (what a runtime
    that shifted positions after eviction would compute) is far from it."""
    out_dir, model = stream_export
    frames = _frames(10, model.cfg.image_size, 7)
    with vrt.open(out_dir, window=3, **backend) as sess:
        sess.prefill(frames[:2])
        state = model.new_stream(3, 2)
        model.stream_prefill(state, torch.from_numpy(frames[:2]))
        for i in range(2, 9):
            sess.add_frame(frames[i])
            model.stream_step(state, torch.from_numpy(frames[i]))
        assert len(sess.info()["frames_cached"]) == 4 and sess.info()["next_position"] == 9
        pred = sess.add_frame(frames[9])
        assert pred.position == 9
        past, one, x = state.past(9), torch.ones(1), torch.from_numpy(frames[9:10])
        with torch.no_grad():
            right = model.run(x, one * 9, one * 0, one * 0, past)
            shifted = model.run(x, one * 4, one * 0, one * 0, past)
        _close(pred, {k: right[k][0] for k in KEYS}, "absolute position")
        assert np.abs(pred.pose_enc - shifted["pose_enc"][0].numpy()).max() > 100 * ATOL


def _refused(sess, call, match: str) -> None:
    before = sess.info()
    with pytest.raises(ViewrtError, match=match) as e:
        call()
    assert "\n" not in str(e.value) and sess.info() == before


def test_bad_input_is_refused_and_changes_nothing(stream_export, backend, one_torch_thread):
    out_dir, model = stream_export
    S = model.cfg.image_size
    frames = _frames(5, S, 3)
    with vrt.open(out_dir, window=2, **backend) as sess:
        truth = Truth(model, 2, 2)
        _refused(sess, lambda: sess.add_frame(frames[0]), "prefill")
        _refused(sess, lambda: sess.prefill(frames[:3]), r"shape \(3, 3, 28, 28\)")
        truth.prefill(frames[:2], sess.prefill(frames[:2]))
        _refused(sess, lambda: sess.prefill(frames[:2]), "reset")
        _refused(sess, lambda: sess.add_frame(frames[2][:, :14]), "shape")
        _refused(sess, lambda: sess.add_frame(frames[2].astype(np.float64)), "dtype float64")
        bad = frames[2].copy()
        bad[0, 0, 0] = np.nan
        _refused(sess, lambda: sess.add_frame(bad), "NaN")
        _refused(sess, lambda: sess.add_frame(frames[2] * 255), r"outside \[0, 1\]")
        _refused(sess, lambda: sess.add_frame(frames[2], keyframe="yes"), "keyframe")
        _refused(sess, lambda: sess.remove(0), "scale frames are pinned")
        truth.step(frames[2], True, sess.add_frame(frames[2]))
        truth.step(frames[3], True, sess.add_frame(frames[3]))
        _refused(sess, lambda: sess.remove(2), "later frames were computed from it")
        _refused(sess, lambda: sess.remove(7), "not the newest")
        truth.step(frames[4], True, sess.add_frame(frames[4]))  # nothing changed above
    with pytest.raises(ViewrtError, match="takes no max_views"):
        vrt.open(out_dir, max_views=4, **backend)
    with pytest.raises(ViewrtError, match=r"window must be an integer in 1\.\.5"):
        vrt.open(out_dir, window=6, **backend)
    with pytest.raises(ViewrtError, match=r"pinned must be an integer in 1\.\.2"):
        vrt.open(out_dir, pinned=3, **backend)


def test_full_cache_and_position_limit(stream_export, backend):
    out_dir, model = stream_export
    S, M = model.cfg.image_size, model.cfg.max_frame_num
    frames = _frames(3, S, 4)
    with vrt.open(out_dir, window=1, **backend) as sess:  # only the current frame: no room
        sess.prefill(frames[:2])
        _refused(sess, lambda: sess.add_frame(frames[2]), "cache full")
        sess.add_frame(frames[2], keyframe=False)  # a non-keyframe needs no eviction
    with vrt.open(out_dir, window=2, **backend) as sess:
        sess.prefill(frames[:2])
        for _ in range(M - 2):
            sess.add_frame(frames[2])
        assert sess.info()["next_position"] == M
        _refused(sess, lambda: sess.add_frame(frames[2]), f"beyond the model's {M} positions")
        sess.reset()
        assert sess.info()["next_position"] == 0 and sess.info()["frames_cached"] == []


def test_info_says_memory_and_weights(stream_export):
    out_dir, _ = stream_export
    with vrt.open(out_dir) as sess:
        info = sess.info()
        assert info["memory"] == "token-window" and info["weights"] == "untrained"
        assert info["window"] == 5 and info["pinned"] == 2  # the export's 6 full frames
        assert sess.manifest.extra["weights"] == "untrained"
    with pytest.raises(ViewrtError, match="closed"):
        sess.add_frame(_frames(1, 28, 0)[0])


def test_wrong_memory_kind_is_refused(stream_export, tiny_export):
    from viewrt.contract.manifest import load_manifest
    from viewrt.runtime.backends import create
    from viewrt.runtime.renderer import Renderer
    from viewrt.runtime.stream_session import StreamSession

    stream, views = load_manifest(stream_export[0]), load_manifest(tiny_export[0])
    with pytest.raises(ViewrtError, match="a StreamSession runs token-window families"):
        StreamSession(views, create("ort", views))
    with pytest.raises(ViewrtError, match="a Renderer runs view-slot models"):
        Renderer(stream, create("ort", stream))


class _AlignedHostMemory:
    """Stands in for CudaMemory under the fake TensorRT: host arrays at 256-byte aligned
    addresses, uploads copied into the staging buffers (as to a device), a stream handle."""

    stream = types.SimpleNamespace(handle=0)

    def alloc(self, shape, dtype):
        from viewrt.runtime.backends.base import Buffer

        dtype = np.dtype(dtype)
        n = int(np.prod(shape)) * dtype.itemsize
        raw = np.zeros(n + 256, np.uint8)
        off = -raw.ctypes.data % 256
        arr = raw[off : off + n].view(dtype).reshape(shape)
        return Buffer(arr.ctypes.data, tuple(shape), dtype, "cuda:0", host=arr, owner=raw)

    def copy(self, dst, src):
        np.copyto(dst.host, src.host)

    def upload(self, array, staging=None):
        buf = (
            staging.view(array.shape)
            if staging is not None
            else self.alloc(array.shape, array.dtype)
        )
        np.copyto(buf.host, array)
        return buf

    def download(self, buf):
        return buf.host.copy()

    def synchronize(self):
        pass

    def close(self):
        pass


def test_tensorrt_binding_through_the_fake(stream_export, tmp_path, monkeypatch):
    """The same session code on the TensorRT backend, checked by the fake TensorRT (names,
    shapes within the built profiles, 256-byte alignment of every binding); the fake
    computes nothing, so no number is compared here (the real one: a gpu+trt test)."""
    import fake_tensorrt

    from viewrt import devices
    from viewrt.contract.manifest import load_manifest
    from viewrt.export.engines import build_engines
    from viewrt.runtime.backends.trt import TrtBackend
    from viewrt.runtime.stream_session import StreamSession

    devices.reset()
    trt = fake_tensorrt.install(monkeypatch, "10.3")
    dst = tmp_path / "stream"
    shutil.copytree(stream_export[0], dst)
    build_engines(dst)
    be = TrtBackend(load_manifest(dst))
    be._load_engines(trt)
    be.memory, be.active = _AlignedHostMemory(), True
    frames = _frames(5, stream_export[1].cfg.image_size, 0)
    with StreamSession(be.manifest, be, window=3) as sess:
        assert len(sess.prefill(frames[:2])) == 2
        for f in frames[2:]:
            sess.add_frame(f)
        sess.add_frame(frames[0], keyframe=False)
        info = sess.info()
        assert info["next_position"] == 5 and info["backend"] == "trt"
        assert info["retained_positions"] == [2]
    devices.reset()
