"""The runner interface every backend implements, and the buffers it works on.

A backend is a context manager (activate / deactivate) that runs the two graphs of an
export. The base class validates every host input against the manifest (name, dtype,
shape, dynamic bounds, finiteness) and resolves output shapes; memory comes from the shared
implementations in memory.py; subclasses implement only ``_run`` (bind buffers by address and
execute) and their own set-up.
Buffers are token-major ``[1, T, H, Dh]`` regions, so a run of tokens is one pointer
plus a length: that is what makes writing a cache slot and reading the valid prefix
zero-copy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from viewrt.contract.manifest import Manifest, check_graph_io
from viewrt.errors import ViewrtError


@dataclass
class Buffer:
    """A contiguous region of backend memory holding one tensor.

    Attributes:
        ptr: address (host or device). shape/dtype: what it holds. device: "cpu" or
        "cuda:N". host: the numpy array when the memory is host memory.
    """

    ptr: int
    shape: tuple
    dtype: np.dtype
    device: str
    host: np.ndarray | None = None
    owner: object = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def tokens(self, start: int, stop: int) -> Buffer:
        """The sub-buffer of tokens ``[start, stop)`` along axis 1 (requires batch 1)."""
        if self.shape[0] != 1 or not 0 <= start <= stop <= self.shape[1]:
            raise ValueError(f"bad token range [{start}, {stop}) of {self.shape}")
        row = int(np.prod(self.shape[2:])) * np.dtype(self.dtype).itemsize
        host = None if self.host is None else self.host[:, start:stop]
        return Buffer(
            self.ptr + start * row,
            (1, stop - start, *self.shape[2:]),
            self.dtype,
            self.device,
            host,
            self,
        )

    def view(self, shape: tuple) -> Buffer:
        """The same bytes seen as another shape of as many elements."""
        if int(np.prod(shape)) != int(np.prod(self.shape)):
            raise ValueError(f"cannot view {self.shape} as {tuple(shape)}")
        host = None if self.host is None else self.host.reshape(shape)
        return Buffer(self.ptr, tuple(shape), self.dtype, self.device, host, self)


class Backend:
    """Base runner over an export's graphs (the family's, as the manifest lists them).

    Subclasses implement ``activate`` (which sets ``self.memory``), ``deactivate`` and
    ``_run``; memory is shared (runtime/backends/memory.py).
    """

    name = "base"
    options: tuple[str, ...] = ("device",)  # keyword options open()/create() may pass
    materializes_attention = True  # MatMul -> Softmax -> MatMul holds the scores in memory

    def __init__(self, manifest: Manifest, device: str = "cpu"):
        self.manifest, self.device = manifest, device
        self._inputs = {g: {t.name: t for t in info.inputs} for g, info in manifest.graphs.items()}
        self._outputs = {g: info.outputs for g, info in manifest.graphs.items()}
        ranges = manifest.dynamic_ranges()
        self.bounds = {d: r[2] for d, r in ranges.items()}  # largest value of each dynamic dim
        self.active = False

    @property
    def capacity(self) -> int:
        """Cache entries the reader graph accepts at once on this backend (its bound on the
        cache's token axis, in whole entries)."""
        geo = self.manifest.cache
        return self.bounds[geo.dim] // geo.tokens_per_entry

    @property
    def max_views(self) -> int:
        """:attr:`capacity` of a view-slot model, in views."""
        return self.capacity

    def info(self) -> dict:
        """What this backend runs with (name, device, precision in use, ...)."""
        return {"backend": self.name, "device": self.device, "precision": self.manifest.precision}

    def check_io(
        self,
        graph: str,
        inputs: list[tuple[str, str, tuple]],
        outputs: list[tuple[str, str, tuple]],
        source: str,
    ) -> None:
        """Check a graph's declared inputs/outputs against the manifest (see
        :func:`viewrt.contract.manifest.check_graph_io`). Raises ViewrtError."""
        check_graph_io(self.manifest, graph, "inputs", inputs, source)
        check_graph_io(self.manifest, graph, "outputs", outputs, source)

    # -- context manager ------------------------------------------------------------------
    def __enter__(self):
        if not self.active:
            self.activate()
            self.active = True
        return self

    def __exit__(self, *exc):
        if self.active:
            self.deactivate()
            self.active = False

    def activate(self) -> None:
        raise NotImplementedError

    def deactivate(self) -> None:
        raise NotImplementedError

    # -- memory: shared implementations (memory.HostMemory, memory.CudaMemory) ---------------
    # A subclass sets ``self.memory`` in activate(); these route to it.
    memory = None
    address_alignment = 1  # bytes every bound address must be a multiple of (TensorRT: 256)

    def alloc(self, shape: tuple, dtype) -> Buffer:
        """Zero-filled buffer on this backend's device, allocated once."""
        return self.memory.alloc(shape, dtype)

    def copy(self, dst: Buffer, src: Buffer) -> None:
        """Device-to-device copy of equal-sized buffers."""
        self.memory.copy(dst, src)

    def upload(self, array: np.ndarray, staging: Buffer | None = None) -> Buffer:
        """Make a host array readable by the graphs (host memory: no copy)."""
        return self.memory.upload(array, staging)

    def download(self, buf: Buffer) -> np.ndarray:
        """A host copy of a buffer's contents."""
        return self.memory.download(buf)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on the CPU)."""
        if self.memory is not None:
            self.memory.synchronize()

    def _run(self, graph: str, inputs: dict[str, Buffer], outputs: dict[str, Buffer]) -> None:
        raise NotImplementedError

    # -- checked entry points -------------------------------------------------------------
    def check_input(self, graph: str, name: str, shape: tuple, dtype) -> None:
        if name not in self._inputs[graph]:
            raise ViewrtError(
                f"{graph}: unknown input '{name}'; expected {sorted(self._inputs[graph])}"
            )
        self._inputs[graph][name].check(tuple(shape), dtype, self.bounds)

    def run(self, graph: str, inputs: dict[str, Buffer], outputs: dict[str, Buffer]) -> None:
        """Run a graph on buffers already on the device (the cache path).

        Raises: ViewrtError when names, shapes or dtypes do not match the manifest.
        """
        if not self.active:
            raise ViewrtError(f"{self.name} backend is not active (use it as a context manager)")
        missing = set(self._inputs[graph]) - set(inputs)
        if missing:
            raise ViewrtError(f"{graph}: missing inputs {sorted(missing)}")
        for name, buf in inputs.items():
            self.check_input(graph, name, buf.shape, buf.dtype)
        want_out = {t.name for t in self._outputs[graph]}
        if set(outputs) != want_out:
            raise ViewrtError(f"{graph}: outputs {sorted(outputs)}, expected {sorted(want_out)}")
        self._run(graph, inputs, outputs)

    def output_shape(self, graph: str, name: str, inputs: dict[str, tuple]) -> tuple:
        """Resolve an output's dynamic dims from the input shapes."""
        dims = {}
        for iname, shape in inputs.items():
            for got, want in zip(shape, self._inputs[graph][iname].shape):
                if isinstance(want, str):
                    dims[want] = got
        (info,) = [t for t in self._outputs[graph] if t.name == name]
        return tuple(dims[d] if isinstance(d, str) else d for d in info.shape)

    def infer(self, graph: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host arrays in, host arrays out (allocates per call; for parity checks).

        Raises: ViewrtError on unknown/missing inputs, wrong shape/dtype, NaN or inf.
        """
        for name, arr in feed.items():
            self.check_input(graph, name, np.shape(arr), np.asarray(arr).dtype)
            if not np.isfinite(arr).all():
                raise ViewrtError(f"input '{name}': contains NaN or inf")
        inputs = {n: self.upload(np.ascontiguousarray(a)) for n, a in feed.items()}
        shapes = {n: np.shape(a) for n, a in feed.items()}
        outputs = {
            t.name: self.alloc(self.output_shape(graph, t.name, shapes), t.dtype)
            for t in self._outputs[graph]
        }
        self.run(graph, inputs, outputs)
        self.synchronize()
        return {n: self.download(b) for n, b in outputs.items()}


class Timer:
    """Accumulates wall time per component of one runtime call (synchronizing the device
    before reading the clock, so GPU work is attributed to the right component)."""

    def __init__(self, backend: Backend):
        self.backend, self.times = backend, {}
        self._t = time.perf_counter()

    def lap(self, component: str, sync: bool = False) -> None:
        if sync:
            self.backend.synchronize()
        now = time.perf_counter()
        self.times[component] = self.times.get(component, 0.0) + (now - self._t) * 1e3
        self._t = now

    def result(self) -> dict[str, float]:
        out = {k: round(v, 4) for k, v in self.times.items()}
        out["total"] = round(sum(self.times.values()), 4)
        return out
