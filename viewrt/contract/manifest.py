"""manifest.json: the one thing the runtime reads about a model, as typed dataclasses with
one writer (:meth:`Manifest.write`) and one loader (:func:`load_manifest`).

The manifest is written by ``viewrt export`` (and ``viewrt calib``) next to encoder.onnx
and decoder.onnx, and updated by ``viewrt build`` with its engines. Loading checks its
format, bounds every number, checks that the tensor lists agree with the header numbers
(layers, heads, tokens per view, image size) and, by default, the sha256 of every graph.
The backends then check it against the graphs themselves (:func:`check_graph_io`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

import viewrt.contract.names as N
from viewrt.checksum import sha256_file
from viewrt.contract.families import family_contract
from viewrt.contract.family import CacheGeometry, FamilyContract
from viewrt.contract.memory import host_memory_bytes
from viewrt.contract.precision import PRECISIONS, KVCache, Precision, get_kv_cache, get_precision
from viewrt.contract.tensors import GraphInfo, TensorInfo
from viewrt.errors import ViewrtError

FORMAT = "viewrt-manifest"
FORMAT_VERSION = 1


# Fields every manifest has, whatever its family (the family declares the rest).
_COMMON_INTS = {"opset": 1}
_COMMON_STRS = ("family", "preset", "precision", "kv_dtype")
_DERIVED = ("format", "format_version", "memory", "cache", "side_caches")  # recomputed on load


@dataclass
class Manifest:
    """A parsed, bounded manifest.json.

    Attributes: family, preset, config (the model config dict), precision, kv_dtype, opset;
    header (the family's integer header fields, e.g. Efficient-LVSM's image_size,
    tokens_per_view, n_layers, max_views, max_targets: each is also readable as an attribute,
    ``m.max_views``); graphs: ``{graph name: GraphInfo}`` in the family's graph order.
    Records: checkpoint, weights_sha256, cameras, validation, files (``{name: {sha256,
    size_bytes}}``), versions, engines (written by ``viewrt build``), quantization (by
    ``viewrt calib``), variants (backend-specific graphs with the same inputs and outputs,
    e.g. ``{"decoder": {"onnxruntime-cpu": {"file", "sha256", "validation"}}}``), extra
    (unknown top-level fields, kept). ``dir``: the folder it was loaded from (not written).
    Derived (never stored separately): ``contract`` (the family's declaration),
    ``memory`` (its memory kind) and ``cache`` (its cache geometry).
    """

    family: str
    preset: str
    config: dict
    precision: str
    kv_dtype: str
    opset: int
    header: dict = field(default_factory=dict)
    graphs: dict = field(default_factory=dict)
    checkpoint: str | None = None
    weights_sha256: str | None = None
    cameras: dict = field(default_factory=dict)
    validation: dict | None = None
    files: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    engines: dict | None = None
    quantization: dict | None = None
    variants: dict | None = None
    extra: dict = field(default_factory=dict)
    dir: Path | None = field(default=None, compare=False)

    def __getattr__(self, name: str):
        # header fields read as attributes (m.tokens_per_view); only called when the
        # normal lookup fails, and never for private names (copy/pickle probe those)
        header = self.__dict__.get("header")
        if name.startswith("_") or header is None or name not in header:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        return header[name]

    # -- derived ---------------------------------------------------------------------------
    @property
    def contract(self) -> FamilyContract:
        """The family's declaration. Raises ViewrtError for an unknown family."""
        return family_contract(self.family)

    @property
    def memory(self) -> str:
        """The memory kind the runtime keeps this model's K/V in (view-slots, token-window)."""
        return self.contract.memory

    @property
    def cache(self) -> CacheGeometry:
        """The cache geometry (entry tokens, capacity, layers, heads, writer/reader graphs)."""
        return self.contract.cache(self.header)

    @property
    def precision_row(self) -> Precision:
        return get_precision(self.precision)

    @property
    def kv_row(self) -> KVCache:
        """The cache dtype's row of the precision table (itemsize, scales, tolerances)."""
        return get_kv_cache(self.kv_dtype)

    @property
    def np_kv_dtype(self) -> np.dtype:
        return np.dtype(self.kv_dtype)

    @property
    def kv_bytes_per_entry(self) -> int:
        """Bytes of K and V over all cached layers for one cache entry, in the cache dtype."""
        return self.cache.bytes_per_entry(self.np_kv_dtype.itemsize)

    @property
    def kv_bytes_per_view(self) -> int:
        """:attr:`kv_bytes_per_entry` under the view family's name."""
        return self.kv_bytes_per_entry

    def tensors(self, graph: str, kind: str) -> tuple[TensorInfo, ...]:
        """Inputs or outputs of a graph, in graph order."""
        g = self.graphs[graph]
        return g.inputs if kind == "inputs" else g.outputs

    @property
    def present_names(self) -> list[str]:
        """K/V outputs of the cache's writer graph, in graph order."""
        return [
            t.name
            for t in self.graphs[self.cache.writer].outputs
            if (N.parse_kv_name(t.name) or ("",))[0] == "present"
        ]

    @property
    def past_names(self) -> list[str]:
        """K/V inputs of the cache's reader graph paired with :attr:`present_names` by name
        (layer, kind), never by position."""
        declared = {t.name for t in self.graphs[self.cache.reader].inputs}
        return [n for n in (N.paired_name(p) for p in self.present_names) if n in declared]

    @property
    def view_input(self) -> str:
        """The writer graph's first input (the new view or frame)."""
        return self.graphs[self.cache.writer].inputs[0].name

    @property
    def target_input(self) -> str:
        """The reader graph's first input (what is queried: target rays)."""
        return self.graphs[self.cache.reader].inputs[0].name

    @property
    def image_output(self) -> str:
        """The reader graph's first output."""
        return self.graphs[self.cache.reader].outputs[0].name

    def dynamic_ranges(
        self,
        capacity: int | None = None,
        limits: dict[str, int] | None = None,
        opt: dict[str, int] | None = None,
    ) -> dict[str, tuple[int, int, int]]:
        """``{dim_name: (min, opt, max)}`` of each dynamic dimension, by the family's
        declaration and the contract's one opt rule
        (:meth:`viewrt.contract.family.FamilyContract.ranges`).

        Args:
            capacity: cache entries (views, frames) to admit, 1..the export's.
            limits: ``{dim: max}`` of other dynamic dimensions (e.g. ``num_targets``).
            opt: ``{dim: value}`` overriding the opt rule.
        Raises: ViewrtError outside the export's range or for an unknown dimension.
        """
        return self.contract.ranges(self.header, capacity, limits, opt)

    def variant(self, graph: str, name: str) -> Path | None:
        """Path of a backend-specific variant of a graph, None where there is none.

        Raises: ViewrtError when the variant is recorded but its file is missing or does
            not match its checksum.
        """
        rec = ((self.variants or {}).get(graph) or {}).get(name)
        if not rec:
            return None
        self.verify_files([rec["file"]])
        return (self.dir or Path(".")) / rec["file"]

    def path(self, graph: str, suffix: str = "onnx") -> Path:
        """Path of a graph's ONNX file or (suffix 'engine') its TensorRT engine."""
        base = self.dir or Path(".")
        if suffix == "onnx":
            return base / self.graphs[graph].file
        engines = self.engines or {}
        if graph not in engines:
            raise ViewrtError(
                f"{base}: no TensorRT engines recorded in the manifest; run `viewrt build {base}`"
            )
        return base / engines[graph]["file"]

    # -- (de)serialization -----------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"format": FORMAT, "format_version": FORMAT_VERSION}
        for f in fields(self):
            if f.name in ("dir", "extra", "header"):
                continue
            v = getattr(self, f.name)
            d[f.name] = {k: g.to_dict() for k, g in v.items()} if f.name == "graphs" else v
        d.update(self.header)  # header fields are top-level keys
        geo = self.cache
        sizes = {p: row.itemsize for p, row in PRECISIONS.items()}
        d["memory"] = geo.memory
        d["cache"] = geo.to_dict(sizes)
        side = self.contract.side_caches(self.header)
        if side:  # e.g. gct-stream's camera-head cache
            d["side_caches"] = {name: g.to_dict(sizes) for name, g in side.items()}
        d[f"kv_bytes_per_{geo.entry}"] = {p: geo.bytes_per_entry(i) for p, i in sizes.items()}
        d.update(self.extra)
        return d

    def write(self, directory: str | Path | None = None) -> Path:
        """Write ``manifest.json`` atomically (a temporary file, then a rename).

        Raises: ViewrtError when the folder cannot be written.
        """
        directory = Path(directory) if directory is not None else self.dir
        path = directory / N.MANIFEST_FILE
        try:
            fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=directory)
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=1)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # readable like the graphs (mkstemp makes 0600)
            os.replace(tmp, path)
        except OSError as e:
            raise ViewrtError(f"{path}: cannot write the manifest ({e.strerror or e})") from None
        return path

    @classmethod
    def from_dict(cls, data: dict, directory: Path | None = None) -> Manifest:
        """Parse and bound a manifest dict: the family's declaration says which header
        fields and graphs it has. Raises ViewrtError naming the bad field."""
        where = directory / N.MANIFEST_FILE if directory is not None else "manifest"
        known = {f.name for f in fields(cls)} - {"dir", "extra", "header"}
        try:
            contract = family_contract(data["family"])
            kw = {k: data[k] for k in known if k in data}
            header_keys = list(contract.header_ints)
            for k in [*_COMMON_INTS, *header_keys]:
                v = data[k]
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ViewrtError(f"{where}: {k} must be an integer, got {v!r}")
            memory = data.get("memory", contract.memory)
            if memory != contract.memory:
                raise ViewrtError(
                    f"{where}: memory {memory!r}, but family {contract.name!r} keeps its K/V "
                    f"as {contract.memory!r}"
                )
            kw["header"] = {k: data[k] for k in header_keys}
            kw["graphs"] = {g: GraphInfo.from_dict(data["graphs"][g]) for g in contract.graph_names}
            for k in (*_COMMON_STRS, "config"):
                kw[k] = data[k]
            skip = known | set(header_keys) | set(_DERIVED)
            extra = {
                k: v for k, v in data.items() if k not in skip and not k.startswith("kv_bytes_per_")
            }
            m = cls(**kw, extra=extra, dir=directory)
        except ViewrtError:
            raise
        except KeyError as e:
            raise ViewrtError(f"{where}: malformed manifest: missing field {e.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise ViewrtError(f"{where}: malformed manifest ({type(e).__name__}: {e})") from None
        m.check_bounds(where)
        m._check_derived(data, where)
        m._check_config(data, where)
        return m

    def _check_config(self, data: dict, where) -> None:
        """The model config and the header name some facts twice (image_size, patch_size,
        widths, layer counts): they must agree, or the manifest was edited."""
        config = self.config if isinstance(self.config, dict) else {}
        for k, v in config.items():
            if k in data and k != "config" and data[k] != v:
                raise ViewrtError(
                    f"{where}: config.{k} is {v!r}, but the header's {k} is {data[k]!r}; the manifest "
                    "was edited: re-export"
                )

    def _check_derived(self, data: dict, where) -> None:
        """The derived records a manifest carries for readers in other languages (memory,
        cache, kv_bytes_per_<entry>) must be what its header implies: an edit is refused."""
        want = self.to_dict()
        derived = ("memory", "cache", "side_caches", f"kv_bytes_per_{self.cache.entry}")
        for k in (k for k in derived if k in data):
            if data[k] != want.get(k):
                raise ViewrtError(
                    f"{where}: {k} is {data[k]!r}, but the header implies {want.get(k)!r}; the "
                    "manifest was edited: re-export"
                )

    # -- checks ----------------------------------------------------------------------------
    def check_bounds(self, where="manifest") -> None:
        """Every number in range and the tensor lists consistent with the header, by the
        family's declaration.

        Raises: ViewrtError naming the field, its value and what was expected.
        """
        contract = self.contract
        ints = {**_COMMON_INTS, **contract.header_ints}
        values = {**self.header, "opset": self.opset}
        for k, lo in ints.items():
            if k not in values:
                raise ViewrtError(f"{where}: missing header field {k!r}")
            v = values[k]
            if isinstance(v, bool) or not isinstance(v, int):
                raise ViewrtError(f"{where}: {k} must be an integer, got {v!r}")
            if v < lo:
                raise ViewrtError(f"{where}: {k} must be >= {lo}, got {v}")
        if self.precision not in PRECISIONS:
            raise ViewrtError(
                f"{where}: precision {self.precision!r} is not one of {', '.join(PRECISIONS)}"
            )
        try:
            np.dtype(self.kv_dtype)
        except TypeError:
            raise ViewrtError(f"{where}: kv_dtype {self.kv_dtype!r} is not a dtype") from None
        self._check_kv_scales(where)
        for problem in contract.check_header(self.header):
            raise ViewrtError(f"{where}: {problem}")
        if list(self.graphs) != list(contract.graph_names):
            raise ViewrtError(
                f"{where}: graphs {list(self.graphs)}, family {contract.name!r} has "
                f"{list(contract.graph_names)}"
            )
        for name, g in self.graphs.items():
            if Path(g.file).name != g.file or g.file in ("", ".", ".."):
                raise ViewrtError(
                    f"{where}: graphs.{name}.file {g.file!r} must name a file in the export folder"
                )
        mem = host_memory_bytes()
        geo = self.cache
        need = self.kv_bytes_per_entry * geo.capacity
        if mem is not None and need > mem:
            raise ViewrtError(
                f"{where}: {contract.capacity_field} {geo.capacity}: its KV cache needs "
                f"{need / 2**30:.1f} GiB, "
                f"more than this machine's {mem / 2**30:.1f} GiB"
            )
        contract.check_signatures(self.graphs, self.header, self.kv_dtype, where)

    def _check_kv_scales(self, where) -> None:
        """An 8-bit cache (a scaled kv_dtype) records its per-head scales for every cached
        tensor of the writer (``quantization.kv_cache.scales``; the graphs hold the same)."""
        try:
            row = get_kv_cache(self.kv_dtype)
        except ViewrtError as e:
            raise ViewrtError(f"{where}: {e}") from None
        if not row.scaled:
            return
        scales = ((self.quantization or {}).get("kv_cache") or {}).get("scales") or {}
        geo = self.cache
        want = [t.name for t in self.graphs[geo.writer].outputs if N.parse_kv_name(t.name)]
        bad = [n for n in want if len(scales.get(n) or ()) not in (1, geo.n_heads)]
        if bad:
            raise ViewrtError(
                f"{where}: kv_dtype {self.kv_dtype} needs quantization.kv_cache.scales with 1 or "
                f"{geo.n_heads} values for {bad[0]}{' and others' if len(bad) > 1 else ''}"
            )

    def verify_files(self, files: list[str] | None = None) -> None:
        """Check the sha256 of the named files (default: every file the manifest lists).

        Raises: ViewrtError on a missing file or a checksum that differs.
        """
        recorded = dict(self.files)
        for name, g in self.graphs.items():
            if g.sha256 and g.file in recorded and recorded[g.file].get("sha256") != g.sha256:
                raise ViewrtError(
                    f"manifest: graphs.{name}.sha256 ({g.sha256[:12]}...) differs from files['{g.file}'].sha256 "
                    f"({str(recorded[g.file].get('sha256'))[:12]}...); the manifest was edited: re-export"
                )
            if g.sha256:
                recorded.setdefault(g.file, {"sha256": g.sha256})
        for e in (self.engines or {}).values():
            if isinstance(e, dict) and "file" in e and "sha256" in e:
                recorded[e["file"]] = {"sha256": e["sha256"]}
        base = self.dir or Path(".")
        for name in files if files is not None else list(recorded):
            p = base / name
            if name not in recorded:
                raise ViewrtError(f"{p}: not listed in the manifest")
            if not p.is_file():
                raise ViewrtError(f"{p}: missing (the manifest lists it)")
            if sha256_file(p) != recorded[name]["sha256"]:
                raise ViewrtError(
                    f"{p}: checksum differs from the manifest; the file does not belong to this export (re-export or rebuild)"
                )

    def summary(self) -> dict:
        geo = self.cache
        return {
            "dir": str(self.dir),
            "family": self.family,
            "preset": self.preset,
            "precision": self.precision,
            "memory": geo.memory,
            **self.header,
            "kv_dtype": self.kv_dtype,
            f"kv_MiB_per_{geo.entry}": round(self.kv_bytes_per_entry / 2**20, 3),
            f"kv_MiB_at_max_{geo.entry}s": round(self.kv_bytes_per_entry * geo.capacity / 2**20, 2),
            "validation": self.validation,
            "engines": self.engines,
            "quantization": self.quantization,
            "versions": self.versions,
        }


def check_graph_io(
    manifest: Manifest, graph: str, kind: str, declared: list[tuple[str, str, tuple]], source: str
) -> None:
    """Check a graph's inputs or outputs as the file itself declares them against the
    manifest: name, order, dtype, static dims and dynamic axes of every tensor.

    Args:
        manifest: the loaded manifest.
        graph: "encoder" or "decoder". kind: "inputs" or "outputs".
        declared: ``(name, numpy dtype name, shape)`` per tensor in graph order, dynamic
            dims as their dim_param string (None where the graph names none).
        source: what declared them, for the message (e.g. ``decoder.onnx``).
    Raises:
        ViewrtError naming the field, the manifest's value and the graph's value.
    """
    want = manifest.tensors(graph, kind)
    if [d[0] for d in declared] != [t.name for t in want]:
        for i, (t, d) in enumerate(zip(want, declared)):
            if t.name != d[0]:
                raise ViewrtError(
                    f"manifest {graph} {kind[:-1]} {i}: name {t.name!r}, but {source} declares {d[0]!r} there"
                )
        raise ViewrtError(
            f"manifest {graph} {kind}: {len(want)} tensors, but {source} declares {len(declared)}"
        )
    for t, (name, dtype, shape) in zip(want, declared):
        if np.dtype(dtype) != t.np_dtype:
            raise ViewrtError(
                f"manifest {graph} {kind[:-1]} {name!r}: dtype {t.dtype}, but {source} declares {np.dtype(dtype)}"
            )
        shape = tuple(shape)
        if (
            len(shape) != len(t.shape)
            or any(
                (w != g) if isinstance(w, int) else not (g is None or isinstance(g, str))
                for w, g in zip(t.shape, shape)
            )
            or any(
                isinstance(g, str) and isinstance(w, str) and g != w for w, g in zip(t.shape, shape)
            )
        ):
            raise ViewrtError(
                f"manifest {graph} {kind[:-1]} {name!r}: shape {list(t.shape)}, but {source} declares {list(shape)}"
            )


def load_manifest(directory: str | Path, verify: bool = True) -> Manifest:
    """Read, parse and bound ``directory/manifest.json``.

    Args:
        directory: an export folder.
        verify: check the sha256 of the ONNX graphs against the manifest.
    Returns: the Manifest (``.dir`` set to ``directory``).
    Raises:
        ViewrtError: missing folder/manifest, bad JSON, wrong format, a field out of range
        or inconsistent with the others, a checksum mismatch.
    """
    directory = Path(directory)
    path = directory / N.MANIFEST_FILE
    if directory.is_file():
        raise ViewrtError(
            f"export folder {directory}: is a file; pass the folder that holds manifest.json"
        )
    if not directory.is_dir():
        raise ViewrtError(f"export folder {directory}: no such folder")
    if not path.is_file():
        raise ViewrtError(f"{path}: no manifest (export a model there with `viewrt export`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ViewrtError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ViewrtError(f"{path}: not a viewrt manifest")
    if data.get("format_version") != FORMAT_VERSION:
        raise ViewrtError(
            f"{path}: manifest format {data.get('format_version')}, this runtime reads {FORMAT_VERSION}"
        )
    m = Manifest.from_dict(data, directory)
    if verify:
        m.verify_files([g.file for g in m.graphs.values()])
    return m
