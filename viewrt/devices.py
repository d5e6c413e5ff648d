"""The one TensorRT import and GPU probe, used by export (``viewrt build``) and runtime alike.

A leaf module: it imports nothing of viewrt but ``viewrt.errors``, and ``tensorrt`` /
cuda-python only inside functions, so it imports everywhere. :func:`tensorrt_status` probes
once per process (one command) and keeps the answer; tests call :func:`reset`.

CUDA errors are reported by name (e.g. ``cudaErrorInsufficientDriver``): cuda-python 13.x
needs driver 580 or newer, and on a CUDA 12 driver (JetPack 6) every call fails with that
error, which must not read as "no GPU".
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

from viewrt.errors import ViewrtError

# Lazy: tensorrt and cuda-python (heavy, optional), imported where used.

# TensorRT DataType member name -> numpy dtype name (as the manifest writes dtypes).
TRT_DTYPES = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8",
    "INT32": "int32", "INT64": "int64", "BOOL": "bool", "UINT8": "uint8",
    "FP8": "float8e4m3", "INT4": "int4",
}  # fmt: skip

_CUDA_HINT = {
    "cudaErrorInsufficientDriver": (
        "the installed cuda-python is newer than the driver (cuda-python 13.x needs driver 580+; "
        "on a CUDA 12 driver such as JetPack 6 install viewrt[gpu-cu12])"
    ),
    "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE": "the CUDA forward-compatibility package does not support this GPU",
}


def import_tensorrt():
    """Return the ``tensorrt`` module.

    Raises:
        ViewrtError: it does not import (the message says where TensorRT comes from).
    """
    try:
        import tensorrt as trt
    except ImportError as e:
        raise ViewrtError(
            f"TensorRT is not installed ({e}); install it from NVIDIA's index "
            "(pip install tensorrt --extra-index-url https://pypi.nvidia.com) or use JetPack's "
            "python3-libnvinfer (JetPack 6 ships TensorRT 10.3)"
        ) from e
    return trt


def import_cudart():
    """Return cuda-python's runtime module (``cuda.bindings.runtime``, or ``cuda.cudart``).

    Raises:
        ViewrtError: cuda-python is not installed.
    """
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise ViewrtError(
                "cuda-python is not installed; install viewrt[gpu-cu12] for a CUDA 12 driver "
                "(JetPack 6) or viewrt[gpu-cu13] for a CUDA 13 driver (580+)"
            ) from None
    return cudart


def cuda_error_name(cudart, err) -> str:
    """The name of a cuda-python runtime error, e.g. ``"cudaErrorInsufficientDriver"``."""
    try:
        status, name = cudart.cudaGetErrorName(err)
        if int(status) == 0:
            return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - a probe must not fail on the error path
        pass
    return getattr(err, "name", None) or f"CUDA error {int(err)}"


def describe_cuda_error(name: str) -> str:
    """``name`` plus a hint when the error has a known cause."""
    return f"{name}: {_CUDA_HINT[name]}" if name in _CUDA_HINT else name


def cuda_check(cudart, result, what: str):
    """Unpack a cuda-python ``(err, *values)`` result, raising on an error status.

    Raises:
        ViewrtError: ``"<what>: <error name>"``, with a hint for known causes.
    """
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = cuda_error_name(cudart, err)
        raise ViewrtError(f"{what} failed: {describe_cuda_error(name)} ({int(err)})")
    return values[0] if len(values) == 1 else (values or None)


@dataclass(frozen=True)
class GpuInfo:
    """What the probe found: ``count`` CUDA devices, device 0's ``name`` and compute
    capability ``"major.minor"``, or ``reason`` (why none is usable) when count is 0."""

    count: int
    name: str = ""
    compute_capability: str = ""
    reason: str = ""


def _probe_cudart(cudart) -> GpuInfo:
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0:
        name = cuda_error_name(cudart, err)
        return GpuInfo(0, reason=f"cudaGetDeviceCount failed: {describe_cuda_error(name)}")
    if count == 0:
        return GpuInfo(
            0, reason="no CUDA GPU is visible (no device, or CUDA_VISIBLE_DEVICES hides it)"
        )
    err, prop = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        return GpuInfo(count, "unknown", "unknown")
    name = prop.name.split(b"\0")[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(int(count), name, f"{prop.major}.{prop.minor}")


def _probe_driver() -> GpuInfo:
    """The same through the CUDA driver library, for hosts without cuda-python."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return GpuInfo(0, reason="no CUDA driver (libcuda.so.1 does not load)")

    def error(code: int, call: str) -> GpuInfo:
        text = ctypes.c_char_p()
        cuda.cuGetErrorName(code, ctypes.byref(text))
        name = text.value.decode() if text.value else f"CUresult {code}"
        return GpuInfo(0, reason=f"{call} failed: {describe_cuda_error(name)}")

    count, dev, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    for call, rc in (
        ("cuInit", lambda: cuda.cuInit(0)),
        ("cuDeviceGetCount", lambda: cuda.cuDeviceGetCount(ctypes.byref(count))),
    ):
        code = rc()
        if code != 0:
            return error(code, call)
    if not count.value:
        return GpuInfo(
            0, reason="no CUDA GPU is visible (no device, or CUDA_VISIBLE_DEVICES hides it)"
        )
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGet(ctypes.byref(dev), 0)
    cuda.cuDeviceGetName(name, 256, dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # COMPUTE_CAPABILITY_MINOR
    return GpuInfo(count.value, name.value.decode(), f"{major.value}.{minor.value}")


def probe_gpu() -> GpuInfo:
    """Count CUDA devices (through cuda-python where installed, else the driver library).

    Returns:
        A GpuInfo; never raises.
    """
    try:
        cudart = import_cudart()
    except ViewrtError:
        return _probe_driver()
    return _probe_cudart(cudart)


@dataclass(frozen=True)
class TensorRTStatus:
    """Whether engines can be built and run here: ``ok``, else ``reason``; the TensorRT
    ``version`` and ``major`` where it imports; the ``gpu`` found."""

    ok: bool
    reason: str
    version: str = ""
    major: int = 0
    gpu: GpuInfo = GpuInfo(0)


def _probe() -> TensorRTStatus:
    try:
        trt = import_tensorrt()
    except ViewrtError as e:
        return TensorRTStatus(False, str(e))
    version = str(trt.__version__)
    major = int(version.split(".")[0])
    gpu = probe_gpu()
    if gpu.count == 0:
        return TensorRTStatus(False, gpu.reason, version, major, gpu)
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as e:  # noqa: BLE001 - pybind11 raises when the factory returns nullptr
        return TensorRTStatus(
            False, f"TensorRT {version} cannot create a builder: {e}", version, major, gpu
        )
    if builder is None:
        return TensorRTStatus(
            False,
            f"TensorRT {version} cannot create a builder (CUDA initialisation failed)",
            version,
            major,
            gpu,
        )
    return TensorRTStatus(
        True, f"TensorRT {version} on {gpu.name} (sm {gpu.compute_capability})", version, major, gpu
    )


@functools.lru_cache(maxsize=1)
def tensorrt_status() -> TensorRTStatus:
    """Probe TensorRT and the GPU once per process (one command) and keep the answer.

    Returns:
        A TensorRTStatus: ``ok`` False with a one-line ``reason`` when ``tensorrt`` does not
        import, no CUDA GPU is usable (the CUDA error is named), or no builder can be made.
    """
    return _probe()


def reset() -> None:
    """Forget the kept probe (tests that swap modules in and out call this)."""
    tensorrt_status.cache_clear()
