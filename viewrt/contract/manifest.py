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

from viewrt.checksum import sha256_file
from viewrt.contract import names as N
from viewrt.contract.memory import host_memory_bytes, kv_bytes_per_view
from viewrt.contract.precision import PRECISIONS, Precision, get_precision
from viewrt.errors import ViewrtError

FORMAT = "viewrt-manifest"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output.

    Attributes:
        name: tensor name. dtype: numpy dtype name. shape: ints, or str for a dynamic dim
        (its ONNX dim_param). layout: axis letters, e.g. ``B,T,heads,head_dim``.
    """

    name: str
    dtype: str
    shape: tuple
    layout: str = ""

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def check(self, array_shape: tuple, array_dtype, bounds: dict[str, int] | None = None) -> None:
        """Raise ViewrtError unless shape/dtype fit this tensor (dynamic dims 1..bound)."""
        if np.dtype(array_dtype) != self.np_dtype:
            raise ViewrtError(
                f"input '{self.name}': got dtype {np.dtype(array_dtype)}, expected {self.np_dtype}"
            )
        bounds = bounds or {}
        ok = len(array_shape) == len(self.shape) and all(
            (1 <= got <= bounds.get(want, got)) if isinstance(want, str) else got == want
            for got, want in zip(array_shape, self.shape)
        )
        if not ok:
            want = tuple(
                f"<={bounds[d]}" if isinstance(d, str) and d in bounds else d for d in self.shape
            )
            raise ViewrtError(
                f"input '{self.name}': got shape {tuple(array_shape)}, expected {want}"
            )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "layout": self.layout,
            "dynamic_axes": {str(k): v for k, v in self.dynamic_axes.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> TensorInfo:
        np.dtype(d["dtype"])  # raises TypeError on a bad dtype name
        shape = tuple(s if isinstance(s, str) else int(s) for s in d["shape"])
        return cls(str(d["name"]), str(d["dtype"]), shape, str(d.get("layout", "")))


@dataclass(frozen=True)
class GraphInfo:
    """One graph file and its declared inputs and outputs, in graph order."""

    file: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    sha256: str | None = None

    def to_dict(self) -> dict:
        d = {
            "file": self.file,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }
        if self.sha256:
            d["sha256"] = self.sha256
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GraphInfo:
        return cls(
            str(d["file"]),
            tuple(TensorInfo.from_dict(t) for t in d["inputs"]),
            tuple(TensorInfo.from_dict(t) for t in d["outputs"]),
            d.get("sha256"),
        )


# Header fields every manifest has, and the smallest value each may take.
_HEADER_INTS = {
    "image_size": 1,
    "patch_size": 1,
    "tokens_per_view": 1,
    "n_layers": 1,
    "n_heads": 1,
    "head_dim": 1,
    "d_model": 1,
    "max_views": 1,
    "max_targets": 1,
    "opset": 1,
}


@dataclass
class Manifest:
    """A parsed, bounded manifest.json.

    Attributes (header): family, preset, config (the model config dict), precision,
    kv_dtype, opset, image_size, patch_size, tokens_per_view, n_layers, n_heads, head_dim,
    d_model, max_views (cache capacity in views), max_targets (targets per decoder call).
    graphs: ``{"encoder": GraphInfo, "decoder": GraphInfo}``. Records: checkpoint,
    weights_sha256, cameras, validation, files (``{name: {sha256, size_bytes}}``),
    versions, engines (written by ``viewrt build``), quantization (by ``viewrt calib``),
    variants (backend-specific graphs with the same inputs and outputs, e.g.
    ``{"decoder": {"onnxruntime-cpu": {"file", "sha256", "validation"}}}``), extra
    (family-specific fields). ``dir``: the folder it was loaded from (not written).
    """

    family: str
    preset: str
    config: dict
    precision: str
    kv_dtype: str
    opset: int
    image_size: int
    patch_size: int
    tokens_per_view: int
    n_layers: int
    n_heads: int
    head_dim: int
    d_model: int
    max_views: int
    max_targets: int
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

    # -- derived ---------------------------------------------------------------------------
    @property
    def precision_row(self) -> Precision:
        return get_precision(self.precision)

    @property
    def np_kv_dtype(self) -> np.dtype:
        return np.dtype(self.kv_dtype)

    @property
    def kv_bytes_per_view(self) -> int:
        return kv_bytes_per_view(
            self.n_layers,
            self.tokens_per_view,
            self.n_heads,
            self.head_dim,
            self.np_kv_dtype.itemsize,
        )

    def tensors(self, graph: str, kind: str) -> tuple[TensorInfo, ...]:
        """Inputs or outputs of a graph, in graph order."""
        g = self.graphs[graph]
        return g.inputs if kind == "inputs" else g.outputs

    @property
    def present_names(self) -> list[str]:
        """Encoder K/V outputs in graph order."""
        return [t.name for t in self.graphs["encoder"].outputs]

    @property
    def past_names(self) -> list[str]:
        """Decoder K/V inputs paired with :attr:`present_names` by name (layer, kind),
        never by position."""
        declared = {t.name for t in self.graphs["decoder"].inputs}
        return [n for n in (N.paired_name(p) for p in self.present_names) if n in declared]

    @property
    def view_input(self) -> str:
        return self.graphs["encoder"].inputs[0].name

    @property
    def target_input(self) -> str:
        return self.graphs["decoder"].inputs[0].name

    @property
    def image_output(self) -> str:
        return self.graphs["decoder"].outputs[0].name

    def dynamic_ranges(
        self,
        max_views: int | None = None,
        max_targets: int | None = None,
        opt_views: int | None = None,
        opt_targets: int | None = None,
    ) -> dict[str, tuple[int, int, int]]:
        """``{dim_name: (min, opt, max)}`` of each dynamic dimension: the one source of
        TensorRT profiles, ORT TensorRT-EP profiles and backend bounds.

        ``past_tokens`` spans 1 view to ``max_views`` views of ``tokens_per_view`` tokens;
        ``num_targets`` spans 1 to ``max_targets`` (opt: the max, since the runtime
        decodes up to max targets at once). Raises ViewrtError outside the export's range.
        """
        mv = self.max_views if max_views is None else int(max_views)
        mt = self.max_targets if max_targets is None else int(max_targets)
        if not 1 <= mv <= self.max_views:
            raise ViewrtError(f"max_views must be in 1..{self.max_views} (the export's), got {mv}")
        if mt < 1:
            raise ViewrtError(f"max_targets must be >= 1, got {mt}")
        ov = mv if opt_views is None else max(1, min(mv, int(opt_views)))
        ot = mt if opt_targets is None else max(1, min(mt, int(opt_targets)))
        T = self.tokens_per_view
        return {N.PAST_TOKENS: (T, ov * T, mv * T), N.NUM_TARGETS: (1, ot, mt)}

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
            if f.name in ("dir", "extra"):
                continue
            v = getattr(self, f.name)
            d[f.name] = {k: g.to_dict() for k, g in v.items()} if f.name == "graphs" else v
        d["kv_bytes_per_view"] = {
            p: kv_bytes_per_view(
                self.n_layers, self.tokens_per_view, self.n_heads, self.head_dim, row.itemsize
            )
            for p, row in PRECISIONS.items()
        }
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
            os.chmod(
                tmp, 0o666 & ~umask
            )  # readable like the graphs next to it (mkstemp makes 0600)
            os.replace(tmp, path)
        except OSError as e:
            raise ViewrtError(f"{path}: cannot write the manifest ({e.strerror or e})") from None
        return path

    @classmethod
    def from_dict(cls, data: dict, directory: Path | None = None) -> Manifest:
        """Parse and bound a manifest dict. Raises ViewrtError naming the bad field."""
        where = directory / N.MANIFEST_FILE if directory is not None else "manifest"
        known = {f.name for f in fields(cls)} - {"dir", "extra"}
        try:
            kw = {k: data[k] for k in known if k in data}
            for k in _HEADER_INTS:
                v = data[k]
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ViewrtError(f"{where}: {k} must be an integer, got {v!r}")
            kw["graphs"] = {g: GraphInfo.from_dict(data["graphs"][g]) for g in N.GRAPHS}
            for k in ("family", "preset", "precision", "kv_dtype", "config"):
                kw[k] = data[k]
            extra = {
                k: v
                for k, v in data.items()
                if k not in known and k not in ("format", "format_version", "kv_bytes_per_view")
            }
            m = cls(**kw, extra=extra, dir=directory)
        except ViewrtError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ViewrtError(f"{where}: malformed manifest ({type(e).__name__}: {e})") from None
        m.check_bounds(where)
        return m

    # -- checks ----------------------------------------------------------------------------
    def check_bounds(self, where="manifest") -> None:
        """Every number in range and the tensor lists consistent with the header.

        Raises: ViewrtError naming the field, its value and what was expected.
        """
        for k, lo in _HEADER_INTS.items():
            v = getattr(self, k)
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
        if self.d_model != self.n_heads * self.head_dim:
            raise ViewrtError(
                f"{where}: d_model {self.d_model} != n_heads {self.n_heads} x head_dim {self.head_dim}"
            )
        if (
            self.image_size % self.patch_size
            or (self.image_size // self.patch_size) ** 2 != self.tokens_per_view
        ):
            raise ViewrtError(
                f"{where}: tokens_per_view {self.tokens_per_view} does not match image_size {self.image_size} "
                f"and patch_size {self.patch_size} (expected {(self.image_size // self.patch_size) ** 2})"
            )
        for name, g in self.graphs.items():
            if Path(g.file).name != g.file or g.file in ("", ".", ".."):
                raise ViewrtError(
                    f"{where}: graphs.{name}.file {g.file!r} must name a file in the export folder"
                )
        mem = host_memory_bytes()
        need = self.kv_bytes_per_view * self.max_views
        if mem is not None and need > mem:
            raise ViewrtError(
                f"{where}: max_views {self.max_views}: its KV cache needs {need / 2**30:.1f} GiB, "
                f"more than this machine's {mem / 2**30:.1f} GiB"
            )
        self._check_tensor_lists(where)

    def _check_tensor_lists(self, where) -> None:
        S, T, H, Dh, kv = (
            self.image_size,
            self.tokens_per_view,
            self.n_heads,
            self.head_dim,
            self.kv_dtype,
        )
        want = {
            ("encoder", "inputs"): [(N.VIEW, "float32", (1, 9, S, S))],
            ("encoder", "outputs"): [
                (n, kv, (1, T, H, Dh)) for n in N.kv_names("present", self.n_layers)
            ],
            ("decoder", "inputs"): [(N.TARGET_RAYS, "float32", (1, N.NUM_TARGETS, 6, S, S))]
            + [(n, kv, (1, N.PAST_TOKENS, H, Dh)) for n in N.kv_names("past", self.n_layers)],
            ("decoder", "outputs"): [(N.IMAGES, "float32", (1, N.NUM_TARGETS, 3, S, S))],
        }
        for (graph, kind), expected in want.items():
            got = self.tensors(graph, kind)
            if len(got) != len(expected):
                raise ViewrtError(
                    f"{where}: {graph} has {len(got)} {kind}, expected {len(expected)} for n_layers {self.n_layers}"
                )
            for i, (t, (name, dtype, shape)) in enumerate(zip(got, expected)):
                for fld, have, need in (
                    ("name", t.name, name),
                    ("dtype", t.dtype, dtype),
                    ("shape", tuple(t.shape), shape),
                ):
                    if have != need:
                        raise ViewrtError(
                            f"{where}: {graph} {kind[:-1]} {i} {fld}: manifest has {have!r}, "
                            f"its header (layers, heads, tokens per view, image size, kv_dtype) implies {need!r}"
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
        return {
            "dir": str(self.dir),
            "family": self.family,
            "preset": self.preset,
            "precision": self.precision,
            "image_size": self.image_size,
            "tokens_per_view": self.tokens_per_view,
            "layers": self.n_layers,
            "heads": self.n_heads,
            "head_dim": self.head_dim,
            "max_views": self.max_views,
            "max_targets": self.max_targets,
            "kv_dtype": self.kv_dtype,
            "kv_MiB_per_view": round(self.kv_bytes_per_view / 2**20, 3),
            "kv_MiB_at_max_views": round(self.kv_bytes_per_view * self.max_views / 2**20, 2),
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
        m.verify_files([m.graphs["encoder"].file, m.graphs["decoder"].file])
    return m
