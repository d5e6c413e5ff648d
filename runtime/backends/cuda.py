"""Thin CUDA runtime helpers over cuda-python (``cuda.bindings.runtime``), as in the
TensorRT Python samples: device memory, copies and a stream, without torch.

Imported only by the GPU memory (memory.CudaMemory) and the TensorRT backend. cuda-python is
imported through viewrt.devices, and every call's status is checked: a failure names the CUDA
error (e.g. cudaErrorInsufficientDriver, with the cuda-python/driver hint).
"""

from __future__ import annotations

from viewrt.devices import cuda_check, import_cudart
from viewrt.errors import ViewrtError


def _cudart():
    return import_cudart()


def check(result, what: str = "CUDA call"):
    """Unpack a cuda-python ``(err, *values)`` result, raising ViewrtError naming the error."""
    return cuda_check(_cudart(), result, what)


class DeviceMemory:
    """One cudaMalloc'd block (256-byte aligned by CUDA), freed when garbage collected."""

    def __init__(self, nbytes: int):
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check(_cudart().cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes})"))
        check(_cudart().cudaMemset(self.ptr, 0, self.nbytes), "cudaMemset")

    def __del__(self):
        if getattr(self, "ptr", 0):
            _cudart().cudaFree(self.ptr)
            self.ptr = 0


class Stream:
    def __init__(self):
        self.cudart = _cudart()
        self.handle = check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")

    def copy(self, dst: int, src: int, nbytes: int, kind: str) -> None:
        kinds = {
            "d2d": self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
            "h2d": self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
            "d2h": self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
        }
        check(
            self.cudart.cudaMemcpyAsync(dst, src, nbytes, kinds[kind], self.handle),
            f"cudaMemcpyAsync ({kind})",
        )

    def synchronize(self) -> None:
        check(self.cudart.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def close(self) -> None:
        if self.handle is not None:
            self.cudart.cudaStreamDestroy(self.handle)
            self.handle = None


def device_name(device_id: int = 0) -> str:
    props = check(_cudart().cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties")
    name = props.name
    return (
        name.split(b"\0")[0].decode() if isinstance(name, bytes) else str(name)
    )  # as viewrt build records it


def set_device(device_id: int) -> None:
    count = check(_cudart().cudaGetDeviceCount(), "cudaGetDeviceCount")
    if not 0 <= device_id < count:
        raise ViewrtError(f"CUDA device {device_id} does not exist ({count} device(s))")
    check(_cudart().cudaSetDevice(device_id), "cudaSetDevice")
