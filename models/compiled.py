"""Efficient-LVSM's incremental path compiled with ``torch.compile`` (inductor): the
``torch-compile`` and ``torch-compile-bf16`` peers of ``viewrt bench``.

Shapes: static, one compiled graph per shape family. ``encode_view`` sees one shape
([1, 9, S, S]: one graph); ``render`` sees one per (cached tokens, targets), so a cache of
N views rendered for T targets is compiled once for that (N, T) and every later call at
that (N, T) runs the compiled graph. Static shapes give inductor every size at compile
time (the fastest graphs; a user who wants speed from PyTorch compiles for the sizes they
run); the price is one compile per N, reported apart from the step times.

Compilation happens in :meth:`CompiledModel.compile_encode` and
:meth:`CompiledModel.compile_render`, which the renderer calls before a step (never inside
one); each returns its seconds: the first call at the shape minus a warm call at it.
"""

from __future__ import annotations

import shutil
import time

import torch

from viewrt.errors import ViewrtError
from viewrt.models.efficient_lvsm import EfficientLVSM

# The torch.compile backend. Tests set dynamo's "eager" backend to exercise the plumbing
# (tracing, guards, one graph per shape) without inductor's C++ compile (tens of seconds).
BACKEND = "inductor"

# Each (N, T) is a recompile of the same code object; dynamo's default limit (8) would
# silently fall back to eager after 8 shapes. A bench has at most max_views x targets.
RECOMPILE_LIMIT = 1024


def compile_unavailable() -> str | None:
    """Why ``torch.compile`` with inductor cannot run on this CPU (no C++ compiler), or
    None. Cheap: looks the compiler up, compiles nothing."""
    if BACKEND != "inductor":
        return None
    from torch._inductor import config

    cxx = config.cpp.cxx[-1] if isinstance(config.cpp.cxx, tuple) else config.cpp.cxx
    if cxx is None or shutil.which(cxx) is None:
        return f"torch.compile (inductor) needs a C++ compiler on PATH; {cxx or 'g++'} not found"
    return None


def _failed(e: Exception) -> ViewrtError:
    """One line saying why torch.compile failed (the bench's skipped column shows it)."""
    text = str(e).strip()
    first = text.splitlines()[0][:300] if text else ""
    return ViewrtError(f"torch.compile ({BACKEND}) failed: {type(e).__name__}: {first}")


def _dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` with the default strides: the compiled graphs are guarded on strides, and a
    numpy array's ``[None]`` gives a size-1 axis stride 0 (a recompile per caller)."""
    return x.clone(memory_format=torch.contiguous_format)


def _first_minus_warm(fn, *args) -> float:
    """Seconds of the first call of ``fn(*args)`` minus those of a second (warm) one."""
    t0 = time.perf_counter()
    fn(*args)
    t1 = time.perf_counter()
    fn(*args)
    t2 = time.perf_counter()
    return max(0.0, (t1 - t0) - (t2 - t1))


class CompiledModel:
    """An EfficientLVSM's ``encode_view`` and ``render`` through ``torch.compile``
    (inductor, ``dynamic=False``), with the seconds each shape family took to compile.

    Args:
        model: an EfficientLVSM in eval mode.
    Attributes:
        cfg: the model's config (what TorchKVCache reads).
        compile_log: {"encode [1, 9, S, S]" or "render N=<views> T=<targets>": seconds}.
    """

    def __init__(self, model: EfficientLVSM):
        import torch._dynamo

        torch._dynamo.config.recompile_limit = max(
            torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT
        )
        self.model, self.cfg = model, model.cfg
        try:
            self._encode = torch.compile(model.encode_view, backend=BACKEND, dynamic=False)
            self._render = torch.compile(model.render, backend=BACKEND, dynamic=False)
        except Exception as e:  # noqa: BLE001 - e.g. an unknown backend: the column says why
            raise _failed(e) from e
        self.compile_log: dict[str, float] = {}

    def encode_view(self, views: torch.Tensor):
        return self._encode(_dense(views))

    def render(self, targets: torch.Tensor, kv):
        return self._render(_dense(targets), kv)

    def _compile(self, key: str, fn, *args) -> float:
        if key in self.compile_log:
            return 0.0
        try:
            seconds = _first_minus_warm(fn, *args)
        except Exception as e:  # noqa: BLE001 - inductor raises many kinds; the column says why
            raise _failed(e) from e
        self.compile_log[key] = seconds
        return seconds

    def compile_encode(self, views: torch.Tensor) -> float:
        """Compile ``encode_view`` for ``views``' shape [B, 9, S, S] (if not yet).
        Returns: seconds spent compiling (0.0 when compiled before). Raises ViewrtError
        when inductor fails (e.g. no C++ compiler)."""
        return self._compile(f"encode {list(views.shape)}", self._encode, _dense(views))

    def compile_render(self, targets: torch.Tensor, kv) -> float:
        """Compile ``render`` for these targets [1, T, 6, S, S] and this cache (K/V
        [1, N*tokens, H, Dh]) if not yet. Returns: seconds (0.0 when compiled before).
        Raises ViewrtError when inductor fails."""
        views = kv[0][0].shape[1] // self.cfg.tokens_per_view
        key = f"render N={views} T={targets.shape[1]}"
        return self._compile(key, self._render, _dense(targets), kv)
