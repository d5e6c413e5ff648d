"""OpenVINO backend: the same encoder.onnx and decoder.onnx on OpenVINO's CPU plugin.

The CPU plugin fuses the graphs' MatMul -> Softmax -> MatMul attention into one kernel that
never holds the score matrix, and computes in bf16 where the CPU has AMX or AVX512-BF16
(its default), else in f32. Both graphs are compiled with a latency hint; the dynamic
axes are bounded by the manifest (past tokens 1..max_views*T, targets 1..max_targets).

Memory is plain numpy host memory, shared with OpenVINO without copies: every buffer is
bound to an infer request as an ``ov.Tensor(array, shared_memory=True)``, so the encoder
writes into the cache slot and the decoder reads the cache prefix in place. The tensors
over backend-allocated memory (cache slots and prefixes, the image buffer) are made once
per (address, shape) and reused; the infer requests are made once at activation.
"""

from __future__ import annotations

import numpy as np

from viewrt.contract.manifest import Manifest
from viewrt.errors import ViewrtError
from viewrt.runtime.backends.base import Backend, Buffer
from viewrt.runtime.backends.memory import HostMemory

# openvino is imported lazily (_import_ov): `import viewrt.runtime` works without it.

PRECISIONS = ("f32", "bf16", "f16")  # INFERENCE_PRECISION_HINT values a caller may force
_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}  # OpenVINO's names -> the project's


def _import_ov():
    try:
        import openvino as ov
    except ImportError:
        raise ViewrtError("OpenVINO is not installed (pip install 'viewrt[openvino]')") from None
    return ov


class _HostMemory:
    """A zero-filled host array allocated once by the backend, with the shared-memory
    ov.Tensor views made over it so far, by (address, shape)."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.tensors: dict[tuple, object] = {}


def _declared(ports) -> list[tuple[str, str, tuple]]:
    """(name, numpy dtype name, shape) of each port as the ONNX file declares it (None for a
    dynamic dimension; OpenVINO keeps no dim_param names)."""
    return [
        (
            p.get_any_name(),
            p.get_element_type().to_dtype().name,
            tuple(d.get_length() if d.is_static else None for d in p.get_partial_shape()),
        )
        for p in ports
    ]


class _OvHostMemory(HostMemory):
    """memory.HostMemory whose buffers carry the ov.Tensor views made over them (_HostMemory)."""

    def alloc(self, shape: tuple, dtype) -> Buffer:
        buf = super().alloc(shape, dtype)
        buf.owner = _HostMemory(buf.host)
        return buf


class OpenVinoBackend(Backend):
    """Runs encoder.onnx and decoder.onnx with OpenVINO on the CPU.

    Args:
        manifest: the export's manifest.
        device: "cpu" (OpenVINO's CPU plugin).
        inference_precision: OpenVINO's compute precision (INFERENCE_PRECISION_HINT, not
            the graph precision): None: OpenVINO's default for this CPU (bf16 with AMX or
            AVX512-BF16, else f32); or "f32", "bf16", "f16" to force it. Forcing bf16/f16 on
            a CPU without them is a slow emulation.
        threads: inference threads per graph (default: OpenVINO's choice).
    Attributes (after activate): ``precision``: the inference precision the compiled
        graphs report, in OpenVINO's names ("f32", "bf16", "f16"); ``info()`` gives it in
        the project's ("fp32", "bf16", "fp16").
    Raises: ViewrtError for another device or an unknown precision; on activate, when
        OpenVINO is missing or cannot read or compile a graph, or the graph's inputs do
        not match the manifest.
    """

    name = "openvino"
    options = ("device", "inference_precision", "threads")
    materializes_attention = False  # the CPU plugin fuses MatMul -> Softmax -> MatMul

    def __init__(
        self,
        manifest: Manifest,
        device: str = "cpu",
        inference_precision: str | None = None,
        threads: int | None = None,
    ):
        if device != "cpu":
            raise ViewrtError(f"the OpenVINO backend runs on the CPU, got device {device!r}")
        if inference_precision is not None and inference_precision not in PRECISIONS:
            raise ViewrtError(
                f"OpenVINO inference_precision must be one of {', '.join(PRECISIONS)} or None (its default), got {inference_precision!r}"
            )
        if threads is not None and threads < 1:
            raise ViewrtError(f"threads must be >= 1, got {threads}")
        super().__init__(manifest, "cpu")
        self.requested_precision, self.threads = inference_precision, threads
        self.precision: str | None = None
        self.requests: dict = {}

    def activate(self) -> None:
        self.memory = _OvHostMemory()
        ov = _import_ov()
        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if self.requested_precision is not None:
            config["INFERENCE_PRECISION_HINT"] = self.requested_precision
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        self.compiled, self.requests, precisions = {}, {}, set()
        for g in self.manifest.graphs:
            path = self.manifest.path(g)
            try:
                model = core.read_model(str(path))
            except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
                raise ViewrtError(
                    f"{path}: OpenVINO cannot read it ({str(e).splitlines()[0]})"
                ) from None
            self.check_io(
                g, _declared(model.inputs), _declared(model.outputs), self.manifest.graphs[g].file
            )
            model.reshape(self._bounded_shapes(g, model, ov))
            outs = {n for p in model.outputs for n in p.get_names()}
            if not {t.name for t in self._outputs[g]} <= outs:
                raise ViewrtError(
                    f"{path}: outputs {sorted(outs)} do not match the manifest's {sorted(t.name for t in self._outputs[g])}"
                )
            try:
                compiled = core.compile_model(model, "CPU", config)
            except Exception as e:  # noqa: BLE001
                raise ViewrtError(
                    f"{path}: OpenVINO cannot compile it for the CPU ({str(e).splitlines()[0]})"
                ) from None
            precisions.add(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
            self.compiled[g], self.requests[g] = compiled, compiled.create_infer_request()
        self.precision = "/".join(sorted(precisions))
        self.version, self._ov = ov.get_version(), ov

    def _bounded_shapes(self, graph: str, model, ov) -> dict:
        """Each input's shape from the manifest, dynamic axes as ov.Dimension(1, bound)."""
        have = {n for p in model.inputs for n in p.get_names()}
        want = self._inputs[graph]
        if not set(want) <= have:
            raise ViewrtError(
                f"{self.manifest.path(graph)}: inputs {sorted(have)} do not match the manifest's {sorted(want)}"
            )
        shapes = {}
        for name, info in want.items():
            dims = [
                ov.Dimension(1, self.bounds[d]) if isinstance(d, str) else ov.Dimension(d)
                for d in info.shape
            ]
            shapes[name] = ov.PartialShape(dims)
        return shapes

    def deactivate(self) -> None:
        self.requests, self.compiled = {}, {}

    def info(self) -> dict:
        used = (
            None
            if self.precision is None
            else "/".join(_NAMES.get(p, p) for p in self.precision.split("/"))
        )
        if (
            used is not None and self.manifest.precision_row.quantized
        ):  # Q/DQ matmuls, the rest in the plugin's precision
            used = f"{self.manifest.precision}/{used}"
        return {
            **super().info(),
            "precision": used,
            "requested_precision": self.requested_precision,
            "openvino": getattr(self, "version", None),
        }

    # -- memory: the shared host implementation, whose buffers keep their ov.Tensor views
    def tensor(self, buf: Buffer):
        """The shared-memory ov.Tensor over a buffer: made once and reused for memory this
        backend allocated (a cache slot, a cache prefix); a fresh wrapper (no copy) for a
        caller's array."""
        ov = self._ov
        root = buf
        while isinstance(root.owner, Buffer):
            root = root.owner
        if not isinstance(root.owner, _HostMemory):
            return ov.Tensor(buf.host, shared_memory=True)
        key = (buf.ptr, buf.shape)
        t = root.owner.tensors.get(key)
        if t is None:
            t = root.owner.tensors[key] = ov.Tensor(buf.host, shared_memory=True)
        return t

    def _run(self, graph: str, inputs: dict[str, Buffer], outputs: dict[str, Buffer]) -> None:
        req = self.requests[graph]
        try:
            for name, b in [*inputs.items(), *outputs.items()]:
                req.set_tensor(name, self.tensor(b))
            req.infer()
        except Exception as e:  # noqa: BLE001
            raise ViewrtError(
                f"{graph}: OpenVINO inference failed ({str(e).splitlines()[0]})"
            ) from None
