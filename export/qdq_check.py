"""A static check that a Q/DQ graph follows TensorRT's explicit-quantization rules.

TensorRT 10.x (strongly typed builds) and 11.x take INT8/FP8 only as explicit
QuantizeLinear/DequantizeLinear nodes in the ONNX graph, and only in this form:

- symmetric: every zero point is present and all zeros (a missing zero point means uint8);
- quantized type int8 or float8e4m3fn (the zero point's type; for a weight, the stored
  initializer's);
- scales constant, positive and finite;
- per-tensor activations: a scale of one element; per-channel (1-D scale) only on a
  constant weight, with ``axis`` in range, the scale as long as that axis, and the axis the
  consumer's output-channel axis (MatMul: the last; Gemm: 0 with transB, else 1; Conv: 0);
- no ``block_size`` (blocked quantization is not in TensorRT 10.3);
- placement: an activation's QuantizeLinear feeds DequantizeLinear nodes only (a pair), and
  every DequantizeLinear feeds an op TensorRT fuses Q/DQ into (MatMul, Gemm, Conv,
  ConvTranspose);
- an 8-bit K/V cache (calib/kv_cache.py) is the one exception, at the graph boundary: a
  QuantizeLinear may produce a graph output and a DequantizeLinear may read a graph input
  (strongly typed networks take int8/fp8 I/O tensors), only for a K/V cache tensor
  (``present_*`` out, ``past_*``/``retained_*`` in), of the zero point's type; the Q is the
  output's only producer and nothing else reads it; the graph input feeds DequantizeLinear
  only (dequantized right where it enters); the scale is per tensor or per head: 1-D, as long
  as the tensor's head axis, ``axis`` that axis (2 of ``[B, tokens, heads, head_dim]``);
- opset: per-axis Q/DQ need opset 13 or newer, float8 Q/DQ opset 19.

:func:`qdq_violations` lists every break of these rules; :func:`check_qdq` raises on the
first few. Both read the graph structure only (onnx, no runtime).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

import viewrt.contract.names as N
from viewrt.errors import ViewrtError

ALLOWED_TYPES = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.FLOAT8E4M3FN: "float8e4m3fn"}
QDQ_CONSUMERS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose"})
KV_HEAD_AXIS = 2  # [B, tokens, heads, head_dim]
Q, DQ = "QuantizeLinear", "DequantizeLinear"


def _load(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise ViewrtError(f"ONNX file '{path}': not found")
    return onnx.load(str(path))


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _label(node: onnx.NodeProto) -> str:
    return node.name or f"<{node.op_type} -> {node.output[0]}>"


def _weight_axis(consumer: onnx.NodeProto, rank: int) -> int:
    """The output-channel axis of a weight feeding ``consumer`` as its second input."""
    if consumer.op_type == "Gemm":
        return 0 if _attr(consumer, "transB", 0) else 1
    if consumer.op_type in ("Conv", "ConvTranspose"):
        return 0 if consumer.op_type == "Conv" else 1
    return rank - 1  # MatMul: [.., K, N], channels are N


def is_qdq_graph(model) -> bool:
    """True when the graph holds any QuantizeLinear/DequantizeLinear node."""
    return any(n.op_type in (Q, DQ) for n in _load(model).graph.node)


def qdq_types(model) -> set[str]:
    """The quantized types of the graph's Q/DQ nodes ("int8", "float8e4m3fn", others by name)."""
    m = _load(model)
    consts = {i.name: i for i in m.graph.initializer}
    out = set()
    for n in m.graph.node:
        if n.op_type in (Q, DQ) and len(n.input) > 2 and n.input[2] in consts:
            t = consts[n.input[2]].data_type
            out.add(ALLOWED_TYPES.get(t, onnx.TensorProto.DataType.Name(t).lower()))
    return out


def qdq_violations(model) -> list[str]:
    """Every break of TensorRT's explicit-quantization rules in a graph.

    Args:
        model: an onnx.ModelProto or the path of an .onnx file.
    Returns:
        One line per violation, naming the node and the rule; empty when the graph passes.
        A graph without Q/DQ nodes passes.
    Raises:
        ViewrtError: the file does not exist.
    """
    m = _load(model)
    g = m.graph
    ix = _index(g)
    bad = [line for n in g.node if n.op_type in (Q, DQ) for line in _node_violations(n, ix)]
    return bad + _opset_violations(m, ix)


def _opset_violations(m: onnx.ModelProto, ix: _Index) -> list[str]:
    """Per-axis Q/DQ need opset 13, float8 Q/DQ opset 19."""
    opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0)
    bad = []
    for n in m.graph.node:
        if n.op_type not in (Q, DQ):
            continue
        zp = ix.const_types.get(n.input[2]) if len(n.input) > 2 else None
        if zp == onnx.TensorProto.FLOAT8E4M3FN and opset < 19:
            bad.append(
                f"{n.op_type} '{_label(n)}': float8 Q/DQ need opset 19, the graph is opset {opset}"
            )
        scale = ix.consts.get(n.input[1]) if len(n.input) > 1 else None
        if scale is not None and scale.size > 1 and opset < 13:
            bad.append(
                f"{n.op_type} '{_label(n)}': per-axis Q/DQ need opset 13, the graph is opset {opset}"
            )
    return bad


@dataclass
class _Index:
    """What the rules look up: constants (initializers and Constant nodes) with their
    ONNX types, each tensor's consumers and producer, the graph's output names."""

    consts: dict[str, np.ndarray]
    const_types: dict[str, int]
    consumers: dict[str, list[onnx.NodeProto]]
    producer: dict[str, onnx.NodeProto]
    graph_outputs: set[str]
    io: dict[str, onnx.ValueInfoProto]  # graph inputs and outputs by name
    graph_inputs: set[str]


def _index(g: onnx.GraphProto) -> _Index:
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    const_types = {i.name: i.data_type for i in g.initializer}
    for n in g.node:  # Constant nodes count as constants too
        if n.op_type == "Constant" and _attr(n, "value") is not None:
            t = _attr(n, "value")
            consts[n.output[0]], const_types[n.output[0]] = numpy_helper.to_array(t), t.data_type
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    producer: dict[str, onnx.NodeProto] = {}
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
        for o in n.output:
            producer[o] = n
    io = {v.name: v for v in [*g.input, *g.output]}
    inputs = {i.name for i in g.input} - set(consts)
    return _Index(consts, const_types, consumers, producer, {o.name for o in g.output}, io, inputs)


def _node_violations(n: onnx.NodeProto, ix: _Index) -> list[str]:
    """The violations of one Q or DQ node, in rule order."""
    who = f"{n.op_type} '{_label(n)}'"
    bad = _zero_point_violations(n, who, ix)
    scale = ix.consts.get(n.input[1]) if len(n.input) > 1 else None
    if scale is None:
        return bad + [f"{who}: scale is not a constant"]
    s = scale.astype(np.float64)
    if not np.all(np.isfinite(s)) or not np.all(s > 0):
        bad.append(
            f"{who}: scale must be positive and finite, got min {s.min():.3g} max {s.max():.3g}"
        )
    if _attr(n, "block_size", 0):
        bad.append(f"{who}: blocked quantization (block_size) is not supported by TensorRT 10.3")
    if n.op_type == DQ and n.input[0] in ix.consts:  # a constant weight
        return bad + _weight_violations(n, who, s, ix)
    if (n.op_type == Q and n.output[0] in ix.graph_outputs) or (
        n.op_type == DQ and n.input[0] in ix.graph_inputs
    ):
        return bad + _cache_violations(n, who, s, ix)
    return bad + _activation_violations(n, who, s, ix)


def _dims(v: onnx.ValueInfoProto) -> list:
    return [
        d.dim_value if d.HasField("dim_value") else d.dim_param
        for d in v.type.tensor_type.shape.dim
    ]


def _cache_violations(n: onnx.NodeProto, who: str, s: np.ndarray, ix: _Index) -> list[str]:
    """A Q that writes a graph output or a DQ that reads a graph input: only an 8-bit K/V
    cache tensor, of the zero point's type, placed at the boundary, scaled per tensor or per
    head (see the module docstring)."""
    writes = n.op_type == Q
    t = n.output[0] if writes else n.input[0]
    roles = ("present",) if writes else ("past", "retained")
    parsed = N.parse_kv_name(t)
    if parsed is None or parsed[0] not in roles:
        side = "writes graph output" if writes else "reads graph input"
        return [
            f"{who}: {side} '{t}', which is no K/V cache tensor ({'/'.join(roles)}_*); "
            "only an 8-bit cache is quantized at the graph boundary"
        ]
    bad = []
    v = ix.io[t]
    zp = ix.const_types.get(n.input[2]) if len(n.input) > 2 else None
    if zp is not None and v.type.tensor_type.elem_type != zp:
        bad.append(
            f"{who}: cache tensor '{t}' is {onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)}, "
            f"its zero point {onnx.TensorProto.DataType.Name(zp)}"
        )
    users = ix.consumers.get(t, [])
    if writes and users:
        bad.append(
            f"{who}: cache output '{t}' is also read inside the graph ({sorted({u.op_type for u in users})})"
        )
    if not writes and any(u.op_type != DQ for u in users):
        bad.append(
            f"{who}: cache input '{t}' also feeds {sorted({u.op_type for u in users} - {DQ})}; "
            "dequantize it where it enters"
        )
    if s.size <= 1:  # per tensor
        return bad
    dims = _dims(v)
    axis = _attr(n, "axis", 1)
    if len(dims) != 4 or axis % max(len(dims), 1) != KV_HEAD_AXIS or s.ndim != 1:
        return bad + [
            f"{who}: cache scale of shape {s.shape} on axis {axis} of '{t}' {dims}; per-head scales "
            f"are 1-D on axis {KV_HEAD_AXIS} of [B, tokens, heads, head_dim]"
        ]
    if isinstance(dims[KV_HEAD_AXIS], int) and dims[KV_HEAD_AXIS] != s.size:
        bad.append(f"{who}: {s.size} per-head scales, '{t}' has {dims[KV_HEAD_AXIS]} heads")
    return bad


def _zero_point_violations(n: onnx.NodeProto, who: str, ix: _Index) -> list[str]:
    """Zero point: present, constant, an allowed type, all zeros."""
    if len(n.input) < 3 or not n.input[2]:
        return [
            f"{who}: no zero point (means uint8); TensorRT needs an explicit int8/fp8 zero point of 0"
        ]
    if n.input[2] not in ix.consts:
        return [f"{who}: zero point '{n.input[2]}' is not a constant"]
    bad = []
    zp_type = ix.const_types[n.input[2]]
    if zp_type not in ALLOWED_TYPES:
        bad.append(
            f"{who}: quantized type {onnx.TensorProto.DataType.Name(zp_type)}; TensorRT takes INT8 or FLOAT8E4M3FN"
        )
    if np.any(ix.consts[n.input[2]].astype(np.float32) != 0):
        bad.append(f"{who}: zero point not 0 (asymmetric); TensorRT needs symmetric quantization")
    return bad


def _weight_violations(n: onnx.NodeProto, who: str, s: np.ndarray, ix: _Index) -> list[str]:
    """A DQ of a constant weight: stored quantized, feeding a fusing op, and a per-channel
    scale that fits the weight along its consumers' output-channel axis."""
    bad = []
    x = n.input[0]
    w = ix.consts[x]
    if ix.const_types[x] not in ALLOWED_TYPES:
        bad.append(
            f"{who}: weight '{x}' stored as {onnx.TensorProto.DataType.Name(ix.const_types[x])}; expected INT8 or FLOAT8E4M3FN"
        )
    users = ix.consumers.get(n.output[0], [])
    if not users or any(u.op_type not in QDQ_CONSUMERS for u in users):
        bad.append(
            f"{who}: weight feeds {sorted({u.op_type for u in users}) or 'nothing'}; Q/DQ weights go to {sorted(QDQ_CONSUMERS)}"
        )
    if s.size <= 1:  # per-tensor
        return bad
    axis = _attr(n, "axis", 1)
    rank = w.ndim
    if s.ndim != 1 or not -rank <= axis < rank:
        return bad + [
            f"{who}: per-channel scale of shape {s.shape} with axis {axis} does not fit weight shape {w.shape}"
        ]
    axis %= rank
    if w.shape[axis] != s.size:
        bad.append(
            f"{who}: per-channel scale has {s.size} values, weight axis {axis} has {w.shape[axis]}"
        )
    for u in users:
        if (
            u.op_type in QDQ_CONSUMERS
            and len(u.input) > 1
            and u.input[1] == n.output[0]
            and axis != _weight_axis(u, rank)
        ):
            bad.append(
                f"{who}: per-channel axis {axis} is not the output-channel axis {_weight_axis(u, rank)} of {u.op_type} '{_label(u)}'"
            )
    return bad


def _activation_violations(n: onnx.NodeProto, who: str, s: np.ndarray, ix: _Index) -> list[str]:
    """An activation: per-tensor, a Q -> DQ pair with the same scale and zero point, the DQ
    into an op TensorRT fuses Q/DQ into."""
    bad = []
    x = n.input[0]
    if s.size > 1:
        bad.append(
            f"{who}: per-channel scale on activation '{x}'; TensorRT takes per-tensor activations"
        )
    users = ix.consumers.get(n.output[0], [])
    if n.op_type == Q:
        if n.output[0] in ix.graph_outputs or not users or any(u.op_type != DQ for u in users):
            bad.append(
                f"{who}: output feeds {sorted({u.op_type for u in users}) or 'the graph output'}; a Q must feed DequantizeLinear (a Q/DQ pair)"
            )
        for u in users:
            if u.op_type == DQ and (u.input[1:3] != n.input[1:3]):
                pair_same = all(
                    a in ix.consts and b in ix.consts and np.array_equal(ix.consts[a], ix.consts[b])
                    for a, b in zip(u.input[1:3], n.input[1:3])
                )
                if not pair_same:
                    bad.append(
                        f"{who}: its DequantizeLinear '{_label(u)}' has another scale or zero point"
                    )
        return bad
    p = ix.producer.get(x)
    if p is None or p.op_type != Q:
        bad.append(f"{who}: input '{x}' does not come from a QuantizeLinear (not a Q/DQ pair)")
    if not users or any(u.op_type not in QDQ_CONSUMERS for u in users):
        bad.append(
            f"{who}: feeds {sorted({u.op_type for u in users}) or 'nothing'}; TensorRT fuses Q/DQ into {sorted(QDQ_CONSUMERS)}"
        )
    return bad


def check_qdq(model, what: str | None = None) -> None:
    """Raise ViewrtError when a graph breaks TensorRT's explicit-quantization rules.

    Args:
        model: an onnx.ModelProto or the path of an .onnx file.
        what: name used in the message (default: the path).
    Raises:
        ViewrtError: naming the count and the first three violations.
    """
    bad = qdq_violations(model)
    if bad:
        name = what or (str(model) if not isinstance(model, onnx.ModelProto) else "graph")
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise ViewrtError(
            f"{name}: {len(bad)} Q/DQ node(s) break TensorRT's rules: {'; '.join(bad[:3])}{more}"
        )
