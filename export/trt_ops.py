"""Which ONNX operators TensorRT 10.3 (JetPack 6) can parse, and a check to run before a build.

The exported graphs must build on TensorRT 10.3, the version JetPack 6 ships for Jetson Orin.
Checking the op list and opset here turns a parser failure on the device, minutes into a
build, into one clear error on the export machine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import onnx

from viewrt.errors import ViewrtError

# Operators marked "Y" in the Operator Support Matrix of onnx-tensorrt's docs/operators.md
# (Apache-2.0), transcribed as data. Rows marked "N" are left out (e.g. DynamicQuantizeLinear,
# MatMulInteger, QLinearMatMul, BlackmanWindow, HannWindow, HammingWindow, STFT, DFT, Col2Im,
# Unique, Sequence*, Optional*, Bitwise*, String*).
#
# Source: github.com/onnx/onnx-tensorrt, docs/operators.md at tag release/10.1-GA
# (commit 96e781103cfc4adf4a6bb557e94bac8e693f6f4c, "ONNX-TensorRT 10.1 GA release").
# The exact 10.3 file is the one at commit 62bdde2a04fcd53c2409cb895ee18db445b7e755 (the
# parsers/onnx submodule that github.com/NVIDIA/TensorRT pins at tag v10.3.0); no copy of that
# revision could be read here, so the 10.1 GA table is used. docs/Changelog.md of onnx-tensorrt
# adds no operator in 10.2 GA or 10.3 GA (10.3 only adds tensor `axes` for Slice and a new
# ScatterElements plugin); the next additions are BlackmanWindow, HammingWindow, HannWindow
# (10.4) and STFT (10.5), which are not in this set. The list was also checked against the
# DEFINE_BUILTIN_OP_IMPORTER registrations in onnxOpImporters.cpp at the same 10.1 commit.
#
# Absent in 10.3 and therefore absent here: Attention (parser support from 10.14),
# RMSNormalization (10.15) and the KV-cache update op TensorScatter (10.15). Graphs for Orin
# express attention as MatMul -> Softmax -> MatMul and RMSNorm as plain arithmetic.
TRT_10_3_ONNX_OPS: frozenset[str] = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan",
    "Atanh", "AveragePool", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu",
    "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh",
    "CumSum", "DeformConv", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum",
    "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather",
    "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool",
    "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization", "GRU",
    "Hardmax", "HardSigmoid", "HardSwish", "Identity", "If", "ImageScaler",
    "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu", "Less",
    "LessOrEqual", "Log", "LogSoftmax", "Loop", "LpNormalization", "LpPool", "LRN", "LSTM",
    "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod",
    "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad",
    "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear", "RandomNormal",
    "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range", "Reciprocal",
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize",
    "ReverseSequence", "RNN", "RoiAlign", "Round", "ScaledTanh", "Scan", "Scatter",
    "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin",
    "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split",
    "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK",
    "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
})  # fmt: skip

# Per-op restrictions of the same table (its "Restrictions" column): inputs that TensorRT's
# parser needs as build-time constants (an initializer, or a Constant node's output). ReduceX:
# "`axes` must be an initializer"; Slice: "`axes` must be an initializer" (10.1 GA table; the
# 10.3 changelog relaxes it, kept here so graphs stay parseable by 10.x before 10.3 too);
# Squeeze / Unsqueeze: "`axes` must be resolvable to a constant". {op: ((input index, name),)}.
CONSTANT_INPUTS: dict[str, tuple[tuple[int, str], ...]] = {
    **{op: ((1, "axes"),) for op in (
        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
        "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Squeeze", "Unsqueeze")},
    "Slice": ((3, "axes"),),
}  # fmt: skip

_DEFAULT_DOMAINS = ("", "ai.onnx")


def _load(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise ViewrtError(f"ONNX file '{path}': not found")
    try:
        # Only the graph structure is needed: leave external weights on disk.
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError type
        raise ViewrtError(f"ONNX file '{path}': cannot be read ({e})") from e


def _walk(nodes) -> Iterator[onnx.NodeProto]:
    """Yield every node, descending into If/Loop/Scan bodies."""
    for node in nodes:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attr.g.node)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _walk(g.node)


def _label(node: onnx.NodeProto) -> str:
    if node.name:
        return node.name
    return f"<unnamed, output '{node.output[0]}'>" if node.output else "<unnamed>"


def unsupported_ops(
    model: onnx.ModelProto | str | Path, supported: frozenset[str] = TRT_10_3_ONNX_OPS
) -> list[tuple[str, str]]:
    """List the nodes that TensorRT's ONNX parser would reject.

    Nodes inside control-flow bodies (If/Loop/Scan) and model-local functions are checked
    too. A node that calls a model-local function is not itself reported, since the parser
    inlines local functions; the nodes of the function body are checked instead.

    Args:
        model: A loaded model or the path of an ``.onnx`` file (external weights are not read).
        supported: Operator types of the default ONNX domain that the parser supports.

    Returns:
        ``(op_type, node_name)`` for each node whose op type is not in ``supported`` or whose
        domain is not the default one; a custom-domain op is written ``"domain::OpType"``.
        Unnamed nodes are labelled by their first output. Empty when everything is supported.

    Raises:
        ViewrtError: The file does not exist or is not an ONNX model.
    """
    proto = _load(model)
    local_functions = {(f.domain, f.name) for f in proto.functions}
    nodes = list(_walk(proto.graph.node))
    for function in proto.functions:
        nodes.extend(_walk(function.node))

    bad = []
    for node in nodes:
        if (node.domain, node.op_type) in local_functions:
            continue
        if node.domain not in _DEFAULT_DOMAINS:
            bad.append((f"{node.domain}::{node.op_type}", _label(node)))
        elif node.op_type not in supported:
            bad.append((node.op_type, _label(node)))
    return bad


def non_constant_inputs(model: onnx.ModelProto | str | Path) -> list[tuple[str, str, str, str]]:
    """List the node inputs that TensorRT needs as constants but the graph computes.

    Args:
        model: A loaded model or the path of an ``.onnx`` file (external weights are not read).

    Returns:
        ``(op_type, node_name, input_role, tensor_name)`` for each input listed in
        :data:`CONSTANT_INPUTS` that is neither an initializer nor a Constant node's output
        (in the graph or an enclosing graph). Empty when every such input is constant.

    Raises:
        ViewrtError: The file does not exist or is not an ONNX model.
    """
    proto = _load(model)
    bad = []

    def visit(graph: onnx.GraphProto, outer: frozenset[str]) -> None:
        constants = set(outer) | {i.name for i in graph.initializer}
        constants |= {
            o
            for n in graph.node
            if n.op_type == "Constant" and n.domain in _DEFAULT_DOMAINS
            for o in n.output
        }
        for node in graph.node:
            if node.domain in _DEFAULT_DOMAINS:
                for index, role in CONSTANT_INPUTS.get(node.op_type, ()):
                    if (
                        index < len(node.input)
                        and node.input[index]
                        and node.input[index] not in constants
                    ):
                        bad.append((node.op_type, _label(node), role, node.input[index]))
            for attr in node.attribute:
                for sub in (
                    [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
                ):
                    visit(sub, frozenset(constants))

    visit(proto.graph, frozenset())
    return bad


def _default_opset(proto: onnx.ModelProto) -> int | None:
    for opset in proto.opset_import:
        if opset.domain in _DEFAULT_DOMAINS:
            return opset.version
    return None


def check_trt_compatible(
    model: onnx.ModelProto | str | Path,
    opset_range: tuple[int, int] = (17, 18),
    supported: frozenset[str] = TRT_10_3_ONNX_OPS,
) -> None:
    """Fail early when a graph will not parse on TensorRT 10.3.

    Args:
        model: A loaded model or the path of an ``.onnx`` file.
        opset_range: Inclusive range of default-domain opsets accepted (17..18: opset 17 has
            LayerNormalization, and both are well inside what TensorRT 10.3 parses).
        supported: Operator types of the default ONNX domain that the parser supports.

    Raises:
        ViewrtError: The default-domain opset is missing or outside ``opset_range``, some
            nodes use unsupported ops, or an input that must be constant (:data:`CONSTANT_INPUTS`,
            e.g. ReduceMean's ``axes``) is computed. The message names each offending op with its node
            count and the first node, e.g. ``Attention x2 (first: 'attn_0')``.
    """
    proto = _load(model)
    problems = []

    lo, hi = opset_range
    opset = _default_opset(proto)
    if opset is None:
        problems.append("the model imports no default-domain ONNX opset")
    elif not lo <= opset <= hi:
        problems.append(f"default-domain opset is {opset}, expected {lo}..{hi}")

    bad = unsupported_ops(proto, supported)
    if bad:
        counts = Counter(op for op, _ in bad)
        first: dict[str, str] = {}
        for op, name in bad:
            first.setdefault(op, name)
        listed = ", ".join(f"{op} x{n} (first: '{first[op]}')" for op, n in counts.most_common())
        problems.append(f"{len(bad)} node(s) use ops TensorRT 10.3 cannot parse: {listed}")

    computed = non_constant_inputs(proto)
    if computed:
        listed = ", ".join(
            f"{op} '{name}' input {role} (from '{src}')" for op, name, role, src in computed[:5]
        )
        more = f" and {len(computed) - 5} more" if len(computed) > 5 else ""
        problems.append(
            f"{len(computed)} node input(s) TensorRT needs as constants are computed: {listed}{more}"
        )

    if problems:
        name = proto.graph.name or "model"
        raise ViewrtError(
            f"ONNX graph '{name}' is not TensorRT 10.3 compatible: " + "; ".join(problems)
        )
