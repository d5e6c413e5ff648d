"""ONNX Runtime's int8 GEMM kernel: exact on every x86 CPU for int8 exports.

On x86 CPUs without VNNI, ONNX Runtime's default u8s8 int8 GEMM sums pairs of u8*s8 products
into 16 bits with saturation (its session config key ``session.x64quantprecision`` documents the
overflow); the int8 export of `small` scored 36 dB against fp32 there instead of 44-45 dB. The ort
backend asks for the exact kernel for int8 exports (viewrt/ort_kernels.py, exact_int8_kernel).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

ort = pytest.importorskip("onnxruntime")


def _matmul_integer_graph(k: int, n: int) -> bytes:
    """Y[int32] = MatMulInteger(A[u8, 1 x k], B[s8 constant, k x n]) (zero points 0)."""
    return helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
            "mmi",
            [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, k])],
            [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, n])],
            initializer=[helper.make_tensor("B", TensorProto.INT8, [k, n], [0] * (k * n))],
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    ).SerializeToString()


def _with_weights(model: bytes, b: np.ndarray) -> bytes:
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(model)
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(b, "B"))
    return m.SerializeToString()


def test_exact_kernel_sums_saturating_products_exactly():
    """Pairs of 255 * 127 overflow a 16-bit sum (64770 > 32767): with the exact kernel the
    result equals the integer product on any CPU (with or without VNNI)."""
    from viewrt.ort_kernels import EXACT_INT8_KEY, exact_int8_kernel

    rng = np.random.default_rng()
    k, n, m = 256, 64, 8
    a = rng.integers(200, 256, size=(m, k), dtype=np.uint8)  # large activations
    b = rng.integers(100, 128, size=(k, n), dtype=np.int8)  # large weights of one sign
    opts = ort.SessionOptions()
    exact_int8_kernel(opts)
    assert opts.get_session_config_entry(EXACT_INT8_KEY) == "1"
    sess = ort.InferenceSession(
        _with_weights(_matmul_integer_graph(k, n), b), opts, providers=["CPUExecutionProvider"]
    )
    got = sess.run(None, {"A": a})[0]
    want = a.astype(np.int64) @ b.astype(np.int64)
    assert 2 * int(a.min()) * int(b.min()) > 32767  # every pair of products overflows 16 bits
    np.testing.assert_array_equal(got, want)


def test_ort_backend_asks_for_the_exact_kernel_for_int8_exports_only(tiny_export, tmp_path):
    """An int8 export's sessions carry the key; an fp32 export's do not."""
    import viewrt.runtime as vrt
    from viewrt.calib.quantize import quantize_export
    from viewrt.ort_kernels import EXACT_INT8_KEY

    q = tmp_path / "int8"
    quantize_export(tiny_export[0], q, "int8", synthetic=1)

    def entry(sess):
        try:
            return sess.get_session_options().get_session_config_entry(EXACT_INT8_KEY)
        except RuntimeError:  # "SessionOptions does not have configuration with key"
            return None

    for export, want in ((q, "1"), (tiny_export[0], None)):
        with vrt.open(export, "ort") as r:
            assert set(r.backend.sessions) == {"encoder", "decoder"}
            for g, sess in r.backend.sessions.items():
                assert entry(sess) == want, (export, g)
