"""Native TensorRT backend (10.x and 11.x runtime API): engines from ``viewrt build``,
device buffers from cuda-python, ``set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3`` on one stream. The cache lives in device memory.
"""

from __future__ import annotations

import numpy as np

from viewrt.errors import ViewrtError
from viewrt.runtime.backends import cuda
from viewrt.runtime.backends.base import Backend, Buffer
from viewrt.contract.manifest import Manifest


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise ViewrtError("TensorRT is not installed (pip install tensorrt from NVIDIA's index, or JetPack's python3-libnvinfer)") from None
    return trt


class TrtBackend(Backend):
    """Runs encoder.engine and decoder.engine.

    Args:
        manifest: the export's manifest, with the engines recorded by ``viewrt build``.
        device: "cuda[:N]".
    Raises (on activate): ViewrtError when TensorRT or the engines are missing, when the
        engines were built for another GPU or TensorRT version, or an engine's tensors do
        not match the manifest.
    """

    name = "trt"
    options = ("device",)
    materializes_attention = False  # TensorRT fuses the attention pattern

    def __init__(self, manifest: Manifest, device: str = "cuda:0"):
        kind, _, idx = device.partition(":")
        if kind not in ("cuda", "gpu"):
            raise ViewrtError(f"the TensorRT backend runs on a CUDA device, got device {device!r}")
        self.device_id = int(idx or 0)
        super().__init__(manifest, f"cuda:{self.device_id}")
        engines = manifest.engines or {}
        for g in ("encoder", "decoder"):
            prof = (engines.get(g) or {}).get("profiles", {})
            for name, p in prof.items():
                if name in manifest.past_names[:1]:
                    self.bounds["past_tokens"] = min(self.bounds["past_tokens"], int(p["max"][1]))
                if name == manifest.target_input:
                    self.bounds["num_targets"] = min(self.bounds["num_targets"], int(p["max"][1]))

    def activate(self) -> None:
        trt = _import_trt()
        m = self.manifest
        engines = m.engines or {}
        if not all(g in engines for g in ("encoder", "decoder")):
            raise ViewrtError(f"{m.dir}: no TensorRT engines recorded; run `viewrt build {m.dir}`")
        cuda.set_device(self.device_id)
        gpu = cuda.device_name(self.device_id)
        for g in ("encoder", "decoder"):
            built = engines[g]
            if built.get("tensorrt") != trt.__version__:
                raise ViewrtError(f"{m.path(g, 'engine')}: built with TensorRT {built.get('tensorrt')}, this is {trt.__version__}; rebuild with `viewrt build`")
            if built.get("gpu") != gpu:
                raise ViewrtError(f"{m.path(g, 'engine')}: built for {built.get('gpu')}, this GPU is {gpu}; rebuild on this device")
        m.verify([engines[g]["file"] for g in ("encoder", "decoder")])
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self._runtime is None:
            raise ViewrtError("TensorRT: could not create a runtime")
        self.engines, self.contexts = {}, {}
        for g in ("encoder", "decoder"):
            engine = self._runtime.deserialize_cuda_engine(m.path(g, "engine").read_bytes())
            if engine is None:
                raise ViewrtError(f"{m.path(g, 'engine')}: TensorRT could not deserialize it")
            names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
            want = {t.name for t in m.tensors(g, "inputs") + m.tensors(g, "outputs")}
            if names != want:
                raise ViewrtError(f"{m.path(g, 'engine')}: tensors {sorted(names)} do not match the manifest's {sorted(want)}")
            context = engine.create_execution_context()
            if context is None:
                raise ViewrtError(f"{m.path(g, 'engine')}: could not create an execution context (out of device memory?)")
            self.engines[g], self.contexts[g] = engine, context
        self._stream = cuda.Stream()

    def deactivate(self) -> None:
        self.contexts, self.engines = {}, {}
        if getattr(self, "_stream", None) is not None:
            self._stream.close()
            self._stream = None

    def alloc(self, shape: tuple, dtype) -> Buffer:
        dtype = np.dtype(dtype)
        mem = cuda.DeviceMemory(int(np.prod(shape)) * dtype.itemsize)
        return Buffer(mem.ptr, tuple(shape), dtype, self.device, owner=mem)

    def copy(self, dst: Buffer, src: Buffer) -> None:
        if dst.nbytes != src.nbytes:
            raise ValueError("copy between buffers of different sizes")
        self._stream.copy(dst.ptr, src.ptr, src.nbytes, "d2d")

    def upload(self, array: np.ndarray, staging: Buffer | None = None) -> Buffer:
        array = np.ascontiguousarray(array)
        buf = staging if staging is not None and staging.nbytes >= array.nbytes else self.alloc(array.shape, array.dtype)
        buf = Buffer(buf.ptr, array.shape, array.dtype, self.device, owner=buf)
        self._stream.copy(buf.ptr, array.ctypes.data, array.nbytes, "h2d")
        self._stream.synchronize()  # the host array may be freed by the caller
        return buf

    def download(self, buf: Buffer) -> np.ndarray:
        out = np.empty(buf.shape, buf.dtype)
        self._stream.copy(out.ctypes.data, buf.ptr, buf.nbytes, "d2h")
        self._stream.synchronize()
        return out

    def synchronize(self) -> None:
        self._stream.synchronize()

    def _run(self, graph: str, inputs: dict[str, Buffer], outputs: dict[str, Buffer]) -> None:
        ctx = self.contexts[graph]
        for name, b in inputs.items():
            if not ctx.set_input_shape(name, tuple(b.shape)):
                raise ViewrtError(f"{graph} engine: input '{name}' shape {tuple(b.shape)} is outside its optimization profile")
            if not ctx.set_tensor_address(name, b.ptr):
                raise ViewrtError(f"{graph} engine: cannot bind input '{name}'")
        for name, b in outputs.items():
            if not ctx.set_tensor_address(name, b.ptr):
                raise ViewrtError(f"{graph} engine: cannot bind output '{name}'")
        if not ctx.execute_async_v3(self._stream.handle):
            raise ViewrtError(f"{graph} engine: execution failed")
