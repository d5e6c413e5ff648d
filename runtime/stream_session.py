"""The frame-by-frame streaming session of a token-window family (gct-stream): prefill the
scale frames, add frames one at a time, get each frame's camera pose and depth.

Memory (runtime/kv/): the token window (:class:`~viewrt.runtime.kv.token_window.TokenWindow`)
keeps the global layers' K/V of the pinned (scale) frames and of the last ``window - 1``
frames (the current frame makes ``window``), and the special tokens of every evicted
frame; a second, append-only region (:class:`~viewrt.runtime.kv.storage.KVStorage`, roles
``camera_present`` / ``camera_past``) keeps the camera head's one token per committed
frame, never evicted. Every graph output is written in place into its cache slot and every
cached input is read in place (zero copy), on ONNX Runtime, OpenVINO and TensorRT alike.

Rules (upstream's, ../shared/reference/gct-stream.md): a frame at absolute position ``t``
attends in full to the pinned frames and the window, and to the special tokens of the
frames evicted before it; positions never change (rotary embeddings are applied before
caching). A non-keyframe attends like a keyframe and is then rolled back (it advances
``frames_seen`` only). Only the newest frame can be removed (later frames were computed
from any other); ``reset()`` starts a new stream.

Errors a caller can make (a frame of the wrong size, dtype or range, NaN, a position at
the model's ``max_positions``, a full cache with no evictable frame, a frame before the
prefill) raise one-line ViewrtErrors and leave the session exactly as it was. Calls are
serialized by a lock.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np

import viewrt.contract.names as N
from viewrt.contract.family import TOKEN_WINDOW
from viewrt.contract.manifest import Manifest
from viewrt.errors import ViewrtError
from viewrt.runtime.backends.base import Backend, Buffer, Timer
from viewrt.runtime.kv.storage import KVStorage
from viewrt.runtime.kv.token_window import TokenWindow

PREFILL, STEP, CAMERA = "prefill", "step", "camera"
PREDICTIONS = (N.POSE_ENC, N.DEPTH, N.DEPTH_CONF)


@dataclass
class FramePrediction:
    """One frame's outputs.

    Attributes:
        position: its absolute frame index (a non-keyframe: the index it was run at).
        frames_seen: frames run since the last reset, this one included.
        keyframe: whether it was cached.
        pose_enc: float32 ``[9]``: translation 3, quaternion (x, y, z, w) 4, FoV 2 (radians).
        depth: float32 ``[S, S]`` (exp). depth_conf: float32 ``[S, S]`` (1 + exp).
    """

    position: int
    frames_seen: int
    keyframe: bool
    pose_enc: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray


def _locked(fn):
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            if self._closed and fn.__name__ != "info":
                raise ViewrtError(f"{fn.__name__}: the session is closed (open the export again)")
            return fn(self, *args, **kwargs)

    return wrapper


def _count(name: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise ViewrtError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")
    return int(v)


class StreamSession:
    """Streaming inference of a token-window export over preallocated caches.

    Use :func:`viewrt.runtime.open` to make one. Args: ``manifest``, ``backend``;
    ``window``: frames attended in full besides the pinned ones, the current one included
    (default: as many as the export's cache holds); ``pinned``: the scale frames, processed
    together by :meth:`prefill` and never evicted (default: the export's ``scale_frames``).
    Attributes: ``manifest``, ``backend``, ``window``, ``pinned``, ``last_timings``.
    Raises: ViewrtError for a manifest of another memory kind or a window/pinned out of range.
    """

    options = ("window", "pinned")  # what viewrt.runtime.open passes to it

    def __init__(
        self, manifest: Manifest, backend: Backend, window: int | None = None, pinned=None
    ):
        if manifest.memory != TOKEN_WINDOW or set(manifest.graphs) != {PREFILL, STEP}:
            raise ViewrtError(
                f"{manifest.dir}: a StreamSession runs token-window families with prefill and "
                f"step graphs; family {manifest.family!r} keeps its K/V as {manifest.memory!r}"
            )
        h = manifest.header
        pinned = _count(
            "pinned", h["scale_frames"] if pinned is None else pinned, 1, h["scale_frames"]
        )
        room = min(h["max_frames"], backend.capacity) - pinned + 1
        window = _count("window", room if window is None else window, 1, max(1, room))
        self.manifest, self.backend = manifest, backend
        self.window, self.pinned = window, pinned
        self.size, self.T = h["image_size"], h["tokens_per_frame"]
        self.last_timings: dict[str, float] = {}
        self._lock, self._closed = threading.RLock(), False
        backend.__enter__()
        try:
            self._allocate()
        except BaseException:
            backend.__exit__(None, None, None)
            raise

    def _allocate(self) -> None:
        m, be, S = self.manifest, self.backend, self.size
        self.memory = TokenWindow(be, m, self.window - 1, self.pinned)
        side = m.contract.side_caches(m.header)[CAMERA]
        names = [t.name for t in m.tensors(STEP, "outputs") if t.name.startswith("camera_present")]
        self.camera = KVStorage(be, m, side.capacity, 1, role="camera_past", names=names)
        self._preds = {  # graph -> prediction output buffers, allocated once
            g: {
                N.POSE_ENC: be.alloc((n, 9), np.float32),
                N.DEPTH: be.alloc((n, S, S), np.float32),
                N.DEPTH_CONF: be.alloc((n, S, S), np.float32),
            }
            for g, n in ((PREFILL, self.pinned), (STEP, 1))
        }
        host = be.device == "cpu"  # the CPU binds the caller's arrays; a GPU stages them
        self._stage = {
            n: None if host else be.alloc(shape, dt)
            for n, shape, dt in (
                (N.FRAMES, (self.pinned, 3, S, S), np.float32),
                (N.FRAME, (1, 3, S, S), np.float32),
                (N.POSITION, (1,), np.int64),
                (N.IS_FIRST, (1,), np.float32),
                (N.IS_SCALE, (1,), np.float32),
                (N.RETAINED_FRAMES, (1,), np.int64),
            )
        }

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self.backend.__exit__(None, None, None)
            self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- checks (no state touched) ----------------------------------------------------------
    def _check_frames(self, images, n: int | None) -> np.ndarray:
        """float32 ``[n, 3, S, S]`` (n None: one ``[3, S, S]`` frame) in [0, 1], finite."""
        S = self.size
        want = (3, S, S) if n is None else (n, 3, S, S)
        what = "image" if n is None else "images"
        if not isinstance(images, np.ndarray):
            raise ViewrtError(
                f"{what}: expected a float32 array {want}, got {type(images).__name__}"
            )
        if images.shape != want:
            raise ViewrtError(f"{what}: got shape {images.shape}, expected {want}")
        if images.dtype != np.float32:
            raise ViewrtError(f"{what}: got dtype {images.dtype}, expected float32 in [0, 1]")
        if not np.isfinite(images).all():
            raise ViewrtError(f"{what}: contains NaN or inf")
        if images.min() < 0 or images.max() > 1:
            raise ViewrtError(f"{what}: values outside [0, 1] (RGB float32 in [0, 1] expected)")
        return np.ascontiguousarray(images).reshape((-1, 3, S, S))

    def _upload(self, name: str, array: np.ndarray) -> Buffer:
        return self.backend.upload(np.ascontiguousarray(array), self._stage[name])

    def _predictions(self, graph: str) -> dict[str, np.ndarray]:
        out = {k: self.backend.download(b) for k, b in self._preds[graph].items()}
        for k, a in out.items():
            if not np.isfinite(a).all():
                raise ViewrtError(
                    f"{graph}: the graph produced non-finite {k} (beyond float32: untrained "
                    "weights or inputs far from training); nothing was cached"
                )
        return out

    # -- public API -------------------------------------------------------------------------
    @_locked
    def prefill(self, images) -> list[FramePrediction]:
        """Start the stream with the ``pinned`` scale frames, processed together
        (bidirectional among themselves) and pinned for the whole stream.

        Args: images float32 ``[pinned, 3, S, S]`` RGB in [0, 1].
        Returns: one FramePrediction per frame (positions 0..pinned-1).
        Raises: ViewrtError for bad images or a stream that has frames (reset first).
        """
        t = Timer(self.backend)
        if len(self.memory) or self.memory.policy.frames_seen:
            raise ViewrtError("prefill starts a stream: this one has frames; reset() first")
        frames = self._check_frames(images, self.pinned)
        F, m = self.pinned, self.manifest
        H, Dh = m.header["n_heads"], m.header["head_dim"]
        t.lap("preprocess")
        staged = self._upload(N.FRAMES, frames)
        t.lap("h2d")
        outputs = {
            **self.memory.full.range_outputs(0, F, (F, self.T, H, Dh)),
            **self.camera.range_outputs(0, F, (F, 1, H, Dh)),
            **self._preds[PREFILL],
        }
        self.backend.run(PREFILL, {N.FRAMES: staged}, outputs)
        t.lap("prefill", sync=True)
        preds = self._predictions(PREFILL)
        for i in range(F):  # the graph wrote slots 0..F-1: commit them in order
            plan = self.memory.plan_append()
            if plan.slot != i or plan.evict is not None:
                raise RuntimeError("a prefill fills the first slots of an empty window")
            self.memory.commit(plan)
        t.lap("cache")
        self.last_timings = t.result()
        seen = self.memory.policy.frames_seen
        return [
            FramePrediction(i, seen - F + i + 1, True, *(preds[k][i] for k in PREDICTIONS))
            for i in range(F)
        ]

    @_locked
    def add_frame(self, image, keyframe: bool = True) -> FramePrediction:
        """Run one frame at the next absolute position against the cache.

        Args:
            image: float32 ``[3, S, S]`` RGB in [0, 1].
            keyframe: True: cache it (evicting the oldest unpinned frame from the window;
                its special tokens stay); False: attend, then roll back.
        Returns: its FramePrediction.
        Raises: ViewrtError for a bad image, before :meth:`prefill`, at the model's
            position limit, or a full cache with no evictable frame (window 1); nothing changes.
        """
        if not isinstance(keyframe, (bool, np.bool_)):
            raise ViewrtError(f"keyframe must be True or False, got {keyframe!r}")
        t = Timer(self.backend)
        frame = self._check_frames(image, None)
        if self.memory.policy.next_position < self.pinned:
            raise ViewrtError(
                f"the first {self.pinned} frames go in together: call prefill(images "
                f"[{self.pinned}, 3, {self.size}, {self.size}]) first"
            )
        plan = self.memory.plan_append(bool(keyframe))  # refuses; changes nothing
        pos, kept = plan.frame.position, len(self.memory.table.retained)
        t.lap("preprocess")
        scalars = {
            N.FRAME: frame,
            N.POSITION: np.array([pos], np.int64),
            N.IS_FIRST: np.array([pos == 0], np.float32),
            N.IS_SCALE: np.array([pos < self.pinned], np.float32),
            N.RETAINED_FRAMES: np.array([kept], np.int64),
        }
        inputs = {n: self._upload(n, a) for n, a in scalars.items()}
        t.lap("h2d")
        inputs.update(self.memory.read_inputs(min_retained=1))  # in place; unused slot masked
        inputs.update(self.camera.prefix_inputs(pos))
        outputs = {
            **self.memory.slot_outputs(plan),
            **self.camera.slot_outputs(pos),
            **self._preds[STEP],
        }
        self.backend.run(STEP, inputs, outputs)
        t.lap("step", sync=True)
        preds = self._predictions(STEP)
        self.memory.commit(plan)  # a keyframe is kept (one slot copy per eviction)
        t.lap("cache")
        self.last_timings = t.result()
        seen = self.memory.policy.frames_seen
        return FramePrediction(pos, seen, bool(keyframe), *(preds[k][0] for k in PREDICTIONS))

    @_locked
    def remove(self, position: int) -> None:
        """Roll back the newest cached frame (what its add evicted comes back).

        Raises: ViewrtError for any other frame (later frames were computed from it), a
            second rollback, or a non-integer.
        """
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
            raise ViewrtError(f"position must be an integer, got {position!r}")
        if 0 <= int(position) < self.pinned:
            raise ViewrtError(
                f"cannot remove frame {position}: the scale frames are pinned; reset() instead"
            )
        self.memory.remove(int(position))

    @_locked
    def reset(self) -> None:
        """Forget every frame; positions restart at 0 (buffers are kept)."""
        self.memory.clear()

    @_locked
    def info(self) -> dict:
        """Memory kind, frames cached (positions), pinned, retained, both counters, bytes,
        the window rule, what the weights are, and the backend."""
        mem = self.memory.info()
        side = self.manifest.contract.side_caches(self.manifest.header)[CAMERA]
        itemsize = self.manifest.np_kv_dtype.itemsize
        n = len(self.memory)
        return {
            "family": self.manifest.family,
            "memory": TOKEN_WINDOW,
            "frames_cached": mem["frames_cached"],
            "pinned_positions": mem["pinned_positions"],
            "retained_positions": mem["retained_positions"],
            "next_position": mem["next_position"],
            "frames_seen": mem["frames_seen"],
            "window": self.window,
            "pinned": self.pinned,
            "max_positions": self.memory.geo.max_positions,
            "bytes_per_frame": self.manifest.kv_bytes_per_entry,
            "bytes_used": n * self.manifest.kv_bytes_per_entry
            + len(mem["retained_positions"])
            * self.memory.retain
            * self.memory.geo.n_layers
            * 2
            * self.memory.geo.n_heads
            * self.memory.geo.head_dim
            * itemsize
            + mem["next_position"] * side.bytes_per_entry(itemsize),
            "bytes_reserved": self.memory.reserved_bytes + self.camera.reserved_bytes,
            "weights": self.manifest.extra.get("weights", "see the manifest's checkpoint"),
            **self.backend.info(),
        }

    @property
    def frames_seen(self) -> int:
        return self.memory.policy.frames_seen
