"""FAKE CUDA runtime (``cuda.bindings.runtime`` of cuda-python): a test double, NOT CUDA.

Only the calls viewrt's GPU probe makes, with cuda-python's return convention: every call
returns a tuple ``(cudaError_t, *values)`` (cuda-bindings docs, "CUDA Runtime API" module
``cuda.bindings.runtime``: ``cudaGetDeviceCount() -> tuple[cudaError_t, int]``,
``cudaGetDeviceProperties(device) -> tuple[cudaError_t, cudaDeviceProp]``,
``cudaGetErrorName(error) -> tuple[cudaError_t, bytes]``). Error numbers are those of
``cudaError_t`` (cudaErrorInsufficientDriver = 35, cudaErrorNoDevice = 100). It allocates and
runs nothing.
"""

from __future__ import annotations

import enum
import sys
import types

cudaError_t = enum.IntEnum("cudaError_t", {"cudaSuccess": 0, "cudaErrorInsufficientDriver": 35, "cudaErrorNoDevice": 100})


def make(count: int = 1, error: str | None = None) -> types.ModuleType:
    """A fake runtime module with ``count`` devices, or whose calls fail with ``error``."""
    rt = types.ModuleType("cuda.bindings.runtime", "FAKE cuda.bindings.runtime (test double)")
    rt.cudaError_t = cudaError_t
    fail = cudaError_t[error] if error else None

    def cudaGetDeviceCount():
        return (fail, 0) if fail else (cudaError_t.cudaSuccess, count)

    def cudaGetDeviceProperties(device):
        if fail:
            return fail, None
        if not 0 <= device < count:
            return cudaError_t.cudaErrorNoDevice, None
        return cudaError_t.cudaSuccess, types.SimpleNamespace(name=b"FAKE GPU (test double)\0\0", major=0, minor=0)

    def cudaGetErrorName(err):
        return cudaError_t.cudaSuccess, cudaError_t(int(err)).name.encode()

    rt.cudaGetDeviceCount, rt.cudaGetDeviceProperties, rt.cudaGetErrorName = (
        cudaGetDeviceCount, cudaGetDeviceProperties, cudaGetErrorName)
    return rt


def install(monkeypatch, count: int = 1, error: str | None = None) -> types.ModuleType:
    """Make ``from cuda.bindings import runtime`` return the fake for one test."""
    rt = make(count, error)
    cuda = types.ModuleType("cuda", "FAKE cuda package (test double)")
    bindings = types.ModuleType("cuda.bindings", "FAKE cuda.bindings (test double)")
    cuda.bindings, bindings.runtime = bindings, rt
    cuda.__path__ = bindings.__path__ = []  # packages, so submodule imports resolve from sys.modules
    for name, mod in (("cuda", cuda), ("cuda.bindings", bindings), ("cuda.bindings.runtime", rt)):
        monkeypatch.setitem(sys.modules, name, mod)
    return rt
