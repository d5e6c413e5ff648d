"""The export -> runtime contract: names, the precision table, the manifest and the memory
arithmetic. Export writes through it and the runtime reads through it; neither imports
the other. Torch-free and onnx-free (numpy only)."""

from viewrt.contract import names
from viewrt.contract.manifest import GraphInfo, Manifest, TensorInfo, check_graph_io, load_manifest
from viewrt.contract.memory import attention_scratch_bytes, kv_bytes_per_view, targets_within
from viewrt.contract.precision import (
    EXPORT_PRECISIONS,
    PRECISIONS,
    QUANTIZED_PRECISIONS,
    Precision,
    get_precision,
)

__all__ = [
    "names",
    "GraphInfo",
    "Manifest",
    "TensorInfo",
    "check_graph_io",
    "load_manifest",
    "attention_scratch_bytes",
    "kv_bytes_per_view",
    "targets_within",
    "EXPORT_PRECISIONS",
    "PRECISIONS",
    "QUANTIZED_PRECISIONS",
    "Precision",
    "get_precision",
]
