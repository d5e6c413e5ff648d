"""A model family's side of the contract, declared in one place.

A family declares its manifest header fields, its graphs (a list), each graph's tensor
signature (names, dtypes, dims, dynamic axes), the ranges of its dynamic dimensions, its
cache geometry and its memory kind. Everything else derives from that declaration:

- the manifest writer and loader (:mod:`viewrt.contract.manifest`): which header fields
  exist and their bounds, which graphs, the tensor lists checked against the header;
- the backends' checks against the graphs at ``open()`` (through the manifest);
- the export spec's graph signatures and dummy inputs (:mod:`viewrt.export.spec`);
- the TensorRT profiles and the ONNX Runtime TensorRT-EP profiles (:meth:`ranges`);
- the memory arithmetic (:class:`CacheGeometry`, :mod:`viewrt.contract.estimate`);
- the runtime's memory (``memory``: view slots or a token window, runtime/kv/).

The one opt rule (TensorRT optimization profiles): every dynamic dimension is tuned for its
maximum, except the cache's token axis, tuned for half the cache (whole entries, at least
one): a session's cache fills over time, so half full is the middle of its life, and the
other dimensions (targets per call) are used at their maximum by the runtime.

A new family is one module under ``viewrt/contract/families/`` (a :class:`FamilyContract`
subclass) plus one row in ``viewrt.contract.families.FAMILIES``.
"""

from __future__ import annotations

from dataclasses import dataclass

import viewrt.contract.names as N
from viewrt.contract.tensors import GraphSignature, TensorInfo
from viewrt.errors import ViewrtError

# Memory kinds (manifest "memory"): how the runtime keeps the K/V a family caches.
VIEW_SLOTS = "view-slots"  # position-free cross-attention K/V per view; exact removal by slot move
TOKEN_WINDOW = "token-window"  # causal self-attention K/V at absolute positions; window eviction
MEMORY_KINDS = (VIEW_SLOTS, TOKEN_WINDOW)


@dataclass(frozen=True)
class GraphDecl:
    """One graph of a family: its name in the manifest, its ONNX file, what it does."""

    name: str
    file: str
    doc: str = ""

    @property
    def engine_file(self) -> str:
        """The TensorRT engine ``viewrt build`` writes for this graph."""
        return f"{self.name}.engine"


@dataclass(frozen=True)
class CacheGeometry:
    """What the runtime's K/V memory holds, derived from a manifest header.

    Attributes:
        memory: the memory kind (:data:`VIEW_SLOTS` or :data:`TOKEN_WINDOW`).
        entry: what one cache entry is ("view", "frame"), for messages.
        tokens_per_entry: tokens one entry adds to every cached layer.
        capacity: entries the cache holds at most (the export's).
        n_layers: layers that keep K/V (one K and one V buffer each).
        n_heads, head_dim: the K/V layout ``[1, tokens, n_heads, head_dim]``.
        writer: the graph whose ``present_*`` outputs are written into the cache.
        reader: the graph whose ``past_*`` inputs read the cache's valid prefix.
        dim: the dynamic dimension (dim_param) of the reader's cache token axis.
        retain_tokens: token window only: the first tokens of an evicted entry that stay
            (read through the reader's ``retained_*`` inputs); 0: none.
        max_positions: token window only: entries a stream may commit before a reset
            (the model's largest absolute position + 1).
    """

    memory: str
    entry: str
    tokens_per_entry: int
    capacity: int
    n_layers: int
    n_heads: int
    head_dim: int
    writer: str
    reader: str
    dim: str
    retain_tokens: int = 0  # token window: tokens an evicted entry keeps (its first ones)
    max_positions: int = 0  # token window: absolute positions a stream may reach

    def bytes_per_entry(self, itemsize: int) -> int:
        """Bytes of K and V over all cached layers for one entry:
        ``n_layers * 2 * tokens_per_entry * n_heads * head_dim * itemsize``."""
        return self.n_layers * 2 * self.tokens_per_entry * self.n_heads * self.head_dim * itemsize

    def to_dict(self, itemsizes: dict[str, int]) -> dict:
        """The manifest's ``cache`` record; ``bytes_per_entry`` per precision name."""
        return {
            "memory": self.memory,
            "entry": self.entry,
            "tokens_per_entry": self.tokens_per_entry,
            "capacity": self.capacity,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "head_dim": self.head_dim,
            "writer": self.writer,
            "reader": self.reader,
            "dim": self.dim,
            "retain_tokens": self.retain_tokens,
            "max_positions": self.max_positions,
            "layout": N.KV_LAYOUT,
            "bytes_per_entry": {p: self.bytes_per_entry(i) for p, i in itemsizes.items()},
        }


class FamilyContract:
    """Base of a family declaration. Subclasses set the class attributes and implement
    :meth:`signatures`, :meth:`cache` and :meth:`dim_limits`; the rest derives.

    Attributes:
        name: the manifest's ``family``.
        memory: the memory kind its cache needs.
        header_ints: integer header fields and the smallest value each may take.
        graphs: its graphs, in export order.
        capacity_field: the header field holding the cache capacity (for messages).
    """

    name: str = ""
    memory: str = VIEW_SLOTS
    capacity_field: str = ""  # the header field that holds the cache capacity
    header_ints: dict[str, int] = {}
    graphs: tuple[GraphDecl, ...] = ()

    # -- to implement ----------------------------------------------------------------------
    def signatures(self, header: dict, kv_dtype: str) -> dict[str, GraphSignature]:
        """Each graph's inputs and outputs for this header and cache dtype."""
        raise NotImplementedError

    def cache(self, header: dict) -> CacheGeometry:
        """The cache geometry for this header."""
        raise NotImplementedError

    def dim_limits(self, header: dict) -> dict[str, tuple[int, int]]:
        """``{dim: (min, max)}`` of every dynamic dimension but the cache's token axis."""
        raise NotImplementedError

    def check_header(self, header: dict) -> list[str]:
        """Problems with the header's derived values (one message each; none by default)."""
        return []

    def side_caches(self, header: dict) -> dict[str, CacheGeometry]:
        """Caches besides :meth:`cache` that the runtime keeps (e.g. gct-stream's camera
        head: one token per frame, append-only, its own K/V roles), by name; none by
        default. The manifest records them (``side_caches``)."""
        return {}

    def example_sizes(self, header: dict) -> dict[str, int]:
        """A size of each dynamic dimension for dummy export inputs: inside its range and
        not 1 (torch.export specializes a dimension seen as 1)."""
        geo = self.cache(header)
        sizes = {d: max(lo, min(hi, 2)) for d, (lo, hi) in self.dim_limits(header).items()}
        sizes[geo.dim] = min(3, max(2, geo.capacity)) * geo.tokens_per_entry
        return sizes

    # -- derived ---------------------------------------------------------------------------
    @property
    def graph_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.graphs)

    def graph(self, name: str) -> GraphDecl:
        """The declaration of graph ``name``. Raises ViewrtError for another name."""
        for g in self.graphs:
            if g.name == name:
                return g
        raise ViewrtError(
            f"family {self.name!r} has no graph {name!r} (it has {', '.join(self.graph_names)})"
        )

    def ranges(
        self,
        header: dict,
        capacity: int | None = None,
        limits: dict[str, int] | None = None,
        opt: dict[str, int] | None = None,
    ) -> dict[str, tuple[int, int, int]]:
        """``{dim: (min, opt, max)}`` of every dynamic dimension: the one source of TensorRT
        profiles, ONNX Runtime TensorRT-EP profiles and the backends' input bounds.

        Args:
            header: the manifest header.
            capacity: cache entries to admit (1..the export's; default the export's).
            limits: ``{dim: max}`` for other dimensions (default their declared maximum).
            opt: ``{dim: value}`` overriding the module's opt rule, inside ``[min, max]``.
        Raises:
            ViewrtError: a count out of range, or an unknown dimension name.
        """
        geo = self.cache(header)
        cap = geo.capacity if capacity is None else capacity
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= geo.capacity:
            raise ViewrtError(
                f"the cache admits 1..{geo.capacity} {geo.entry}s (the export's), got {cap}"
            )
        T = geo.tokens_per_entry
        out = {geo.dim: (T, max(1, cap // 2) * T, cap * T)}
        declared = self.dim_limits(header)
        for d, hi in (limits or {}).items():
            if d not in declared:
                raise ViewrtError(
                    f"unknown dynamic dimension {d!r}; expected one of {', '.join(declared)}"
                )
            if isinstance(hi, bool) or not isinstance(hi, int) or hi < declared[d][0]:
                raise ViewrtError(f"{d}: expected an integer >= {declared[d][0]}, got {hi!r}")
        for d, (lo, hi) in declared.items():
            hi = (limits or {}).get(d, hi)
            out[d] = (lo, hi, hi)
        for d, v in (opt or {}).items():
            if d not in out:
                raise ViewrtError(
                    f"unknown dynamic dimension {d!r}; expected one of {', '.join(out)}"
                )
            lo, _, hi = out[d]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ViewrtError(f"opt {d}: expected {lo}..{hi}, got {v!r}")
            out[d] = (lo, v, hi)
        return out

    def check_signatures(self, graphs: dict, header: dict, kv_dtype: str, where) -> None:
        """Raise ViewrtError unless the recorded graphs' tensor lists are the ones this
        header implies (name, dtype, shape of every tensor, in order)."""
        want = self.signatures(header, kv_dtype)
        for gname, sig in want.items():
            g = graphs[gname]
            for kind in ("inputs", "outputs"):
                got, expected = getattr(g, kind), getattr(sig, kind)
                if len(got) != len(expected):
                    raise ViewrtError(
                        f"{where}: {gname} has {len(got)} {kind}, expected {len(expected)} for "
                        + ", ".join(f"{k} {header[k]}" for k in self.header_ints)
                    )
                for i, (t, e) in enumerate(zip(got, expected)):
                    for fld, have, need in (
                        ("name", t.name, e.name),
                        ("dtype", t.dtype, e.dtype),
                        ("shape", tuple(t.shape), tuple(e.shape)),
                    ):
                        if have != need:
                            raise ViewrtError(
                                f"{where}: {gname} {kind[:-1]} {i} {fld}: manifest has {have!r}, "
                                f"its header ({', '.join(self.header_ints)}, kv_dtype) implies {need!r}"
                            )


def kv_tensors(role: str, n_layers: int, kv_dtype: str, shape: tuple) -> tuple[TensorInfo, ...]:
    """The K/V tensors of one role ("present" or "past") for every layer, in graph order
    (key, value per layer), named by :func:`viewrt.contract.names.kv_name`."""
    return tuple(TensorInfo(n, kv_dtype, shape, N.KV_LAYOUT) for n in N.kv_names(role, n_layers))
