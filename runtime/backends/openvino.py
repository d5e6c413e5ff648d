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

The K/V cache in bf16: where the plugin computes in bf16, an fp32 cache would be converted
to bf16 by a Reorder on every cache input at every render (and the encoder's bf16 results
back to fp32). So by default (``cache_precision=None``) a backend computing in bf16 keeps
the cache of an fp32 export in bf16: OpenVINO's PrePostProcessor sets the encoder's
``present_*`` outputs and the decoder's ``past_*`` inputs to bf16 (a Convert next to
each, which the CPU plugin removes when it computes in bf16: ``RemoveUselessBF16Convert``
in its tests; tests/runtime/test_openvino_bf16_cache.py checks the runtime model where the
CPU has bf16), and the host buffers are ``ml_dtypes.bfloat16`` arrays, bound as
``ov.Tensor(uint16 view, shape, ov.Type.bf16)``, which shares their memory. The cache
bytes halve. :meth:`OpenVinoBackend.cache_conversions` lists the conversion nodes the
compiled graphs still run on cache tensors (read from ``get_runtime_model()``).
"""

from __future__ import annotations

import numpy as np

import viewrt.contract.names as N
from viewrt.contract.manifest import Manifest
from viewrt.errors import ViewrtError
from viewrt.runtime.backends.base import Backend, Buffer
from viewrt.runtime.backends.memory import HostMemory

# openvino is imported lazily (_import_ov): `import viewrt.runtime` works without it.

PRECISIONS = ("f32", "bf16", "f16")  # INFERENCE_PRECISION_HINT values a caller may force
_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}  # OpenVINO's names -> the project's
# cache_precision values: None: bf16 where the plugin computes in bf16 and the export's cache
# is fp32, else the export's; "export": the manifest's kv_dtype; "bf16": bf16 whatever the
# compute precision (an f32 computation then converts it at every call)
CACHE_PRECISIONS = ("export", "bf16")
_CONVERSIONS = ("Reorder", "Convert")  # runtime-model node types that convert a tensor


def _bfloat16():
    """numpy's bfloat16 dtype (ml_dtypes). Raises ViewrtError when ml_dtypes is missing."""
    try:
        import ml_dtypes
    except ImportError:
        raise ViewrtError(
            "a bf16 K/V cache needs ml_dtypes (pip install 'viewrt[openvino]')"
        ) from None
    return np.dtype(ml_dtypes.bfloat16)


def _rt(node, key: str) -> str:
    """One runtime-model rt_info field of a node, as a string ('' where absent)."""
    info = node.get_rt_info()
    return info[key].astype(str) if key in info else ""


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
            AVX512-BF16, else f32); or "f32", "bf16", "f16" to force it. bf16 on a CPU
            without it is a slow emulation; a precision OpenVINO does not compile to here
            (f16 on x86 without AVX512-FP16/AMX-FP16) is refused on activate.
        threads: inference threads per graph (default: OpenVINO's choice).
        fused_attention: True (default): the CPU plugin's fused attention (its Snippets MHA
            kernel: no score matrix in memory); False: the cache reader (decoder) compiled with
            ``SNIPPETS_MODE=DISABLE``, attention as MatMul, Softmax, MatMul, whose scores the
            renderer bounds by its attention budget (targets split over calls). On a 2-core AVX512-BF16 EPYC the fused kernel slows
            down past ~48 cached views of `small` (N=64: 1274 ms against 766 unfused, bf16;
            ``python -m viewrt.runtime.backends.openvino_profile``, docs/bench/openvino/notes.md).
        cache_precision: the dtype of the K/V cache buffers: None: bf16 where the plugin
            computes in bf16 and the export's cache is fp32 (an fp32, unquantized export),
            else the export's; "export": the export's kv_dtype always; "bf16": bf16 always
            (an fp32 export; computing in f32, the plugin then converts the cache at every
            call: for parity tests and comparisons).
    Attributes (after activate): ``precision``: the inference precision the compiled
        graphs report, in OpenVINO's names ("f32", "bf16", "f16"); ``info()`` gives it in
        the project's ("fp32", "bf16", "fp16"); ``cache_dtype``: the cache buffers' numpy
        dtype (``bfloat16`` or the export's).
    Raises: ViewrtError for another device, an unknown precision or cache precision, or a
        bf16 cache asked of an export whose cache is not fp32; on activate, when OpenVINO
        (or, for a bf16 cache, ml_dtypes) is missing or cannot read or compile a graph, or
        the graph's inputs do not match the manifest.
    """

    name = "openvino"
    options = ("device", "inference_precision", "threads", "cache_precision", "fused_attention")
    materializes_attention = False  # the CPU plugin fuses MatMul -> Softmax -> MatMul

    def __init__(
        self,
        manifest: Manifest,
        device: str = "cpu",
        inference_precision: str | None = None,
        threads: int | None = None,
        cache_precision: str | None = None,
        fused_attention: bool = True,
    ):
        if device != "cpu":
            raise ViewrtError(f"the OpenVINO backend runs on the CPU, got device {device!r}")
        if inference_precision is not None and inference_precision not in PRECISIONS:
            raise ViewrtError(
                f"OpenVINO inference_precision must be one of {', '.join(PRECISIONS)} or None (its default), got {inference_precision!r}"
            )
        if threads is not None and threads < 1:
            raise ViewrtError(f"threads must be >= 1, got {threads}")
        if cache_precision is not None and cache_precision not in CACHE_PRECISIONS:
            raise ViewrtError(
                f"OpenVINO cache_precision must be one of {', '.join(CACHE_PRECISIONS)} or None (bf16 where it computes in bf16), got {cache_precision!r}"
            )
        if cache_precision == "bf16" and not _fp32_cache(manifest):
            raise ViewrtError(
                f"cache_precision='bf16' keeps an fp32 export's K/V cache in bf16; this "
                f"{manifest.precision} export's cache is {manifest.kv_dtype}"
            )
        super().__init__(manifest, "cpu")
        self.requested_precision, self.threads = inference_precision, threads
        self.cache_precision = cache_precision
        self.fused_attention = bool(fused_attention)
        self.materializes_attention = not self.fused_attention
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
        bf16_cache = _bf16_cache(core, config, self.manifest, self.cache_precision)
        self.compiled, self.requests, precisions = {}, {}, set()
        for g in self.manifest.graphs:
            model = self._read(core, g, ov)
            if bf16_cache:
                model = self._bf16_cache_io(g, model, ov)
            try:
                compiled = core.compile_model(model, "CPU", self._graph_config(g, config))
            except Exception as e:  # noqa: BLE001
                raise ViewrtError(
                    f"{self.manifest.path(g)}: OpenVINO cannot compile it for the CPU ({str(e).splitlines()[0]})"
                ) from None
            precisions.add(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
            self.compiled[g], self.requests[g] = compiled, compiled.create_infer_request()
        if self.requested_precision is not None and precisions != {self.requested_precision}:
            self.deactivate()
            raise ViewrtError(
                f"inference_precision {self.requested_precision!r}: OpenVINO compiled the graphs in "
                f"{'/'.join(sorted(precisions))} on this CPU (it does not run {self.requested_precision} here)"
            )
        if bf16_cache:
            self._use_cache_dtype(_bfloat16())
        self.precision = "/".join(sorted(precisions))
        self.version, self._ov = ov.get_version(), ov

    def _graph_config(self, graph: str, config: dict) -> dict:
        """The compile config of one graph: unfused attention (``SNIPPETS_MODE=DISABLE``) only
        for the graph that reads the cache, whose attention grows with it; the writer attends
        within one view. (OpenVINO 2026.4 also fails to compile the int8 encoder of `small`
        with Snippets disabled.)"""
        if self.fused_attention or graph != self.manifest.cache.reader:
            return config
        return {**config, "SNIPPETS_MODE": "DISABLE"}

    @classmethod
    def planned_cache_dtype(
        cls,
        manifest: Manifest,
        inference_precision: str | None = None,
        cache_precision: str | None = None,
        **_options,
    ) -> str:
        """The K/V cache's numpy dtype name these options give on this CPU ("bfloat16" or
        the export's kv_dtype), without reading a graph (for the memory estimate)."""
        ov = _import_ov()
        config = (
            {} if inference_precision is None else {"INFERENCE_PRECISION_HINT": inference_precision}
        )
        bf16 = _bf16_cache(ov.Core(), config, manifest, cache_precision)
        return "bfloat16" if bf16 else manifest.kv_dtype

    def _read(self, core, graph: str, ov):
        """A graph read, checked against the manifest, with bounded dynamic axes."""
        path = self.manifest.path(graph)
        try:
            model = core.read_model(str(path))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise ViewrtError(
                f"{path}: OpenVINO cannot read it ({str(e).splitlines()[0]})"
            ) from None
        self.check_io(
            graph,
            _declared(model.inputs),
            _declared(model.outputs),
            self.manifest.graphs[graph].file,
        )
        model.reshape(self._bounded_shapes(graph, model, ov))
        outs = {n for p in model.outputs for n in p.get_names()}
        if not {t.name for t in self._outputs[graph]} <= outs:
            raise ViewrtError(
                f"{path}: outputs {sorted(outs)} do not match the manifest's {sorted(t.name for t in self._outputs[graph])}"
            )
        return model

    def _bf16_cache_io(self, graph: str, model, ov):
        """The graph with every K/V cache input and output typed bf16 at its boundary
        (OpenVINO's PrePostProcessor: a Convert next to each, which the plugin drops when
        it computes in bf16)."""
        from openvino.preprocess import PrePostProcessor

        _bfloat16()  # fail before compiling when ml_dtypes is missing
        ppp = PrePostProcessor(model)
        for kind, port in (("inputs", ppp.input), ("outputs", ppp.output)):
            for t in self.manifest.tensors(graph, kind):
                if N.parse_kv_name(t.name):
                    port(t.name).tensor().set_element_type(ov.Type.bf16)
        return ppp.build()

    def cache_conversions(self) -> dict[str, list[tuple[str, str]]]:
        """The conversions the compiled graphs run on K/V cache tensors, from each
        ``get_runtime_model()``: ``{graph: [(cache tensor, node type), ...]}``, a Reorder or
        Convert node on the path (through Reshape/Transpose only) from a cache input to
        the first node that computes, or from the last such node to a cache output. Empty
        lists: the cache is read and written in the dtype the graphs compute in.

        Raises: ViewrtError when the backend is not active, or a runtime model does not
            name every cache tensor of its graph (OpenVINO changed its naming).
        """
        if not self.compiled:
            raise ViewrtError("the OpenVINO backend is not active (use it as a context manager)")
        return {
            g: _conversions(c.get_runtime_model(), self._cache_names(g), g)
            for g, c in self.compiled.items()
        }

    def _cache_names(self, graph: str) -> set[str]:
        return {
            t.name
            for kind in ("inputs", "outputs")
            for t in self.manifest.tensors(graph, kind)
            if N.parse_kv_name(t.name)
        }

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
            "requested_cache_precision": self.cache_precision,
            "fused_attention": self.fused_attention,
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
            return _shared(ov, buf.host)
        key = (buf.ptr, buf.shape)
        t = root.owner.tensors.get(key)
        if t is None:
            t = root.owner.tensors[key] = _shared(ov, buf.host)
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


def _bf16_cache(core, config: dict, manifest: Manifest, cache_precision: str | None) -> bool:
    """Whether the cache is kept in bf16: asked for, or (``cache_precision`` None) the
    plugin computes in bf16 with ``config`` on this CPU (its own answer, read from the Core
    once ``config`` is set on it: OpenVINO falls back to f32 where the CPU has no bf16) and
    the export's cache is fp32."""
    if cache_precision is not None:
        return cache_precision == "bf16"
    core.set_property("CPU", config)
    compute = core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    return compute == "bf16" and _fp32_cache(manifest)


def _fp32_cache(manifest: Manifest) -> bool:
    """The export keeps an fp32 K/V cache of its own numerics (an fp32 export, no Q/DQ)."""
    return manifest.np_kv_dtype == np.float32 and not manifest.precision_row.quantized


def _shared(ov, host: np.ndarray):
    """An ov.Tensor over a C-contiguous host array's memory (no copy); a bfloat16 array
    (ml_dtypes) is wrapped as its uint16 bits typed ov.Type.bf16."""
    if host.dtype.name == "bfloat16":
        return ov.Tensor(host.view(np.uint16), ov.Shape(list(host.shape)), ov.Type.bf16)
    return ov.Tensor(host, shared_memory=True)


_MOVES = ("Reshape", "Transpose", *_CONVERSIONS)  # nodes between a cache tensor and compute


def _conversions(runtime_model, names: set[str], graph: str) -> list[tuple[str, str]]:
    """Reorder/Convert nodes next to the cache tensors ``names`` in a runtime model (see
    OpenVinoBackend.cache_conversions)."""
    found, seen = [], set()
    for node in runtime_model.get_ordered_ops():
        kind, name = _rt(node, "layerType"), _rt(node, "originalLayersNames").split("/")[0]
        if name not in names or kind not in ("Input", "Output"):
            continue
        seen.add(name)
        stack = [node]
        while stack:
            n = stack.pop()
            if kind == "Input":
                nxt = [i.get_node() for o in n.outputs() for i in o.get_target_inputs()]
            else:
                nxt = [v.get_node() for v in n.input_values()]
            for m in nxt:
                t = _rt(m, "layerType")
                if t in _CONVERSIONS:
                    found.append((name, t))
                if t in _MOVES:
                    stack.append(m)
    if seen != names:
        raise ViewrtError(
            f"{graph}: the compiled graph's runtime model does not name the cache tensors "
            f"{sorted(names - seen)}; cannot tell how it binds them"
        )
    return found
