"""The two memory implementations every backend shares: host (numpy) and CUDA (cuda-python).

A backend owns one of them (``Backend.memory``) and the base class routes ``alloc``,
``copy``, ``upload``, ``download`` and ``synchronize`` to it, so a backend file holds only what
is its own (sessions or engines, and binding buffers by address).
"""

from __future__ import annotations

import numpy as np

from viewrt.runtime.backends import cuda
from viewrt.runtime.backends.base import Buffer


class HostMemory:
    """Host memory: numpy arrays; uploads bind the caller's array without a copy."""

    device = "cpu"
    alignment = 1

    def alloc(self, shape: tuple, dtype) -> Buffer:
        dtype = np.dtype(dtype)
        arr = np.zeros(shape, dtype)
        return Buffer(arr.ctypes.data, tuple(shape), dtype, "cpu", host=arr)

    def copy(self, dst: Buffer, src: Buffer) -> None:
        if dst.nbytes != src.nbytes:
            raise ValueError("copy between buffers of different sizes")
        np.copyto(dst.host, src.host)

    def upload(self, array: np.ndarray, staging: Buffer | None = None) -> Buffer:
        array = np.ascontiguousarray(array)
        return Buffer(array.ctypes.data, array.shape, array.dtype, "cpu", host=array)

    def download(self, buf: Buffer) -> np.ndarray:
        return buf.host.copy()

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass


class CudaMemory:
    """Device memory on one CUDA device and one stream for every copy (and for TensorRT).

    Args:
        device_id: the CUDA device (made current).
    Raises:
        ViewrtError: cuda-python is missing or a CUDA call fails (the error is named).
    """

    alignment = 256  # cudaMalloc returns 256-byte aligned blocks

    def __init__(self, device_id: int = 0):
        self._cuda = cuda
        cuda.set_device(device_id)
        self.device = f"cuda:{device_id}"
        self.stream = cuda.Stream()

    def alloc(self, shape: tuple, dtype) -> Buffer:
        dtype = np.dtype(dtype)
        mem = self._cuda.DeviceMemory(int(np.prod(shape)) * dtype.itemsize)
        return Buffer(mem.ptr, tuple(shape), dtype, self.device, owner=mem)

    def copy(self, dst: Buffer, src: Buffer) -> None:
        if dst.nbytes != src.nbytes:
            raise ValueError("copy between buffers of different sizes")
        self.stream.copy(dst.ptr, src.ptr, src.nbytes, "d2d")

    def upload(self, array: np.ndarray, staging: Buffer | None = None) -> Buffer:
        array = np.ascontiguousarray(array)
        buf = (
            staging
            if staging is not None and staging.nbytes >= array.nbytes
            else self.alloc(array.shape, array.dtype)
        )
        buf = Buffer(buf.ptr, array.shape, array.dtype, self.device, owner=buf)
        self.stream.copy(buf.ptr, array.ctypes.data, array.nbytes, "h2d")
        self.stream.synchronize()  # the host array may be freed by the caller
        return buf

    def download(self, buf: Buffer) -> np.ndarray:
        out = np.empty(buf.shape, buf.dtype)
        self.stream.copy(out.ctypes.data, buf.ptr, buf.nbytes, "d2h")
        self.stream.synchronize()
        return out

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()
            self.stream.close()
            self.stream = None
