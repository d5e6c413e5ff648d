"""Thin CUDA runtime helpers over cuda-python (``cuda.bindings.runtime``), as in the
TensorRT Python samples: device memory, copies and a stream, without torch.

Imported only by the GPU backends; every call's status is checked.
"""

from __future__ import annotations

import numpy as np

from viewrt.errors import ViewrtError


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise ViewrtError("cuda-python is not installed (pip install 'viewrt[gpu]'); it provides device buffers for GPU backends") from None
    return cudart


def check(result):
    """Unpack a cuda-python ``(err, *values)`` result, raising on an error status."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = _cudart().cudaGetErrorName(err)[1]
        raise ViewrtError(f"CUDA error {int(err)} ({name.decode() if isinstance(name, bytes) else name})")
    return values[0] if len(values) == 1 else (values or None)


class DeviceMemory:
    """One cudaMalloc'd block, freed when garbage collected."""

    def __init__(self, nbytes: int):
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check(_cudart().cudaMalloc(self.nbytes)))
        check(_cudart().cudaMemset(self.ptr, 0, self.nbytes))

    def __del__(self):
        if getattr(self, "ptr", 0):
            _cudart().cudaFree(self.ptr)
            self.ptr = 0


class Stream:
    def __init__(self):
        self.cudart = _cudart()
        self.handle = check(self.cudart.cudaStreamCreate())

    def copy(self, dst: int, src: int, nbytes: int, kind: str) -> None:
        kinds = {"d2d": self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                 "h2d": self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                 "d2h": self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost}
        check(self.cudart.cudaMemcpyAsync(dst, src, nbytes, kinds[kind], self.handle))

    def synchronize(self) -> None:
        check(self.cudart.cudaStreamSynchronize(self.handle))

    def close(self) -> None:
        if self.handle is not None:
            self.cudart.cudaStreamDestroy(self.handle)
            self.handle = None


def device_name(device_id: int = 0) -> str:
    props = check(_cudart().cudaGetDeviceProperties(device_id))
    name = props.name
    return name.split(b"\0")[0].decode() if isinstance(name, bytes) else str(name)  # as viewrt build records it


def set_device(device_id: int) -> None:
    count = check(_cudart().cudaGetDeviceCount())
    if not 0 <= device_id < count:
        raise ViewrtError(f"CUDA device {device_id} does not exist ({count} device(s))")
    check(_cudart().cudaSetDevice(device_id))

