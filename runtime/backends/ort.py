"""ONNX Runtime backend: CPU everywhere, CUDA and TensorRT execution providers where the
installed onnxruntime has them. Every run goes through IO binding to buffer addresses, so
the encoder writes into a cache slot and the decoder reads the cache prefix in place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from viewrt.contract.manifest import Manifest
from viewrt.errors import ViewrtError
from viewrt.ort_kernels import exact_int8_kernel
from viewrt.runtime.backends.base import Backend, Buffer
from viewrt.runtime.backends.memory import CudaMemory, HostMemory

# onnxruntime is imported lazily (activate, unavailable): `import viewrt.runtime` works without it.

CPU_EP, CUDA_EP, TRT_EP = (
    "CPUExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
)


@dataclass(frozen=True)
class DeviceKind:
    """What a device kind of the ``device`` option ("cpu", "cuda:N", "tensorrt:N") means
    for ONNX Runtime.

    Attributes:
        providers: execution providers in order of preference (the first one must exist).
        host: buffers in host memory, bound as "cpu"; else CUDA device memory, bound as "cuda".
        fuses_attention: the provider fuses the plain MatMul -> Softmax -> MatMul attention
            (no score matrix in memory).
        decoder_variant: the export's decoder variant it runs where the export has one and
            fused attention is wanted (export/ort_mha.py), or None.
    """

    providers: tuple[str, ...]
    host: bool
    fuses_attention: bool = False
    decoder_variant: str | None = None


DEVICE_KINDS: dict[str, DeviceKind] = {
    "cpu": DeviceKind((CPU_EP,), host=True, decoder_variant="onnxruntime-cpu"),
    "cuda": DeviceKind((CUDA_EP, CPU_EP), host=False),
    "tensorrt": DeviceKind((TRT_EP, CUDA_EP, CPU_EP), host=False, fuses_attention=True),
}


def _parse_device(device) -> tuple[str, int]:
    """("cpu" | "cuda" | "tensorrt", device index) of a ``device`` option.

    Raises: ViewrtError for a non-string or an unknown device.
    """
    if not isinstance(device, str):
        raise ViewrtError(
            f"device must be a string such as 'cpu' or 'cuda:0', got {type(device).__name__}"
        )
    kind, _, idx = device.partition(":")
    if kind not in DEVICE_KINDS or (idx and not idx.isdigit()):
        raise ViewrtError(
            f"unknown ONNX Runtime device {device!r}; expected cpu, cuda[:N] or tensorrt[:N]"
        )
    return kind, int(idx or 0)


def unavailable(manifest: Manifest | None = None, device: str = "cpu", **_options) -> str | None:
    """Why ONNX Runtime cannot run on ``device`` here (the installed onnxruntime lacks the
    execution provider), or None. Loads no graph."""
    import onnxruntime as ort

    wanted = DEVICE_KINDS[_parse_device(device)[0]].providers[0]
    if wanted not in ort.get_available_providers():
        return f"onnxruntime has no {wanted} here"
    return None


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _declared(arg) -> tuple[str, str, tuple]:
    """(name, numpy dtype name, shape) of an ONNX Runtime NodeArg as the graph declares it."""
    return arg.name, _ORT_TYPES.get(arg.type, arg.type), tuple(arg.shape)


class OrtBackend(Backend):
    """Runs encoder.onnx and decoder.onnx with ONNX Runtime.

    Args:
        manifest: the export's manifest.
        device: "cpu", "cuda[:N]" (CUDA EP) or "tensorrt[:N]" (TensorRT EP).
        threads: intra-op threads (default: ONNX Runtime's choice, one per physical core).
    """

    name = "ort"
    options = ("device", "threads", "fused_attention")

    def __init__(
        self,
        manifest: Manifest,
        device: str = "cpu",
        threads: int | None = None,
        fused_attention: bool = True,
    ):
        kind, self.device_id = _parse_device(device)
        self.device_kind = DEVICE_KINDS[kind]
        super().__init__(manifest, "cpu" if self.device_kind.host else f"cuda:{self.device_id}")
        # On the CPU, the export's MultiHeadAttention decoder variant (export/ort_mha.py), where it
        # has one: ONNX Runtime's flash attention, no score matrix. The TensorRT EP fuses the plain one.
        self.decoder_variant = (
            manifest.variant("decoder", self.device_kind.decoder_variant)
            if self.device_kind.decoder_variant is not None and fused_attention
            else None
        )
        self.materializes_attention = (
            not self.device_kind.fuses_attention and self.decoder_variant is None
        )
        self.threads = threads

    def activate(self) -> None:
        import onnxruntime as ort

        wanted = self.device_kind.providers
        if wanted[0] not in ort.get_available_providers():
            raise ViewrtError(
                f"onnxruntime has no {wanted[0]} here (available: {', '.join(ort.get_available_providers())})"
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # Encoder and decoder each own a thread pool; spinning workers of the idle one steal
        # cores from the busy one. `make bench` on 2 cores, ort components, 8 targets: encode
        # 53-55 ms with spinning (at e4bc0b1), 34-36 ms without (docs/bench/summary.md).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.manifest.precision == "int8":
            exact_int8_kernel(opts)
        if self.threads:
            opts.intra_op_num_threads = self.threads
        self.sessions = {}
        for g in self.manifest.graphs:
            providers = [
                (p, self._provider_options(p, g)) if p in PROVIDER_OPTIONS else p for p in wanted
            ]
            try:
                path = (
                    self.decoder_variant
                    if g == "decoder" and self.decoder_variant is not None
                    else self.manifest.path(g)
                )
                self.sessions[g] = ort.InferenceSession(str(path), opts, providers=providers)
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
                raise ViewrtError(
                    f"{self.manifest.path(g)}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})"
                ) from None
            sess = self.sessions[g]
            source = (
                self.decoder_variant.name
                if g == "decoder" and self.decoder_variant is not None
                else self.manifest.graphs[g].file
            )
            self.check_io(
                g,
                [_declared(t) for t in sess.get_inputs()],
                [_declared(t) for t in sess.get_outputs()],
                source,
            )
        self.memory = HostMemory() if self.device_kind.host else CudaMemory(self.device_id)

    def _provider_options(self, provider: str, graph: str) -> dict:
        """Options of an execution provider for one graph (its row of PROVIDER_OPTIONS)."""
        return PROVIDER_OPTIONS[provider](self, graph)

    def info(self) -> dict:
        if "decoder" not in self.manifest.graphs:  # a family without a decoder graph
            return super().info()
        return {
            **super().info(),
            "decoder_graph": (self.decoder_variant or self.manifest.path("decoder")).name,
        }

    def deactivate(self) -> None:
        if self.memory is not None:
            self.memory.synchronize()  # queued copies finish before the sessions go
        self.sessions = {}
        if self.memory is not None:
            self.memory.close()
            self.memory = None

    def _run(self, graph: str, inputs: dict[str, Buffer], outputs: dict[str, Buffer]) -> None:
        session = self.sessions[graph]
        binding = session.io_binding()
        dev = "cpu" if self.device_kind.host else "cuda"
        for name, b in inputs.items():
            binding.bind_input(name, dev, self.device_id, b.dtype, list(b.shape), b.ptr)
        for name, b in outputs.items():
            binding.bind_output(name, dev, self.device_id, b.dtype, list(b.shape), b.ptr)
        self.memory.synchronize()  # copies queued on our stream precede the run
        session.run_with_iobinding(binding)


def _cuda_options(backend: OrtBackend, graph: str) -> dict:
    """Options of the CUDA execution provider: the device."""
    return {"device_id": backend.device_id}


def _tensorrt_options(backend: OrtBackend, graph: str) -> dict:
    """Options of the TensorRT execution provider: one optimization profile from the
    manifest's dynamic ranges (the contract's one opt rule: the cache tuned for half full,
    every other dimension for its maximum), no precision flag (``trt_fp16_enable`` builds weakly typed; the
    export's precision is in the graph, so the EP builds it strongly typed), an engine cache
    keyed by the graph's sha256 (a subfolder per checksum: re-exported weights never meet a
    stale engine) and a timing cache, both next to the export."""
    opts = {"device_id": backend.device_id}
    m = backend.manifest
    dims = m.dynamic_ranges()  # {dim: (min, opt, max)}: the contract's one opt rule
    shapes = {0: [], 1: [], 2: []}  # min, opt, max
    for t in m.tensors(graph, "inputs"):
        if t.dynamic_axes:
            for k, out in shapes.items():
                dims_k = (str(dims[d][k] if isinstance(d, str) else d) for d in t.shape)
                out.append(f"{t.name}:" + "x".join(dims_k))
    root = m.dir / "ort_trt_cache"
    sha = m.graphs[graph].sha256
    if not sha:
        raise ViewrtError(
            f"{m.dir}: the manifest records no sha256 for the {graph} graph; re-export"
        )
    # typed graphs are never down-cast (precision table); engines are keyed by the graph's content
    opts.update(
        {
            "trt_fp16_enable": m.precision_row.ort_trt_fp16,
            "trt_int8_enable": False,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(root / sha),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(root),
        }
    )
    if shapes[0]:
        opts.update(
            {
                "trt_profile_min_shapes": ",".join(shapes[0]),
                "trt_profile_opt_shapes": ",".join(shapes[1]),
                "trt_profile_max_shapes": ",".join(shapes[2]),
            }
        )
    return opts


# provider -> its options for (backend, graph name); providers not listed take none (the CPU EP)
PROVIDER_OPTIONS: dict[str, Callable[[OrtBackend, str], dict]] = {
    CUDA_EP: _cuda_options,
    TRT_EP: _tensorrt_options,
}
