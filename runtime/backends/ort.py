"""ONNX Runtime backend: CPU everywhere, CUDA and TensorRT execution providers where the
installed onnxruntime has them. Every run goes through IO binding to buffer addresses, so
the encoder writes into a cache slot and the decoder reads the cache prefix in place.
"""

from __future__ import annotations

from viewrt.contract.manifest import Manifest
from viewrt.errors import ViewrtError
from viewrt.runtime.backends.base import Backend, Buffer
from viewrt.runtime.backends.memory import HostMemory

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


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
        if not isinstance(device, str):
            raise ViewrtError(
                f"device must be a string such as 'cpu' or 'cuda:0', got {type(device).__name__}"
            )
        kind, _, idx = device.partition(":")
        if kind not in _PROVIDERS or (idx and not idx.isdigit()):
            raise ViewrtError(
                f"unknown ONNX Runtime device {device!r}; expected cpu, cuda[:N] or tensorrt[:N]"
            )
        self.kind, self.device_id = kind, int(idx or 0)
        super().__init__(manifest, "cpu" if kind == "cpu" else f"cuda:{self.device_id}")
        # On the CPU, the export's MultiHeadAttention decoder variant (export/ort_mha.py), where it
        # has one: ONNX Runtime's flash attention, no score matrix. The TensorRT EP fuses the plain one.
        self.decoder_variant = (
            manifest.variant("decoder", "onnxruntime-cpu")
            if kind == "cpu" and fused_attention
            else None
        )
        self.materializes_attention = kind != "tensorrt" and self.decoder_variant is None
        self.threads = threads

    def activate(self) -> None:
        import onnxruntime as ort

        wanted = _PROVIDERS[self.kind]
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
        if self.threads:
            opts.intra_op_num_threads = self.threads
        self.sessions = {}
        for g in ("encoder", "decoder"):
            providers = [
                (p, self._provider_options(p, g)) if p != "CPUExecutionProvider" else p
                for p in wanted
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
        if self.kind == "cpu":
            self.memory = HostMemory()
        else:
            from viewrt.runtime.backends.memory import CudaMemory

            self.memory = CudaMemory(self.device_id)

    def _provider_options(self, provider: str, graph: str) -> dict:
        """Options of a GPU execution provider. For the TensorRT EP: one optimization
        profile from the manifest's dynamic axes (past tokens 1 view .. max views, targets
        1 .. max targets, tuned for the maximum), no precision flag (``trt_fp16_enable``
        builds weakly typed; the export's precision is in the graph, so the EP builds it
        strongly typed), an engine cache keyed by the graph's sha256 (a subfolder per
        checksum: re-exported weights never meet a stale engine) and a timing cache, both
        next to the export."""
        opts = {"device_id": self.device_id}
        if provider != "TensorrtExecutionProvider":
            return opts
        m = self.manifest
        dims = m.dynamic_ranges()  # {dim: (min, opt, max)}
        lo, hi = [], []
        for t in m.tensors(graph, "inputs"):
            if any(isinstance(d, str) for d in t.shape):
                lo.append(
                    f"{t.name}:"
                    + "x".join(str(dims[d][0] if isinstance(d, str) else d) for d in t.shape)
                )
                hi.append(
                    f"{t.name}:"
                    + "x".join(str(dims[d][2] if isinstance(d, str) else d) for d in t.shape)
                )
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
        if lo:
            opts.update(
                {
                    "trt_profile_min_shapes": ",".join(lo),
                    "trt_profile_opt_shapes": ",".join(hi),
                    "trt_profile_max_shapes": ",".join(hi),
                }
            )
        return opts

    def info(self) -> dict:
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
        dev = "cpu" if self.kind == "cpu" else "cuda"
        for name, b in inputs.items():
            binding.bind_input(name, dev, self.device_id, b.dtype, list(b.shape), b.ptr)
        for name, b in outputs.items():
            binding.bind_output(name, dev, self.device_id, b.dtype, list(b.shape), b.ptr)
        self.memory.synchronize()  # copies queued on our stream precede the run
        session.run_with_iobinding(binding)
