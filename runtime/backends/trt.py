"""Native TensorRT backend (10.x and 11.x runtime API): engines from ``viewrt build``,
device buffers from the shared CUDA memory (memory.CudaMemory), ``set_input_shape`` /
``set_tensor_address`` / ``execute_async_v3`` on its stream. The cache lives in device memory.
TensorRT is imported through viewrt.devices (the one TensorRT import and GPU probe).
"""

from __future__ import annotations

from viewrt import devices
from viewrt.contract.manifest import Manifest
from viewrt.errors import ViewrtError
from viewrt.runtime.backends import cuda
from viewrt.runtime.backends.base import Backend, Buffer
from viewrt.runtime.backends.memory import CudaMemory


class TrtBackend(Backend):
    """Runs encoder.engine and decoder.engine.

    Args:
        manifest: the export's manifest, with the engines recorded by ``viewrt build``.
        device: "cuda[:N]".
    Raises (on activate): ViewrtError when TensorRT or the engines are missing, when the
        engines were built for another GPU or TensorRT version, or an engine's tensors
        (names, modes, dtypes, static dims) do not match the manifest.
    """

    name = "trt"
    options = ("device",)
    materializes_attention = False  # TensorRT fuses the attention pattern
    address_alignment = 256  # setTensorAddress: "The pointer must have at least 256-byte alignment"

    def __init__(self, manifest: Manifest, device: str = "cuda:0"):
        kind, _, idx = device.partition(":")
        if kind not in ("cuda", "gpu"):
            raise ViewrtError(f"the TensorRT backend runs on a CUDA device, got device {device!r}")
        self.device_id = int(idx or 0)
        super().__init__(manifest, f"cuda:{self.device_id}")
        engines = manifest.engines or {}
        for g, info in manifest.graphs.items():  # the engines' profiles narrow the bounds
            prof = (engines.get(g) or {}).get("profiles", {})
            for t in info.inputs:
                if t.name in prof:
                    for axis, dim in t.dynamic_axes.items():
                        built_max = int(prof[t.name]["max"][axis])
                        self.bounds[dim] = min(self.bounds[dim], built_max)
        self.materializes_attention = self._decoder_materializes_attention(
            engines.get(manifest.cache.reader) or {}
        )
        self.engines, self.contexts = {}, {}

    def _decoder_materializes_attention(self, built: dict) -> bool:
        """Whether the decoder engine holds attention scores in memory, judged from the
        activation memory recorded at build (``device_memory_size_v2`` at the profile's max):
        at least the scores of all targets x all cached tokens (fp32) means attention did not
        fuse (e.g. Casts around the softmax), so the renderer splits targets by its attention
        budget as it does for ONNX Runtime. Unrecorded: assume fused (TensorRT's MHA fusion)."""
        mem = built.get("device_memory_bytes")
        if mem is None:
            return False
        geo = self.manifest.cache
        queries = geo.tokens_per_entry  # per query entry (target), times every other dim's max
        for dim, bound in self.bounds.items():
            if dim != geo.dim:
                queries *= bound
        scores = queries * self.bounds[geo.dim] * geo.n_heads * 4
        return int(mem) >= scores

    def activate(self) -> None:
        trt = devices.import_tensorrt()
        m = self.manifest
        engines = m.engines or {}
        if not all(g in engines for g in m.graphs):
            raise ViewrtError(f"{m.dir}: no TensorRT engines recorded; run `viewrt build {m.dir}`")
        cuda.set_device(self.device_id)
        gpu = cuda.device_name(self.device_id)
        for g in m.graphs:
            built = engines[g]
            if built.get("tensorrt") != trt.__version__:
                raise ViewrtError(
                    f"{m.path(g, 'engine')}: built with TensorRT {built.get('tensorrt')}, this is {trt.__version__}; rebuild with `viewrt build`"
                )
            if built.get("gpu") != gpu:
                raise ViewrtError(
                    f"{m.path(g, 'engine')}: built for {built.get('gpu')}, this GPU is {gpu}; rebuild on this device"
                )
        m.verify_files([engines[g]["file"] for g in m.graphs])
        self._load_engines(trt)
        self.memory = CudaMemory(self.device_id)

    def _load_engines(self, trt) -> None:
        """Deserialize every graph's engine, check it against the manifest, make contexts."""
        m = self.manifest
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self._runtime is None:
            raise ViewrtError("TensorRT: could not create a runtime")
        for g in m.graphs:
            engine = self._runtime.deserialize_cuda_engine(m.path(g, "engine").read_bytes())
            if engine is None:
                raise ViewrtError(f"{m.path(g, 'engine')}: TensorRT could not deserialize it")
            self.check_engine(trt, g, engine)
            context = engine.create_execution_context()
            if context is None:
                raise ViewrtError(
                    f"{m.path(g, 'engine')}: could not create an execution context (out of device memory?)"
                )
            self.engines[g], self.contexts[g] = engine, context

    def check_engine(self, trt, graph: str, engine) -> None:
        """Check an engine's IO tensors against the manifest: names, input/output mode, dtype
        and every static dimension (dynamic ones must be dynamic in the engine).

        Raises: ViewrtError naming the tensor, what the manifest says and what the engine has.
        """
        m = self.manifest
        where = m.path(graph, "engine")
        want = {t.name: ("input", t) for t in m.tensors(graph, "inputs")}
        want.update({t.name: ("output", t) for t in m.tensors(graph, "outputs")})
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if set(names) != set(want):
            raise ViewrtError(
                f"{where}: tensors {sorted(names)} do not match the manifest's {sorted(want)}"
            )
        for name in names:
            mode, info = want[name]
            got_mode = (
                "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
            )
            if got_mode != mode:
                raise ViewrtError(
                    f"{where}: tensor '{name}' is an {got_mode} of the engine, the manifest has an {mode}"
                )
            dt = engine.get_tensor_dtype(name)
            got_dtype = devices.TRT_DTYPES.get(dt.name, dt.name.lower())
            if got_dtype != str(info.dtype):
                raise ViewrtError(
                    f"{where}: tensor '{name}' has dtype {got_dtype} in the engine, the manifest says {info.dtype}"
                )
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            ok = len(shape) == len(info.shape) and all(
                (d == -1) if isinstance(w, str) else d == w for d, w in zip(shape, info.shape)
            )
            if not ok:
                want_shape = tuple(-1 if isinstance(w, str) else w for w in info.shape)
                raise ViewrtError(
                    f"{where}: tensor '{name}' has shape {shape} in the engine, the manifest says {want_shape} (-1: dynamic)"
                )

    def deactivate(self) -> None:
        if self.memory is not None:
            self.memory.synchronize()  # no queued work may still use a context being released
        self.contexts, self.engines = {}, {}
        if self.memory is not None:
            self.memory.close()
            self.memory = None

    def _run(self, graph: str, inputs: dict[str, Buffer], outputs: dict[str, Buffer]) -> None:
        ctx = self.contexts[graph]
        for name, b in inputs.items():
            if not ctx.set_input_shape(name, tuple(b.shape)):
                raise ViewrtError(
                    f"{graph} engine: input '{name}' shape {tuple(b.shape)} is outside its optimization profile"
                )
            if not ctx.set_tensor_address(name, b.ptr):
                raise ViewrtError(
                    f"{graph} engine: cannot bind input '{name}' at address {b.ptr:#x} (TensorRT needs 256-byte alignment)"
                )
        for name, b in outputs.items():
            resolved = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if resolved != tuple(b.shape):
                raise ViewrtError(
                    f"{graph} engine: output '{name}' resolves to shape {resolved} for these inputs, "
                    f"the bound buffer holds {tuple(b.shape)}"
                )
            if not ctx.set_tensor_address(name, b.ptr):
                raise ViewrtError(
                    f"{graph} engine: cannot bind output '{name}' at address {b.ptr:#x} (TensorRT needs 256-byte alignment)"
                )
        if not ctx.execute_async_v3(self.memory.stream.handle):
            raise ViewrtError(f"{graph} engine: execution failed")
