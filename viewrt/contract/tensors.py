"""Tensor and graph signatures: what a graph takes and gives, as the contract declares it
and as the manifest records it. Torch-free and onnx-free (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from viewrt.errors import ViewrtError


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


@dataclass(frozen=True)
class GraphSignature:
    """A graph's inputs and outputs in graph order, before it has a file: what a family
    declares (:meth:`viewrt.contract.family.FamilyContract.signatures`) and the export spec
    exports."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def to_dict(self) -> dict:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    def graph_info(self, file: str, sha256: str | None = None) -> GraphInfo:
        """The manifest record of this graph written to ``file``."""
        return GraphInfo(file, self.inputs, self.outputs, sha256)
