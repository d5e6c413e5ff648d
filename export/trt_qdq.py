"""What ``viewrt build`` does differently for a Q/DQ graph (one call from export/trt_build.py).

A graph with QuantizeLinear/DequantizeLinear is built as a strongly typed network
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``, TensorRT 10.x and the only mode on 11.x):
the precision of every layer follows the graph's own types and Q/DQ, no precision builder
flag is set. That is what TensorRT 10.3 (JetPack 6) needs for INT8 and what TensorRT 11
needs for everything. Before parsing, the graph must pass the Q/DQ rule check
(qdq_check.py), and FP8 needs a GPU of compute capability 8.9 or newer (Ada, Hopper,
Blackwell); below that it is a clear error rather than a failed build.
"""

from __future__ import annotations

from pathlib import Path

from viewrt.errors import ViewrtError
from viewrt.export.qdq_check import check_qdq, is_qdq_graph, qdq_types

FP8_MIN_CC = (8, 9)
OPSETS = {"int8": (17, 18), "fp8": (19, 19)}  # float8 Q/DQ need opset 19


def _cc(cc: str | tuple) -> tuple[int, int]:
    if isinstance(cc, tuple):
        return int(cc[0]), int(cc[1])
    major, _, minor = str(cc).partition(".")
    return int(major), int(minor or 0)


def qdq_plan(onnx_path: str | Path, precision: str, compute_capability: str | tuple) -> dict | None:
    """Check a graph for a TensorRT build and say how to build it.

    Args:
        onnx_path: the graph.
        precision: the precision asked for ("fp32", "fp16", "int8", "fp8").
        compute_capability: of the build GPU, "major.minor" or (major, minor).
    Returns:
        None for a graph without Q/DQ asked at fp32/fp16 (build as before); else
        ``{"strongly_typed": True, "types": [...], "opset_range": (lo, hi)}``.
    Raises:
        ViewrtError: int8/fp8 asked of a graph without Q/DQ (run `viewrt calib`), a Q/DQ
            graph asked at fp16, the graph breaks the Q/DQ rules, or FP8 below compute
            capability 8.9.
    """
    onnx_path = Path(onnx_path)
    if not is_qdq_graph(onnx_path):
        if precision in ("int8", "fp8"):
            raise ViewrtError(
                f"'{onnx_path.name}' has no Q/DQ nodes; {precision} engines are built from a quantized export "
                f"(viewrt calib EXPORT --out DIR --precision {precision})"
            )
        return None
    if precision == "fp16":
        raise ViewrtError(
            f"'{onnx_path.name}' is a Q/DQ graph; build it at its own precision (omit --precision)"
        )
    check_qdq(onnx_path, onnx_path.name)
    types = sorted(qdq_types(onnx_path))
    if "float8e4m3fn" in types and _cc(compute_capability) < FP8_MIN_CC:
        raise ViewrtError(
            f"'{onnx_path.name}' holds FP8 Q/DQ; TensorRT runs FP8 on compute capability >= "
            f"{FP8_MIN_CC[0]}.{FP8_MIN_CC[1]} (Ada, Hopper, Blackwell), this GPU is {_cc(compute_capability)[0]}."
            f"{_cc(compute_capability)[1]}; use the int8 export here"
        )
    return {
        "strongly_typed": True,
        "types": types,
        "opset_range": OPSETS["fp8" if "float8e4m3fn" in types else "int8"],
    }


def network_flags(
    trt, onnx_path: str | Path, precision: str, compute_capability: str | tuple
) -> int:
    """``builder.create_network`` flags: STRONGLY_TYPED for a Q/DQ graph (after the checks
    of :func:`qdq_plan`), 0 otherwise."""
    plan = qdq_plan(onnx_path, precision, compute_capability)
    if plan is None:
        return 0
    flag = getattr(
        trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None
    )  # 11.x: the only mode, flag may be gone
    return 0 if flag is None else 1 << int(flag)
