"""The view-by-view renderer: add a view, remove a view, render target views.

It owns the KV cache storage (cache.py) and asks the cache policy (policy.py) where each
view goes: a sliding ``window`` with ``pinned`` views, and non-keyframe views that take
part in the next render only. See policy.py for the rules.

Cameras are OpenCV c2w + fxfycxcy in pixels (the dataset's convention). The scene
normalization frame is fixed before the first view is encoded, since every cached K/V
depends on it: given by the caller (a NormalizationFrame, or cameras to compute it from),
or else computed from the first added view (scale 1: one camera has no extent). ``info()``
says which.

Errors a caller can make (image of the wrong size/dtype/range, NaN, a non-rigid camera, a
non-positive focal, an unknown view id, a full cache, a camera whose encoding overflows the
cache dtype) raise ViewrtError and leave the cache exactly as it was. A renderer is safe to
call from several threads: its calls are serialized by a lock.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Sequence

import numpy as np

import viewrt.contract.names as N
from viewrt.contract.family import VIEW_SLOTS
from viewrt.contract.manifest import Manifest
from viewrt.contract.memory import targets_within
from viewrt.errors import ViewrtError
from viewrt.geometry import Camera, NormalizationFrame, input_view, plucker
from viewrt.runtime.backends.base import Backend, Timer
from viewrt.runtime.kv.view_slots import CachePolicy, ViewSlots


def _as_camera(camera, what: str) -> Camera:
    if isinstance(camera, Camera):
        return camera
    if isinstance(camera, dict) and {"c2w", "fxfycxcy"} <= set(camera):
        return Camera(camera["c2w"], camera["fxfycxcy"])
    if isinstance(camera, (tuple, list)) and len(camera) == 2:
        return Camera(*camera)
    raise ViewrtError(
        f"{what}: expected a Camera, a (c2w, fxfycxcy) pair or a dict with c2w and fxfycxcy, got {type(camera).__name__}"
    )


def _frame_c2w(item) -> np.ndarray:
    """The c2w of one item of a frame's cameras: a Camera, a (c2w, fxfycxcy) pair, a dict
    with c2w and fxfycxcy, or a 4x4 c2w matrix."""
    if isinstance(item, (Camera, dict, tuple)) or (
        isinstance(item, list) and len(item) == 2 and np.ndim(item[0]) == 2
    ):
        return _as_camera(item, "frame camera").c2w
    return np.asarray(item)


def _locked(fn):
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            if self._closed and fn.__name__ != "info":
                raise ViewrtError(f"{fn.__name__}: the renderer is closed (open the export again)")
            return fn(self, *args, **kwargs)

    return wrapper


class Renderer:
    """View-by-view Efficient-LVSM inference over a preallocated KV cache.

    Use :func:`open` to make one. Attributes: ``manifest``, ``backend``, ``max_views``
    (capacity: the smallest of the argument, the manifest's and the backend's), ``window``,
    ``pinned``, ``frame`` (None until fixed), ``last_timings`` (ms per component of the
    last call).
    """

    # what viewrt.runtime.open passes to it
    options = ("max_views", "window", "pinned", "frame", "targets_per_call", "attention_budget_mib")

    def __init__(
        self,
        manifest: Manifest,
        backend: Backend,
        max_views: int | None = None,
        window: int | None = None,
        pinned: int = 0,
        frame: NormalizationFrame | Iterable | None = None,
        targets_per_call: int | None = None,
        attention_budget_mib: float = 256.0,
    ):
        for name, v in (
            ("max_views", max_views),
            ("window", window),
            ("targets_per_call", targets_per_call),
        ):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise ViewrtError(
                    f"{name} must be an integer or None, got {type(v).__name__} {v!r}"
                )
        if isinstance(pinned, bool) or not isinstance(pinned, (int, np.integer)):
            raise ViewrtError(f"pinned must be an integer, got {type(pinned).__name__} {pinned!r}")
        if (
            isinstance(attention_budget_mib, bool)
            or not isinstance(attention_budget_mib, (int, float))
            or not attention_budget_mib > 0
        ):
            raise ViewrtError(
                f"attention_budget_mib must be a positive number, got {attention_budget_mib!r}"
            )
        if manifest.memory != VIEW_SLOTS:
            raise ViewrtError(
                f"{manifest.dir}: a Renderer runs view-slot models; family {manifest.family!r} "
                f"keeps its K/V as {manifest.memory!r} (open it with viewrt.runtime.open)"
            )
        limit = min(manifest.max_views, backend.max_views)
        why = (
            "the export's"
            if backend.max_views >= manifest.max_views
            else f"the {backend.name} backend's"
        )
        max_views = limit if max_views is None else int(max_views)
        if not 1 <= max_views <= limit:
            raise ViewrtError(f"max_views must be in 1..{limit} ({why}), got {max_views}")
        tlimit = backend.bounds[N.NUM_TARGETS]
        if targets_per_call is not None and not 1 <= targets_per_call <= tlimit:
            raise ViewrtError(f"targets_per_call must be in 1..{tlimit}, got {targets_per_call}")
        self.policy = CachePolicy(max_views, None if window is None else int(window), int(pinned))
        self.targets_per_call = targets_per_call
        self.attention_budget = attention_budget_mib * 2**20
        self.manifest, self.backend = manifest, backend
        self._writer, self._reader = manifest.cache.writer, manifest.cache.reader
        self.max_views, self.window, self.pinned = max_views, window, int(pinned)
        self.size = manifest.image_size
        self._given_frame = self._frame_from(frame)
        self.frame = self._given_frame
        self._lock = threading.RLock()
        self._closed = False
        backend.__enter__()
        try:
            self.cache = ViewSlots(backend, manifest, self.policy)
            out = manifest.tensors(manifest.cache.reader, "outputs")[0]
            self._images = backend.alloc(
                (1, manifest.max_targets, 3, self.size, self.size), out.np_dtype
            )
            # device staging for the inputs, allocated once (the CPU binds host arrays directly)
            on_host = backend.device == "cpu"
            self._view_in = (
                None if on_host else backend.alloc((1, 9, self.size, self.size), np.float32)
            )
            self._rays_in = (
                None
                if on_host
                else backend.alloc((1, manifest.max_targets, 6, self.size, self.size), np.float32)
            )
        except BaseException:
            backend.__exit__(None, None, None)
            raise
        self._rays: tuple | None = None  # (camera bytes, frame, rays) of the last render
        self.last_timings: dict[str, float] = {}

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self.backend.__exit__(None, None, None)
            self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _frame_from(frame) -> NormalizationFrame | None:
        if frame is None or isinstance(frame, NormalizationFrame):
            return frame
        if isinstance(frame, (str, bytes)) or not isinstance(frame, Iterable):
            raise ViewrtError(
                f"frame: expected a NormalizationFrame, cameras or c2w matrices, got {type(frame).__name__}"
            )
        c2ws = [_frame_c2w(c) for c in frame]  # Cameras, (c2w, fxfycxcy) pairs or 4x4 c2w
        if not c2ws:
            raise ViewrtError("frame: expected at least one camera")
        shapes = {np.shape(c) for c in c2ws}
        if shapes != {(4, 4)}:
            raise ViewrtError(
                f"frame: every camera needs a 4x4 c2w, got shapes {sorted(map(str, shapes))}"
            )
        return NormalizationFrame.from_cameras(np.stack(c2ws))

    # -- checks (no state touched) --------------------------------------------------------------
    def _check_image(self, image) -> np.ndarray:
        if not isinstance(image, np.ndarray) and not hasattr(image, "__array__"):
            raise ViewrtError(
                f"image: expected a float array [3, {self.size}, {self.size}], got {type(image).__name__}"
            )
        arr = np.asarray(image)
        if arr.shape != (3, self.size, self.size):
            raise ViewrtError(
                f"image: got shape {arr.shape}, expected (3, {self.size}, {self.size}) (resize with viewrt.geometry.resize_center_crop)"
            )
        if arr.dtype not in (np.float32, np.float64):
            raise ViewrtError(f"image: got dtype {arr.dtype}, expected float32 in [0, 1]")
        return arr

    # -- public API -----------------------------------------------------------------------------
    @_locked
    def add_view(self, image, camera, keyframe: bool = True) -> int:
        """Encode a posed view into the cache.

        Args:
            image: float ``[3, S, S]`` RGB in [0, 1] at the model's image size.
            camera: Camera, (c2w, fxfycxcy) or {"c2w", "fxfycxcy"} in the dataset's convention.
            keyframe: False: the view takes part in the next render (whatever adds or removes
                come before it) and is then dropped; a second non-keyframe view added before
                a render replaces the first.
        Returns:
            the view id (for :meth:`remove_view`; a non-keyframe's id is never cached).
        Raises:
            ViewrtError: bad image or camera, a full cache without a window (or no room
                for a non-keyframe view), or an encoding that is not finite (e.g. camera
                coordinates beyond an fp16 cache's range); the cache is unchanged.
        """
        if not isinstance(keyframe, (bool, np.bool_)):
            raise ViewrtError(
                f"keyframe must be True or False, got {type(keyframe).__name__} {keyframe!r}"
            )
        t = Timer(self.backend)
        image = self._check_image(image)
        cam = _as_camera(camera, "camera")
        frame = self.frame or NormalizationFrame.from_cameras(cam.c2w[None])
        view = input_view(image, frame.apply(cam.c2w), cam.fxfycxcy)[
            None
        ]  # [1, 9, S, S]; checks range, NaN
        plan = self.cache.plan_add(bool(keyframe))  # raises when full; changes nothing
        t.lap("preprocess")
        staged = self.backend.upload(view, self._view_in)
        t.lap("h2d")
        self.backend.run(
            self._writer, {self.manifest.view_input: staged}, self.cache.slot_outputs(plan.slot)
        )  # the free slot
        t.lap("encode", sync=True)
        self.cache.check_finite(plan.slot)
        # commit: nothing above changed the table
        self.frame = frame
        self.cache.commit(plan)  # evicts/replaces what the plan drops (one slot copy)
        t.lap("cache")
        self.last_timings = t.result()
        return plan.entry.view_id

    @_locked
    def remove_view(self, view_id: int) -> None:
        """Remove a cached view; the last slot moves into its place.

        Raises: ViewrtError for an id that is not cached (nothing changes).
        """
        if isinstance(view_id, bool) or not isinstance(view_id, (int, np.integer)):
            raise ViewrtError(
                f"view id must be an integer (as add_view returned), got {type(view_id).__name__} {view_id!r}"
            )
        t = Timer(self.backend)
        i = self.cache.table.index(int(view_id))
        slots = self.cache.slots
        if i is None or not slots[i].keyframe:
            pending = " (it is a non-keyframe view, never cached)" if i is not None else ""
            raise ViewrtError(
                f"view {view_id} is not in the cache{pending}; cached: {[s.view_id for s in slots if s.keyframe]}"
            )
        self.cache.drop(int(view_id))
        t.lap("cache", sync=True)
        self.last_timings = t.result()

    @_locked
    def render(self, target_cameras: Sequence) -> np.ndarray:
        """Render target views from every cached view (plus a pending non-keyframe view).

        Args:
            target_cameras: a list of cameras (or one camera) at the model's image size.
        Returns:
            float32 images ``[Vt, 3, S, S]`` in [0, 1] (a new array).
        Raises:
            ViewrtError: no views cached, or a bad camera.
        """
        t = Timer(self.backend)
        if isinstance(target_cameras, (Camera, dict)) or (
            isinstance(target_cameras, tuple)
            and len(target_cameras) == 2
            and np.ndim(target_cameras[0]) == 2
        ):
            target_cameras = [target_cameras]
        if isinstance(target_cameras, (str, bytes, np.ndarray)) or not isinstance(
            target_cameras, Iterable
        ):
            raise ViewrtError(
                f"render: expected a list of cameras, got {type(target_cameras).__name__}"
            )
        cams = [_as_camera(c, f"target camera {i}") for i, c in enumerate(target_cameras)]
        if not cams:
            raise ViewrtError("render: expected at least one target camera")
        n = len(self.cache)
        if n == 0:
            raise ViewrtError("render: no views in the cache; add a view first")
        rays = self._target_rays(cams)  # [1, Vt, 6, S, S]
        t.lap("preprocess")
        past = self.cache.prefix_inputs(n)
        out = np.empty((len(cams), 3, self.size, self.size), np.float32)
        step = self._targets_per_call(n)
        for start in range(0, len(cams), step):
            chunk = rays[:, start : start + step]
            staged = self.backend.upload(chunk, self._rays_in)
            t.lap("h2d")
            images = self._images.tokens(0, chunk.shape[1])  # [1, vt, 3, S, S] prefix
            self.backend.run(
                self._reader,
                {self.manifest.target_input: staged, **past},
                {self.manifest.image_output: images},
            )
            t.lap("decode", sync=True)
            out[start : start + chunk.shape[1]] = self.backend.download(images)[0]
            t.lap("d2h")
        if not np.isfinite(out).all():
            raise ViewrtError(
                "render: the decoder produced non-finite images (values beyond the export's precision); "
                "normalize the scene or use an fp32 export"
            )
        self.cache.after_render()  # the pending non-keyframe view is used up
        t.lap("postprocess")
        self.last_timings = t.result()
        return out

    def _targets_per_call(self, n_views: int) -> int:
        """Targets per decoder call: as asked, else all at once where the backend fuses
        attention, else as many as keep the materialized attention scores and
        probabilities (:func:`viewrt.contract.memory.attention_scratch_bytes`) within the
        attention budget, so memory stays bounded as the cache grows."""
        limit = self.backend.bounds[N.NUM_TARGETS]
        if self.targets_per_call is not None:
            return self.targets_per_call
        if not self.backend.materializes_attention:
            return limit
        m = self.manifest
        return targets_within(
            self.attention_budget, m.tokens_per_view, n_views * m.tokens_per_view, m.n_heads, limit
        )

    def _target_rays(self, cams: list[Camera]) -> np.ndarray:
        """Plücker rays of the targets in the fixed frame; the last set is reused when the
        same cameras are rendered again (e.g. fixed targets while views stream in)."""
        if self.frame is None:
            raise ViewrtError("render: no normalization frame yet; add a view first")
        key = b"".join(c.c2w.tobytes() + c.fxfycxcy.tobytes() for c in cams)
        if self._rays is None or self._rays[0] != key or self._rays[1] is not self.frame:
            rays = np.stack(
                [plucker(self.frame.apply(c.c2w), c.fxfycxcy, self.size, self.size) for c in cams]
            )[None]
            self._rays = (key, self.frame, rays)
        return self._rays[2]

    @_locked
    def reset(self) -> None:
        """Forget every view (buffers are kept); a frame computed from a view is dropped."""
        self.cache.clear()
        self.frame = self._given_frame

    @_locked
    def info(self) -> dict:
        """Views, tokens, bytes used and reserved, per-slot view ids, the policy and the
        backend (name, device, precision in use)."""
        slots = self.cache.slots
        keys = [s for s in slots if s.keyframe]
        pending = next((s.view_id for s in slots if not s.keyframe), None)
        n = len(keys)
        return {
            "views": n,
            "tokens": n * self.cache.T,
            "bytes_used": n * self.cache.bytes_per_view,
            "bytes_reserved": self.cache.reserved_bytes,
            "bytes_per_view": self.cache.bytes_per_view,
            "max_views": self.max_views,
            "slots": [s.view_id for s in slots],
            "cached_ids": [s.view_id for s in keys],
            "pinned_ids": [s.view_id for s in keys if s.pinned],
            "pending_non_keyframe": pending,
            "window": self.window,
            "pinned": self.pinned,
            "frame": None if self.frame is None else self.frame.to_dict(),
            "frame_source": "caller"
            if self._given_frame is not None
            else ("first added view" if self.frame is not None else "not fixed yet"),
            **self.backend.info(),
        }
