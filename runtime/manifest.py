"""Reading manifest.json, the only thing the runtime knows about a model.

The manifest is written by ``viewrt export`` next to encoder.onnx and decoder.onnx (and
by ``viewrt build`` for engines). Loading checks its format and, by default, the sha256 of
every file it names, so a graph or engine that does not belong to it is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from viewrt.checksum import sha256_file
from viewrt.errors import ViewrtError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: np.dtype
    shape: tuple  # ints, str for dynamic dims

    def check(self, array_shape: tuple, array_dtype, bounds: dict[str, int] | None = None) -> None:
        """Raise ViewrtError unless shape/dtype fit this tensor (dynamic dims <= bounds)."""
        if np.dtype(array_dtype) != self.dtype:
            raise ViewrtError(f"input '{self.name}': got dtype {np.dtype(array_dtype)}, expected {self.dtype}")
        bounds = bounds or {}
        ok = len(array_shape) == len(self.shape) and all(
            (1 <= got <= bounds.get(want, got)) if isinstance(want, str) else got == want for got, want in zip(array_shape, self.shape)
        )
        if not ok:
            want = tuple(f"<={bounds[d]}" if isinstance(d, str) and d in bounds else d for d in self.shape)
            raise ViewrtError(f"input '{self.name}': got shape {tuple(array_shape)}, expected {want}")


class Manifest:
    """A parsed, checked manifest.json.

    Attributes:
        dir: the folder holding it. ``data``: the raw dict. Convenience properties below.
    """

    def __init__(self, data: dict, directory: Path):
        self.data, self.dir = data, directory
        try:
            self.tokens_per_view = int(data["tokens_per_view"])
            self.n_layers, self.n_heads, self.head_dim = int(data["n_layers"]), int(data["n_heads"]), int(data["head_dim"])
            self.image_size, self.max_views = int(data["image_size"]), int(data["max_views"])
            self.max_targets = int(data.get("max_targets", 8))
            self.kv_dtype = np.dtype(data["kv_dtype"])
            self.graphs = {g: data["graphs"][g] for g in ("encoder", "decoder")}
        except (KeyError, TypeError, ValueError) as e:
            raise ViewrtError(f"{directory / MANIFEST}: malformed manifest ({type(e).__name__}: {e})") from None

    def tensors(self, graph: str, kind: str) -> list[TensorInfo]:
        """TensorInfo of each input or output of a graph, in graph order."""
        return [TensorInfo(t["name"], np.dtype(t["dtype"]), tuple(t["shape"])) for t in self.graphs[graph][kind]]

    @property
    def present_names(self) -> list[str]:
        """Encoder outputs: [key.0, value.0, key.1, ...]."""
        return [t["name"] for t in self.graphs["encoder"]["outputs"]]

    @property
    def past_names(self) -> list[str]:
        """Decoder cache inputs: [key.0, value.0, key.1, ...] (same order as present)."""
        return [t["name"] for t in self.graphs["decoder"]["inputs"][1:]]

    @property
    def view_input(self) -> str:
        return self.graphs["encoder"]["inputs"][0]["name"]

    @property
    def target_input(self) -> str:
        return self.graphs["decoder"]["inputs"][0]["name"]

    @property
    def image_output(self) -> str:
        return self.graphs["decoder"]["outputs"][0]["name"]

    @property
    def kv_bytes_per_view(self) -> int:
        return self.n_layers * 2 * self.tokens_per_view * self.n_heads * self.head_dim * self.kv_dtype.itemsize

    def path(self, graph: str, suffix: str = "onnx") -> Path:
        """Path of a graph's ONNX file or (suffix 'engine') its TensorRT engine."""
        if suffix == "onnx":
            return self.dir / self.graphs[graph]["file"]
        engines = self.data.get("engines") or {}
        if graph not in engines:
            raise ViewrtError(f"{self.dir}: no TensorRT engines recorded in the manifest; run `viewrt build {self.dir}`")
        return self.dir / engines[graph]["file"]

    def verify(self, files: list[str] | None = None) -> None:
        """Check the sha256 of the named files (default: every file the manifest lists).

        Raises: ViewrtError on a missing file or a checksum that differs.
        """
        recorded = dict(self.data.get("files", {}))
        for g, e in (self.data.get("engines") or {}).items():
            if isinstance(e, dict) and "file" in e and "sha256" in e:
                recorded[e["file"]] = {"sha256": e["sha256"]}
        for name in files if files is not None else list(recorded):
            p = self.dir / name
            if name not in recorded:
                raise ViewrtError(f"{p}: not listed in the manifest")
            if not p.is_file():
                raise ViewrtError(f"{p}: missing (the manifest lists it)")
            if sha256_file(p) != recorded[name]["sha256"]:
                raise ViewrtError(f"{p}: checksum differs from the manifest; the file does not belong to this export (re-export or rebuild)")

    def summary(self) -> dict:
        d = self.data
        return {
            "dir": str(self.dir), "family": d.get("family"), "preset": d.get("preset"), "precision": d.get("precision"),
            "image_size": self.image_size, "tokens_per_view": self.tokens_per_view, "layers": self.n_layers,
            "heads": self.n_heads, "head_dim": self.head_dim, "max_views": self.max_views, "kv_dtype": str(self.kv_dtype),
            "kv_MiB_per_view": round(self.kv_bytes_per_view / 2**20, 3),
            "kv_MiB_at_max_views": round(self.kv_bytes_per_view * self.max_views / 2**20, 2),
            "validation": d.get("validation"), "engines": d.get("engines"), "versions": d.get("versions"),
        }


def load_manifest(directory: str | Path, verify: bool = True) -> Manifest:
    """Read and check ``directory/manifest.json``.

    Args:
        directory: an export folder.
        verify: check the sha256 of the ONNX graphs against the manifest.
    Raises:
        ViewrtError: missing folder/manifest, bad JSON, wrong format, checksum mismatch.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ViewrtError(f"export folder {directory}: no such folder")
    if not path.is_file():
        raise ViewrtError(f"{path}: no manifest (export a model there with `viewrt export`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ViewrtError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") != "viewrt-manifest":
        raise ViewrtError(f"{path}: not a viewrt manifest")
    if data.get("format_version") != FORMAT_VERSION:
        raise ViewrtError(f"{path}: manifest format {data.get('format_version')}, this runtime reads {FORMAT_VERSION}")
    m = Manifest(data, directory)
    if verify:
        m.verify([m.graphs["encoder"]["file"], m.graphs["decoder"]["file"]])
    return m
