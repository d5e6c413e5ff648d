"""PyTorch eager view-by-view rendering with the runtime's API (add_view, remove_view,
render, info, last_timings): the `torch` backend of `viewrt infer` and the PyTorch
baselines of `viewrt bench`.

Cache modes:
- "prealloc": a preallocated cache written in place (TorchKVCache), as the runtime does;
- "cat": the upstream way, growing each layer's K/V with torch.cat (a copy per add).
``autocast_bf16=True`` runs under bf16 autocast, as the upstream benchmark does.
:class:`CompiledTorchRenderer` runs encode_view and render through ``torch.compile``
(inductor, static shapes: :mod:`viewrt.models.compiled`); its ``compile`` compiles a
render's shape family before it is timed.
"""

from __future__ import annotations

import contextlib
import itertools
import time

import numpy as np
import torch

from viewrt.errors import ViewrtError
from viewrt.geometry import Camera, NormalizationFrame, input_view, plucker
from viewrt.models.compiled import CompiledModel
from viewrt.models.efficient_lvsm import EfficientLVSM, TorchKVCache


class TorchRenderer:
    """Efficient-LVSM in PyTorch eager with a KV cache (no window or keyframe policies).

    Args:
        model: an EfficientLVSM in eval mode.
        max_views: cache capacity.
        frame: a NormalizationFrame, or None to take it from the first added view.
        cache: "prealloc" or "cat".
        autocast_bf16: run encoder/decoder under torch.autocast(bfloat16).
        device: torch device.
    Raises: ViewrtError for an unknown cache mode.
    """

    def __init__(
        self,
        model: EfficientLVSM,
        max_views: int,
        frame: NormalizationFrame | None = None,
        cache: str = "prealloc",
        autocast_bf16: bool = False,
        device: str = "cpu",
    ):
        if cache not in ("prealloc", "cat"):
            raise ViewrtError(f"unknown torch cache mode {cache!r}; expected prealloc or cat")
        self.model, self.max_views, self.mode, self.device = (
            model.to(device),
            max_views,
            cache,
            torch.device(device),
        )
        self.size = model.cfg.image_size
        self.autocast = autocast_bf16
        self.frame = self._given = frame
        self.name = (
            "torch-"
            + ("compile-" if isinstance(self, CompiledTorchRenderer) else "")
            + ("bf16" if autocast_bf16 else "fp32")
            + ("-cat" if cache == "cat" else "")
        )
        self.net = self._network()  # what encodes and renders: the model, or it compiled
        self._ids = itertools.count()
        self.reset()
        self.last_timings: dict[str, float] = {}

    def _network(self):
        return self.model

    def _ctx(self):
        if self.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset(self) -> None:
        self.frame = self._given
        self.view_ids: list[int] = []
        if self.mode == "prealloc":
            self.cache = TorchKVCache(self.net, self.max_views, device=self.device)
        else:
            self.kv: list[list[torch.Tensor]] | None = None

    def __len__(self):
        return len(self.cache) if self.mode == "prealloc" else len(self.view_ids)

    @torch.no_grad()
    def add_view(self, image, camera: Camera, keyframe: bool = True) -> int:
        if not keyframe:
            raise ViewrtError(
                "the torch renderer caches every view (keyframe=False is a runtime feature)"
            )
        t0 = time.perf_counter()
        if len(self) >= self.max_views:
            raise ViewrtError(f"cache full ({self.max_views} views)")
        frame = self.frame or NormalizationFrame.from_cameras(camera.c2w[None])
        view = torch.from_numpy(
            input_view(image, frame.apply(camera.c2w), camera.fxfycxcy)[None]
        ).to(self.device)
        t1 = time.perf_counter()
        vid = next(self._ids)
        with self._ctx():
            if self.mode == "prealloc":
                self.cache.add(vid, view)
            else:
                kv = [torch.stack(p) for p in self.model.encode_view(view)]  # L x [2, 1, T, H, Dh]
                self.kv = (
                    kv
                    if self.kv is None
                    else [torch.cat([old, new], dim=2) for old, new in zip(self.kv, kv)]
                )
                self.view_ids.append(vid)
        self._sync()
        t2 = time.perf_counter()
        self.frame = frame
        self.last_timings = {
            "preprocess": (t1 - t0) * 1e3,
            "encode": (t2 - t1) * 1e3,
            "total": (t2 - t0) * 1e3,
        }
        return vid

    @torch.no_grad()
    def remove_view(self, view_id: int) -> None:
        if self.mode == "prealloc":
            if view_id not in self.cache.view_ids:
                raise ViewrtError(f"view {view_id} is not in the cache")
            self.cache.remove(view_id)
            return
        if view_id not in self.view_ids:
            raise ViewrtError(f"view {view_id} is not in the cache")
        i, T = self.view_ids.index(view_id), self.model.cfg.tokens_per_view
        self.kv = [torch.cat([kv[:, :, : i * T], kv[:, :, (i + 1) * T :]], dim=2) for kv in self.kv]
        self.view_ids.pop(i)

    @torch.no_grad()
    def render(self, target_cameras) -> np.ndarray:
        t0 = time.perf_counter()
        if len(self) == 0:
            raise ViewrtError("render: no views in the cache; add a view first")
        targets = self._targets(target_cameras)
        t1 = time.perf_counter()
        with self._ctx():
            if self.mode == "prealloc":
                images = self.cache.render(targets)
            else:
                images = self.model.render(targets, [(kv[0], kv[1]) for kv in self.kv])
        self._sync()
        t2 = time.perf_counter()
        out = images[0].float().cpu().numpy()
        t3 = time.perf_counter()
        self.last_timings = {
            "preprocess": (t1 - t0) * 1e3,
            "decode": (t2 - t1) * 1e3,
            "d2h": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3,
        }
        return out

    def _targets(self, target_cameras) -> torch.Tensor:
        """Target rays [1, Vt, 6, S, S] in the renderer's frame."""
        rays = np.stack(
            [
                plucker(self.frame.apply(c.c2w), c.fxfycxcy, self.size, self.size)
                for c in target_cameras
            ]
        )
        return torch.from_numpy(rays[None]).to(self.device)

    def info(self) -> dict:
        T, cfg = self.model.cfg.tokens_per_view, self.model.cfg
        n = len(self)
        per_view = cfg.kv_bytes_per_view(4)
        reserved = per_view * (self.max_views if self.mode == "prealloc" else n)
        return {
            "views": n,
            "tokens": n * T,
            "bytes_used": n * per_view,
            "bytes_reserved": reserved,
            "bytes_per_view": per_view,
            "max_views": self.max_views,
            "backend": self.name,
            "device": str(self.device),
        }


class CompiledTorchRenderer(TorchRenderer):
    """:class:`TorchRenderer` with encode_view and render through ``torch.compile``
    (inductor, static shapes: :class:`viewrt.models.compiled.CompiledModel`), preallocated
    cache. The encoder is compiled here; :meth:`compile` compiles a render's shape family
    (cached views, targets) before it is timed, so no step includes compilation.

    Args: as TorchRenderer (cache "prealloc").
    Raises: ViewrtError when inductor fails (e.g. no C++ compiler).
    """

    def __init__(
        self,
        model: EfficientLVSM,
        max_views: int,
        frame: NormalizationFrame | None = None,
        autocast_bf16: bool = False,
        device: str = "cpu",
    ):
        super().__init__(model, max_views, frame, "prealloc", autocast_bf16, device)
        view = torch.zeros(1, 9, self.size, self.size, device=self.device)
        with torch.no_grad(), self._ctx():
            self.net.compile_encode(view)

    def _network(self):
        return CompiledModel(self.model)

    @property
    def compile_log(self) -> dict[str, float]:
        """Seconds spent compiling, per shape family."""
        return dict(self.net.compile_log)

    @torch.no_grad()
    def compile(self, target_cameras) -> float:
        """Compile the render of these targets over the cache as it is now, outside any
        timed step.
        Returns: seconds spent compiling (0.0 if that shape family was compiled before).
        Raises: ViewrtError on an empty cache or a failed compilation."""
        if len(self) == 0:
            raise ViewrtError("compile: no views in the cache; add a view first")
        with self._ctx():
            return self.net.compile_render(self._targets(target_cameras), self.cache.prefix())
