"""The analytic FLOPs the bench divides by (viewrt.models.efficient_lvsm.count_flops)
against the FLOPs of the exported graphs' MatMul/Gemm nodes, counted from their shapes
after ONNX shape inference with the dynamic axes set, at two cache sizes: within 2%."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, shape_inference

from viewrt.contract.manifest import load_manifest
from viewrt.contract.names import NUM_TARGETS, PAST_TOKENS
from viewrt.models.efficient_lvsm import EfficientLVSMConfig, count_flops


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Every tensor's static shape (inputs, initializers, inferred intermediates)."""
    out = {i.name: list(i.dims) for i in model.graph.initializer}
    for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out[v.name] = [d.dim_value for d in dims]
    for n in model.graph.node:  # Constant nodes (shape inference leaves them out of value_info)
        if n.op_type == "Constant":
            out[n.output[0]] = list(numpy_helper.to_array(n.attribute[0].t).shape)
    return out


def graph_matmul_flops(path, dims: dict[str, int]) -> float:
    """2 x multiply-adds of every MatMul and Gemm of the graph at ``path``, its dynamic
    input dimensions set to ``dims`` ({dim_param: value}). Raises AssertionError when a
    node's operand shapes cannot be inferred (the count would be short)."""
    model = onnx.load(str(path))
    for inp in model.graph.input:
        for d in inp.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.dim_value = dims[d.dim_param]
    model = shape_inference.infer_shapes(model, strict_mode=True)
    shapes, total = _shapes(model), 0.0
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        a, b = (shapes.get(x) for x in node.input[:2])
        assert a is not None and b is not None, f"{node.name}: operand shapes not inferred"
        if node.op_type == "Gemm":
            trans = {at.name: at.i for at in node.attribute}
            m, k = a[::-1] if trans.get("transA") else a
            n = b[0] if trans.get("transB") else b[1]
            total += 2.0 * m * k * n
            continue
        a, b = ([1, *a] if len(a) == 1 else a), (b + [1] if len(b) == 1 else b)
        batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
        total += 2.0 * float(np.prod(batch)) * a[-2] * a[-1] * b[-1]
    return total


@pytest.mark.parametrize("n_views", [2, 7])
def test_analytic_flops_match_the_exported_graphs(tiny_export, n_views):
    export_dir, _ = tiny_export
    m = load_manifest(export_dir)
    cfg = EfficientLVSMConfig(**m.config)
    n_targets = 3
    want = count_flops(cfg, n_views, n_targets)
    enc = graph_matmul_flops(export_dir / "encoder.onnx", {})
    dec = graph_matmul_flops(
        export_dir / "decoder.onnx",
        {NUM_TARGETS: n_targets, PAST_TOKENS: n_views * cfg.tokens_per_view},
    )
    assert enc > 0 and dec > 0
    assert enc == pytest.approx(want["encode"], rel=0.02), (enc, want["encode"])
    assert dec == pytest.approx(want["decode"], rel=0.02), (dec, want["decode"])


def test_the_count_sees_batched_matmuls(tmp_path):
    """A batched MatMul [2, 3, 4, 5] x [5, 6] and a transposed Gemm are counted in full."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["A", "B"], ["Y"]),
            helper.make_node("Gemm", ["C", "D"], ["Z"], transB=1),
        ],
        "g",
        [
            helper.make_tensor_value_info("A", TensorProto.FLOAT, [2, "x", 4, 5]),
            helper.make_tensor_value_info("C", TensorProto.FLOAT, [7, 8]),
        ],
        [
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("Z", TensorProto.FLOAT, None),
        ],
        [
            numpy_helper.from_array(np.zeros((5, 6), np.float32), "B"),
            numpy_helper.from_array(np.zeros((9, 8), np.float32), "D"),
        ],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert graph_matmul_flops(path, {"x": 3}) == 2 * (2 * 3 * 4 * 5 * 6) + 2 * (7 * 8 * 9)
