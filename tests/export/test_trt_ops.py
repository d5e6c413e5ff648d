"""Tests of the TensorRT 10.3 ONNX op list and the pre-build compatibility check (no TensorRT)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from viewrt.errors import ViewrtError
from viewrt.export.trt_ops import (
    TRT_10_3_ONNX_OPS,
    check_trt_compatible,
    non_constant_inputs,
    unsupported_ops,
)

D = 8  # hidden size of the toy graphs


def _model(nodes, opset=17, extra_opsets=(), initializers=()):
    """A graph x[1, T, D] -> y[1, T, D] made of `nodes` (first input 'x', last output 'y')."""
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T", D])],
        initializer=list(initializers),
    )
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    return helper.make_model(graph, opset_imports=opsets)


def _supported_model(opset=17):
    """LayerNorm -> MatMul -> Softmax -> Erf: all parsed by TensorRT 10.3."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.ones(D, np.float32), "ln_scale"),
        numpy_helper.from_array(np.zeros(D, np.float32), "ln_bias"),
        numpy_helper.from_array(rng.standard_normal((D, D)).astype(np.float32), "w"),
    ]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln_scale", "ln_bias"], ["n"], "ln", axis=-1),
        helper.make_node("MatMul", ["n", "w"], ["m"], "proj"),
        helper.make_node("Softmax", ["m"], ["s"], "softmax", axis=-1),
        helper.make_node("Erf", ["s"], ["y"], "erf"),
    ]
    return _model(nodes, opset, initializers=inits)


def test_supported_graph_passes(tmp_path):
    model = _supported_model()
    onnx.checker.check_model(model, full_check=True)
    assert unsupported_ops(model) == []
    check_trt_compatible(model)

    path = tmp_path / "toy.onnx"  # the path form reads the same graph
    onnx.save(model, path)
    check_trt_compatible(path)


def test_opset_23_attention_is_rejected_by_name():
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 2, "T", 4])
    nodes = [
        helper.make_node("Reshape", ["x", "shape4"], ["q"], "to_heads"),
        helper.make_node("Attention", ["q", "q", "q"], ["a"], "attn_0"),
        helper.make_node("Reshape", ["a", "shape3"], ["y"], "from_heads"),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, -1, 2, 4], np.int64), "shape4"),
        numpy_helper.from_array(np.array([1, -1, D], np.int64), "shape3"),
    ]
    model = _model(nodes, opset=23, initializers=inits)
    model.graph.value_info.append(q)

    assert unsupported_ops(model) == [("Attention", "attn_0")]
    with pytest.raises(ViewrtError, match=r"Attention x1 \(first: 'attn_0'\)") as err:
        check_trt_compatible(model)
    assert "opset is 23, expected 17..18" in str(err.value)


def test_rmsnorm_and_custom_domain_ops_are_grouped_with_counts():
    scale = numpy_helper.from_array(np.ones(D, np.float32), "scale")
    nodes = [
        helper.make_node("RMSNormalization", ["x", "scale"], ["r0"], "rms_0"),
        helper.make_node("RMSNormalization", ["r0", "scale"], ["r1"], "rms_1"),
        helper.make_node("FusedGelu", ["r1"], ["y"], "gelu", domain="com.example"),
    ]
    model = _model(nodes, opset=18, extra_opsets=[helper.make_opsetid("com.example", 1)],
                   initializers=[scale])  # fmt: skip

    assert unsupported_ops(model) == [
        ("RMSNormalization", "rms_0"),
        ("RMSNormalization", "rms_1"),
        ("com.example::FusedGelu", "gelu"),
    ]
    with pytest.raises(ViewrtError) as err:
        check_trt_compatible(model)
    msg = str(err.value)
    assert "3 node(s)" in msg
    assert "RMSNormalization x2 (first: 'rms_0')" in msg
    assert "com.example::FusedGelu x1 (first: 'gelu')" in msg
    assert "opset" not in msg  # opset 18 is fine


def test_ops_inside_subgraphs_are_checked():
    then_branch = helper.make_graph(
        [helper.make_node("Attention", ["x", "x", "x"], ["t"], "inner_attn")],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, "T", D])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"], "inner_id")],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, "T", D])],
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["y"], "branch",
                            then_branch=then_branch, else_branch=else_branch)  # fmt: skip
    model = _model([node], initializers=[cond])
    assert unsupported_ops(model) == [("Attention", "inner_attn")]


def test_opset_21_is_rejected():
    model = _supported_model(opset=21)
    assert unsupported_ops(model) == []
    with pytest.raises(ViewrtError, match="opset is 21, expected 17..18"):
        check_trt_compatible(model)


def test_opset_18_is_accepted():
    check_trt_compatible(_supported_model(opset=18))


def test_missing_file_is_a_viewrt_error(tmp_path):
    with pytest.raises(ViewrtError, match="not found"):
        check_trt_compatible(tmp_path / "absent.onnx")


def test_op_list_has_core_ops_and_lacks_newer_ones():
    core = {"MatMul", "Softmax", "LayerNormalization", "Erf", "Transpose", "Reshape", "Sigmoid"}
    assert core <= TRT_10_3_ONNX_OPS
    # Added to the parser after 10.3 (Attention 10.14, RMSNormalization and TensorScatter 10.15,
    # window functions 10.4) or never supported (DynamicQuantizeLinear).
    later = {"Attention", "RMSNormalization", "TensorScatter", "RotaryEmbedding",
             "BlackmanWindow", "STFT", "DynamicQuantizeLinear"}  # fmt: skip
    assert not later & TRT_10_3_ONNX_OPS


def test_axes_that_must_be_constant_are_checked():
    """ReduceMean/Squeeze/Unsqueeze/Slice `axes`: an initializer or a Constant node, never computed."""
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    ok = _model(
        [
            helper.make_node("ReduceMean", ["x", "axes"], ["m"], "mean", keepdims=1),
            helper.make_node("Add", ["x", "m"], ["y"], "add"),
        ],
        opset=18,
        initializers=[axes],
    )
    check_trt_compatible(ok)
    const = _model(
        [
            helper.make_node(
                "Constant",
                [],
                ["ax"],
                "ax",
                value=numpy_helper.from_array(np.array([-1], np.int64)),
            ),
            helper.make_node("ReduceMean", ["x", "ax"], ["m"], "mean", keepdims=1),
            helper.make_node("Add", ["x", "m"], ["y"], "add"),
        ],
        opset=18,
    )
    assert non_constant_inputs(const) == []

    computed = _model(
        [
            helper.make_node("Shape", ["x"], ["s"], "shape"),
            helper.make_node("Size", ["s"], ["n"], "rank"),
            helper.make_node("Sub", ["n", "one"], ["last"], "last_axis"),
            helper.make_node("Unsqueeze", ["last", "zero"], ["ax"], "to_1d"),
            helper.make_node("ReduceMean", ["x", "ax"], ["m"], "mean", keepdims=1),
            helper.make_node("Add", ["x", "m"], ["y"], "add"),
        ],
        opset=18,
        initializers=[
            numpy_helper.from_array(np.array(1, np.int64), "one"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
        ],
    )
    assert unsupported_ops(computed) == []
    assert non_constant_inputs(computed) == [("ReduceMean", "mean", "axes", "ax")]
    with pytest.raises(
        ViewrtError,
        match=r"needs as constants are computed: ReduceMean 'mean' input axes \(from 'ax'\)",
    ):
        check_trt_compatible(computed)


def test_exported_graphs_pass_the_constant_input_check(tiny_export):
    out_dir, _ = tiny_export
    for name in ("encoder.onnx", "decoder.onnx"):
        assert non_constant_inputs(out_dir / name) == []
        check_trt_compatible(out_dir / name)
