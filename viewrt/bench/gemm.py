"""GEMM probes of the roofline (torch-free): the rate one matrix multiply reaches in each
precision on each engine present, at a large square size and at the model's MLP shape.

- numpy: fp32 (its BLAS).
- ONNX Runtime: a one-MatMul graph (fp32); int8 as MatMulInteger (uint8 x int8 -> int32,
  the U8S8 kernel) and as a Q/DQ graph (QuantizeLinear/DequantizeLinear around the
  MatMul, which ONNX Runtime fuses into an integer matmul). No bf16: ONNX Runtime has no
  bf16 GEMM on x86 (docs/bench notes).
- OpenVINO: the same one-MatMul graph compiled with INFERENCE_PRECISION_HINT f32 and bf16;
  int8 through its low-precision path: the Q/DQ graph, read as FakeQuantize and run as an
  int8 matmul. Each compiled probe is checked from the runtime model's node precisions
  (a probe that did not run in the precision it is for is dropped, with the reason).
- PyTorch: brought by the baselines provider (``viewrt bench``), the harness merges it.

The weight operand is a graph constant (as a model's Linear weights are); the activation
is an input. FLOPs: 2 M K N per product. Each rate is the median of ``reps`` timed runs
after one warm-up. Graphs are built with ``onnx`` where installed (else the ONNX Runtime
and OpenVINO probes are skipped, with the reason).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from viewrt.ort_kernels import exact_int8_kernel
from viewrt.timing import matmul_gflops, timed_gflops

# onnx, onnxruntime and openvino are imported lazily: a probe whose engine is absent is skipped.

PRECISIONS = ("fp32", "bf16", "int8")


def shape_name(shape: tuple[int, int, int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _onnx_graph(shape, kind: str, rng) -> bytes:
    """A one-MatMul ONNX model ``Y = A @ B`` of ``shape`` (M, K, N), B a constant:
    "fp32" (MatMul), "qdq" (A and B through symmetric int8 Q/DQ, then MatMul) or
    "matmulinteger" (uint8 A, int8 B -> int32)."""
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = (int(s) for s in shape)
    w = rng.standard_normal((k, n)).astype(np.float32)
    nodes, inits = [], []
    if kind == "fp32":
        a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])
        inits.append(numpy_helper.from_array(w, "B"))
        nodes.append(helper.make_node("MatMul", ["A", "B"], ["Y"]))
    elif kind == "qdq":
        a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])
        sw = float(np.abs(w).max() / 127)
        wq = np.clip(np.round(w / sw), -127, 127).astype(np.int8)
        inits += [
            numpy_helper.from_array(wq, "Bq"),
            numpy_helper.from_array(np.float32(sw), "sb"),
            numpy_helper.from_array(np.float32(4.0 / 127), "sa"),
            numpy_helper.from_array(np.int8(0), "z"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["A", "sa", "z"], ["Aq"]),
            helper.make_node("DequantizeLinear", ["Aq", "sa", "z"], ["Ad"]),
            helper.make_node("DequantizeLinear", ["Bq", "sb", "z"], ["Bd"]),
            helper.make_node("MatMul", ["Ad", "Bd"], ["Y"]),
        ]
    elif kind == "matmulinteger":
        a = helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])
        y = helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])
        wq = np.clip(np.round(w * 30), -127, 127).astype(np.int8)
        inits += [
            numpy_helper.from_array(wq, "Bq"),
            numpy_helper.from_array(np.uint8(128), "za"),
            numpy_helper.from_array(np.int8(0), "zb"),
        ]
        nodes.append(helper.make_node("MatMulInteger", ["A", "Bq", "za", "zb"], ["Y"]))
    else:
        raise ValueError(kind)
    graph = helper.make_graph(nodes, f"gemm_{kind}", [a], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _input(shape, kind: str, rng) -> np.ndarray:
    m, k, _ = (int(s) for s in shape)
    if kind == "matmulinteger":
        return rng.integers(0, 256, (m, k), dtype=np.uint8)
    return rng.standard_normal((m, k)).astype(np.float32)


def numpy_rates(shapes, reps: int = 5) -> dict[str, float]:
    """``{"numpy fp32 MxKxN": GFLOP/s}`` for each shape."""
    rng = np.random.default_rng(0)
    out = {}
    for s in shapes:
        m, k, n = (int(x) for x in s)
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        out[f"numpy {shape_name(s)}"] = matmul_gflops(a, b, 2 * m * k * n, reps)
    return out


def ort_rates(shapes, precision: str, threads: int | None = None, reps: int = 5) -> dict:
    """ONNX Runtime's rates in ``precision``: ({"onnxruntime <graph> MxKxN": GFLOP/s},
    {probe: why it did not run})."""
    kinds = {"fp32": ["fp32"], "int8": ["matmulinteger", "qdq"]}.get(precision, [])
    rates, skipped = {}, {}
    if not kinds:
        return rates, skipped
    try:
        import onnxruntime as ort
    except ImportError as e:
        return rates, {f"onnxruntime {precision}": f"not installed ({e})"}
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if precision == "int8":  # the kernel the ort backend runs int8 exports with
        exact_int8_kernel(opts)
    rng = np.random.default_rng(0)
    for s in shapes:
        for kind in kinds:
            name = f"onnxruntime {'' if kind == 'fp32' else kind + ' '}{shape_name(s)}"
            try:
                sess = ort.InferenceSession(
                    _onnx_graph(s, kind, rng), opts, providers=["CPUExecutionProvider"]
                )
            except ImportError as e:
                return rates, {f"onnxruntime {precision}": f"onnx not installed ({e})"}
            except Exception as e:  # noqa: BLE001 - a kernel missing in this build: say so
                skipped[name] = str(e).splitlines()[0][:200]
                continue
            feed = {"A": _input(s, kind, rng)}
            rates[name] = timed_gflops(lambda: sess.run(None, feed), 2 * np.prod(s), reps)
    return rates, skipped


# OpenVINO's runtime precision names per probe precision (the matmul node must run in it)
_OV_RUNTIME = {"fp32": ("f32", "FP32"), "bf16": ("bf16", "BF16"), "int8": ("i8", "u8", "I8", "U8")}


def _ov_matmul_precision(compiled) -> str:
    """The runtime precision of the compiled model's matmul node (FullyConnected/MatMul,
    from the runtime model's rt_info), or "?"."""
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        try:
            layer = info["layerType"].astype(str)
            if layer in ("FullyConnected", "MatMul"):
                return info["runtimePrecision"].astype(str)
        except (KeyError, RuntimeError, AttributeError):  # no such rt_info entry
            continue
    return "?"


def openvino_rates(shapes, precision: str, threads: int | None = None, reps: int = 5) -> dict:
    """OpenVINO's rates in ``precision``: ({"openvino <graph> MxKxN": GFLOP/s}, {probe:
    why it did not count}); a probe whose matmul ran in another precision is refused."""
    try:
        import openvino as ov
    except ImportError as e:
        return {}, {f"openvino {precision}": f"not installed ({e})"}
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    kind = "qdq" if precision == "int8" else "fp32"
    if precision != "int8":
        config["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16"}[precision]
    rng = np.random.default_rng(0)
    rates, skipped = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for s in shapes:
            name = f"openvino {'qdq ' if kind == 'qdq' else ''}{shape_name(s)}"
            try:
                path = Path(tmp) / f"{kind}_{shape_name(s)}.onnx"
                path.write_bytes(_onnx_graph(s, kind, rng))
                compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
            except ImportError as e:
                return rates, {f"openvino {precision}": f"onnx not installed ({e})"}
            except Exception as e:  # noqa: BLE001 - e.g. bf16 on a CPU without it
                skipped[name] = str(e).splitlines()[0][:200]
                continue
            ran = _ov_matmul_precision(compiled)
            if ran not in _OV_RUNTIME[precision]:
                skipped[name] = f"its matmul ran in {ran}, not {precision}"
                continue
            request, a = compiled.create_infer_request(), _input(s, kind, rng)
            rates[name] = timed_gflops(lambda: request.infer({0: a}), 2 * np.prod(s), reps)
    return rates, skipped


def engine_rates(shapes, precision: str, threads: int | None = None, reps: int = 5):
    """Every torch-free engine's rates in ``precision`` at ``shapes``: (rates, skipped)."""
    rates = numpy_rates(shapes, reps) if precision == "fp32" else {}
    skipped: dict[str, str] = {}
    for probe in (ort_rates, openvino_rates):
        r, s = probe(shapes, precision, threads, reps)
        rates.update(r)
        skipped.update(s)
    return rates, skipped
