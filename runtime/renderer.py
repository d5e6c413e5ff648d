"""The view-by-view renderer: add a view, remove a view, render target views.

It owns the KV cache (see cache.py) and the cache policies:

- ``window=W``: at most ``pinned + W`` views are cached; adding a keyframe when that many
  are cached evicts the oldest unpinned view (its slot is overwritten by the new view's
  encoder output: no copy). The first ``pinned`` views added are never evicted.
- ``keyframe=False``: the view is encoded into the scratch slot just past the valid prefix,
  takes part in the next render, and is not committed.
- No window and a full cache: a clear error, nothing changed.

Cameras are OpenCV c2w + fxfycxcy in pixels (the dataset's convention). The scene
normalization frame is fixed before the first view is encoded, since every cached K/V
depends on it: given by the caller (a NormalizationFrame, or cameras to compute it from),
or else computed from the first added view (scale 1: one camera has no extent). ``info()``
says which.

Errors a caller can make (image of the wrong size/dtype/range, NaN, a non-rigid camera, a
non-positive focal, an unknown view id, a full cache) raise ViewrtError before anything
changes.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from viewrt.errors import ViewrtError
from viewrt.geometry import Camera, NormalizationFrame, input_view, plucker
from viewrt.runtime.backends.base import Backend, Timer
from viewrt.runtime.cache import KVCache, Slot
from viewrt.runtime.manifest import Manifest, load_manifest


def _as_camera(camera, what: str) -> Camera:
    if isinstance(camera, Camera):
        return camera
    if isinstance(camera, dict) and {"c2w", "fxfycxcy"} <= set(camera):
        return Camera(camera["c2w"], camera["fxfycxcy"])
    if isinstance(camera, (tuple, list)) and len(camera) == 2:
        return Camera(*camera)
    raise ViewrtError(f"{what}: expected a Camera, a (c2w, fxfycxcy) pair or a dict with c2w and fxfycxcy, got {type(camera).__name__}")


class Renderer:
    """View-by-view Efficient-LVSM inference over a preallocated KV cache.

    Use :func:`open` to make one. Attributes: ``manifest``, ``backend``, ``max_views``,
    ``window``, ``pinned``, ``frame`` (None until fixed), ``last_timings`` (ms per
    component of the last call).
    """

    def __init__(self, manifest: Manifest, backend: Backend, max_views: int | None = None, window: int | None = None,
                 pinned: int = 0, frame: NormalizationFrame | Iterable | None = None, targets_per_call: int | None = None,
                 attention_budget_mib: float = 256.0):
        max_views = manifest.max_views if max_views is None else int(max_views)
        if not 1 <= max_views <= manifest.max_views:
            raise ViewrtError(f"max_views must be in 1..{manifest.max_views} (the export's), got {max_views}")
        if pinned < 0 or (window is not None and window < 1):
            raise ViewrtError(f"pinned must be >= 0 and window >= 1, got pinned={pinned}, window={window}")
        if window is not None and pinned + window > max_views:
            raise ViewrtError(f"pinned + window = {pinned + window} exceeds max_views {max_views}")
        limit = backend.bounds["num_targets"]
        if targets_per_call is not None and not 1 <= targets_per_call <= limit:
            raise ViewrtError(f"targets_per_call must be in 1..{limit}, got {targets_per_call}")
        self.targets_per_call = targets_per_call
        self.attention_budget = attention_budget_mib * 2**20
        self.manifest, self.backend = manifest, backend
        self.max_views, self.window, self.pinned = max_views, window, pinned
        self.size = manifest.image_size
        self._given_frame = self._frame_from(frame)
        self.frame = self._given_frame
        backend.__enter__()
        self.cache = KVCache(backend, manifest, max_views)
        out = manifest.tensors("decoder", "outputs")[0]
        self._images = backend.alloc((1, manifest.max_targets, 3, self.size, self.size), out.dtype)
        # device staging for the inputs, allocated once (the CPU binds host arrays directly)
        on_host = backend.device == "cpu"
        self._view_in = None if on_host else backend.alloc((1, 9, self.size, self.size), np.float32)
        self._rays_in = None if on_host else backend.alloc((1, manifest.max_targets, 6, self.size, self.size), np.float32)
        self._ids = itertools.count()
        self._age = itertools.count()
        self._added = 0  # views added since reset (for pinning)
        self._scratch: int | None = None  # view id of a pending non-keyframe view
        self._rays: tuple | None = None  # (camera bytes, frame, rays) of the last render
        self.last_timings: dict[str, float] = {}

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        self.backend.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _frame_from(frame) -> NormalizationFrame | None:
        if frame is None or isinstance(frame, NormalizationFrame):
            return frame
        c2ws = [c if np.ndim(c) == 2 else _as_camera(c, "frame camera").c2w for c in frame]  # Cameras or 4x4 c2w
        if not c2ws:
            raise ViewrtError("frame: expected at least one camera")
        return NormalizationFrame.from_cameras(np.stack(c2ws))

    # -- checks (no state touched) --------------------------------------------------------------
    def _check_image(self, image) -> np.ndarray:
        arr = np.asarray(image)
        if arr.shape != (3, self.size, self.size):
            raise ViewrtError(f"image: got shape {arr.shape}, expected (3, {self.size}, {self.size}) (resize with viewrt.geometry.resize_center_crop)")
        if arr.dtype not in (np.float32, np.float64):
            raise ViewrtError(f"image: got dtype {arr.dtype}, expected float32 in [0, 1]")
        return arr

    # -- public API -----------------------------------------------------------------------------
    def add_view(self, image, camera, keyframe: bool = True) -> int:
        """Encode a posed view into the cache.

        Args:
            image: float ``[3, S, S]`` RGB in [0, 1] at the model's image size.
            camera: Camera, (c2w, fxfycxcy) or {"c2w", "fxfycxcy"} in the dataset's convention.
            keyframe: False: use the view for the next render only, do not cache it.
        Returns:
            the view id (for :meth:`remove_view`; a non-keyframe's id is not cached).
        Raises:
            ViewrtError: bad image or camera, or a full cache without a window (or no free
                slot for a non-keyframe); the cache is unchanged.
        """
        t = Timer(self.backend)
        image = self._check_image(image)
        cam = _as_camera(camera, "camera")
        frame = self.frame or NormalizationFrame.from_cameras(cam.c2w[None])
        view = input_view(image, frame.apply(cam.c2w), cam.fxfycxcy)[None]  # [1, 9, S, S]; checks range, NaN
        n = len(self.cache)
        victim = None
        if not keyframe:
            if n >= self.max_views:
                raise ViewrtError(f"cache full ({n} of {self.max_views} views): no scratch slot for a non-keyframe view; remove a view or use a window smaller than max_views")
            slot = n
        elif n < (self.max_views if self.window is None else self.pinned + self.window):
            slot = n
        elif self.window is None:
            raise ViewrtError(f"cache full ({n} of {self.max_views} views); remove a view, reset, or open with a window")
        else:
            unpinned = [i for i, s in enumerate(self.cache.slots) if not s.pinned]
            if not unpinned:
                raise ViewrtError(f"cache full and all {n} cached views are pinned; nothing to evict")
            victim = slot = min(unpinned, key=lambda i: self.cache.slots[i].age)
        t.lap("preprocess")
        staged = self.backend.upload(view, self._view_in)
        t.lap("h2d")
        try:
            self.backend.run("encoder", {self.manifest.view_input: staged}, self.cache.slot_outputs(slot))
        except Exception:
            if victim is not None:  # its slot may be half written: drop it, keep the table true
                self.cache.remove_slot(victim)
            raise
        t.lap("encode", sync=True)
        # commit
        self.frame = frame
        view_id = next(self._ids)
        if not keyframe:
            self._scratch = view_id
        else:
            entry = Slot(view_id, pinned=self._added < self.pinned, age=next(self._age))
            self._added += 1
            if victim is not None:
                self.cache.slots[victim] = entry
            else:
                self.cache.slots.append(entry)
                self._scratch = None  # written at slot n: it replaced any pending non-keyframe view
        t.lap("postprocess")
        self.last_timings = t.result()
        return view_id

    def remove_view(self, view_id: int) -> None:
        """Remove a cached view; the last slot moves into its place.

        Raises: ViewrtError for an id that is not cached (nothing changes).
        """
        t = Timer(self.backend)
        slot = self.cache.find(view_id)
        if slot is None:
            pending = " (it was a non-keyframe view, never cached)" if view_id == self._scratch else ""
            raise ViewrtError(f"view {view_id} is not in the cache{pending}; cached: {[s.view_id for s in self.cache.slots]}")
        n = len(self.cache)
        self.cache.remove_slot(slot)
        if self._scratch is not None:  # keep the pending view right after the valid prefix
            self.cache.move(n - 1, n)
        t.lap("cache", sync=True)
        self.last_timings = t.result()

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
        if isinstance(target_cameras, (Camera, dict)) or (isinstance(target_cameras, tuple) and len(target_cameras) == 2 and np.ndim(target_cameras[0]) == 2):
            target_cameras = [target_cameras]
        cams = [_as_camera(c, f"target camera {i}") for i, c in enumerate(target_cameras)]
        if not cams:
            raise ViewrtError("render: expected at least one target camera")
        n = len(self.cache) + (self._scratch is not None)
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
            self.backend.run("decoder", {self.manifest.target_input: staged, **past}, {self.manifest.image_output: images})
            t.lap("decode", sync=True)
            out[start : start + chunk.shape[1]] = self.backend.download(images)[0]
            t.lap("d2h")
        self._scratch = None
        t.lap("postprocess")
        self.last_timings = t.result()
        return out

    def _targets_per_call(self, n_views: int) -> int:
        """Targets per decoder call: as asked, else all at once where the backend fuses
        attention, else as many as keep the materialized attention scores and
        probabilities (fp32, 2 x targets x T x cached tokens x heads per layer) within the
        attention budget, so memory stays bounded as the cache grows."""
        limit = self.backend.bounds["num_targets"]
        if self.targets_per_call is not None:
            return self.targets_per_call
        if not self.backend.materializes_attention:
            return limit
        m = self.manifest
        per_target = 2 * m.tokens_per_view * n_views * m.tokens_per_view * m.n_heads * 4
        return int(max(1, min(limit, self.attention_budget // per_target)))

    def _target_rays(self, cams: list[Camera]) -> np.ndarray:
        """Plücker rays of the targets in the fixed frame; the last set is reused when the
        same cameras are rendered again (e.g. fixed targets while views stream in)."""
        key = b"".join(c.c2w.tobytes() + c.fxfycxcy.tobytes() for c in cams)
        if self._rays is None or self._rays[0] != key or self._rays[1] is not self.frame:
            rays = np.stack([plucker(self.frame.apply(c.c2w), c.fxfycxcy, self.size, self.size) for c in cams])[None]
            self._rays = (key, self.frame, rays)
        return self._rays[2]

    def reset(self) -> None:
        """Forget every view (buffers are kept); a frame computed from a view is dropped."""
        self.cache.slots.clear()
        self._scratch, self._added = None, 0
        self.frame = self._given_frame

    def info(self) -> dict:
        """Views, tokens, bytes used and reserved, per-slot view ids and the policy."""
        n = len(self.cache)
        return {
            "views": n,
            "tokens": n * self.cache.T,
            "bytes_used": n * self.cache.bytes_per_view,
            "bytes_reserved": self.cache.reserved_bytes,
            "bytes_per_view": self.cache.bytes_per_view,
            "max_views": self.max_views,
            "slots": [s.view_id for s in self.cache.slots],
            "pinned_ids": [s.view_id for s in self.cache.slots if s.pinned],
            "pending_non_keyframe": self._scratch,
            "window": self.window,
            "pinned": self.pinned,
            "frame": None if self.frame is None else self.frame.to_dict(),
            "frame_source": "caller" if self._given_frame is not None else ("first added view" if self.frame is not None else "not fixed yet"),
            "backend": self.backend.name,
            "device": self.backend.device,
            "precision": self.backend.info()["precision"],
        }


def open(export_dir: str | Path, backend: str = "ort", max_views: int | None = None, window: int | None = None,
         pinned: int = 0, device: str | None = None, frame=None, threads: int | None = None,
         targets_per_call: int | None = None, attention_budget_mib: float = 256.0, precision: str | None = None) -> Renderer:  # noqa: A001
    """Open an export folder for view-by-view rendering.

    Args:
        export_dir: folder with manifest.json and the graphs (and engines for "trt").
        backend: "ort" (ONNX Runtime), "openvino" (OpenVINO CPU) or "trt" (native TensorRT).
        max_views: cache capacity (default and maximum: the export's max_views).
        window: sliding window size (None: no eviction, a full cache is an error).
        pinned: the first ``pinned`` views are never evicted.
        device: "cpu" (default for ort), "cuda[:N]", "tensorrt[:N]" (ort's TensorRT EP);
            "cuda:N" for trt.
        frame: normalization frame: a NormalizationFrame, cameras (or c2w matrices) to
            compute it from, or None to take it from the first added view.
        threads: ONNX Runtime intra-op threads (OpenVINO: inference threads).
        targets_per_call: targets per decoder call (default: chosen by the budget below;
            all at once on TensorRT, whose fused attention materializes nothing).
        attention_budget_mib: ONNX Runtime runs attention as MatMul -> Softmax -> MatMul and
            holds scores and probabilities of targets x T x cached tokens x heads floats;
            targets are split across calls to keep that under this budget (e.g. `small`
            at 32 cached views: 2 targets per call, +7% decode time, ~400 MiB less peak
            memory than 8 at once, measured on 2 CPU cores).
        precision: "openvino" only: None (OpenVINO's default for the CPU: bf16 with AMX or
            AVX512-BF16, else f32), "f32", "bf16" or "f16"; ``info()["precision"]`` says
            which is in use.
    Returns: a Renderer (a context manager; close() releases the backend).
    Raises: ViewrtError on a bad folder, manifest, checksum, backend or policy.
    """
    manifest = load_manifest(export_dir)
    if precision is not None and backend != "openvino":
        raise ViewrtError(f"precision= applies to the openvino backend; {backend!r} computes in the export's precision")
    if backend == "ort":
        from viewrt.runtime.backends.ort import OrtBackend

        be = OrtBackend(manifest, device or "cpu", threads)
    elif backend == "trt":
        from viewrt.runtime.backends.trt import TrtBackend

        be = TrtBackend(manifest, device or "cuda:0")
    elif backend == "openvino":
        from viewrt.runtime.backends.openvino import OpenVinoBackend

        be = OpenVinoBackend(manifest, device or "cpu", precision, threads)
    else:
        raise ViewrtError(f"unknown backend {backend!r}; expected ort, openvino or trt")
    return Renderer(manifest, be, max_views, window, pinned, frame, targets_per_call, attention_budget_mib)
