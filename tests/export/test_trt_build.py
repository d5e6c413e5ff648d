"""Tests of engine building: manifest arithmetic everywhere, engine builds where TensorRT runs."""

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from viewrt.contract.estimate import device_row, estimate
from viewrt.contract.families import family_contract
from viewrt.contract.manifest import Manifest
from viewrt.contract.tensors import GraphInfo, TensorInfo
from viewrt.errors import ViewrtError
from viewrt.export.trt_build import (
    build_all,
    build_engine,
    engine_io,
    profiles_for,
    trt_available,
    trt_major,
)

T, D, HEADS = 4, 8, 2  # tokens per view, model width, heads of the toy manifest
IR_VERSION = 8  # the IR of opset 17/18; newer onnx writes a newer IR that ONNX Runtime may refuse


def _manifest(max_views=4, kv_dtype="float16", **header) -> Manifest:
    """A toy Efficient-LVSM manifest, its graph signatures from the family's contract."""
    h = {
        "image_size": 16, "patch_size": 8, "tokens_per_view": T, "n_layers": 2,
        "n_heads": HEADS, "head_dim": D // HEADS, "d_model": D, "max_views": max_views,
        "max_targets": 8, **header,
    }  # fmt: skip
    contract = family_contract("efficient-lvsm")
    sigs = contract.signatures(h, kv_dtype)
    graphs = {g.name: sigs[g.name].graph_info(g.file) for g in contract.graphs}
    m = Manifest(
        family="efficient-lvsm", preset="toy", config={}, precision="fp16", kv_dtype=kv_dtype,
        opset=18, header=h, graphs=graphs,
    )  # fmt: skip
    m.check_bounds()
    return m


def _gpu(m, views, targets):
    return device_row(estimate(m, views, "fp16", targets, process_bytes=0), "gpu")


# ---------------------------------------------------------------------------- arithmetic


def test_estimate_kv_cache_is_the_contract_arithmetic():
    # layers * (K, V) * views * tokens * d_model * 2 bytes (fp16)
    assert _gpu(_manifest(), 4, 3)["kv_cache"] == 2 * 2 * 4 * T * D * 2 == 1024
    small = _gpu(_manifest(max_views=8), 2, 1)
    big = _gpu(_manifest(max_views=8), 8, 1)
    assert big["kv_cache"] == 4 * small["kv_cache"]


def test_estimate_realistic_cache():
    # 12 layers, 768 wide, 256 tokens per view, 16 views in fp16: 144 MiB of cache.
    m = _manifest(
        max_views=16, n_layers=12, d_model=768, n_heads=12, head_dim=64, tokens_per_view=256,
        image_size=256, patch_size=16,
    )  # fmt: skip
    assert _gpu(m, 16, 8)["kv_cache"] == 12 * 2 * 16 * 256 * 768 * 2 == 144 * 2**20


def test_estimate_rejects_views_beyond_the_export():
    with pytest.raises(ViewrtError, match=r"1\.\.4"):
        estimate(_manifest(), 5, "fp16", 1, process_bytes=0)


def test_profiles_for_defaults():
    p = profiles_for(_manifest(max_views=4), limits={"num_targets": 3})
    assert set(p) == {"encoder", "decoder"}
    static = (1, 9, 16, 16)
    assert p["encoder"] == {"view": (static, static, static)}
    # the one opt rule: past_tokens one view .. max_views, tuned for max_views // 2 views;
    # num_targets 1..3, tuned for 3 (the runtime decodes up to max_targets at once)
    assert p["decoder"]["past_key.0"] == ((1, T, 2, 4), (1, 2 * T, 2, 4), (1, 4 * T, 2, 4))
    assert p["decoder"]["target_rays"] == (
        (1, 1, 6, 16, 16), (1, 3, 6, 16, 16), (1, 3, 6, 16, 16)
    )  # fmt: skip


def test_profiles_are_the_manifest_ranges():
    m = _manifest(max_views=6)
    r = m.dynamic_ranges(4, {"num_targets": 2})
    p = profiles_for(m, 4, {"num_targets": 2})
    assert p["decoder"]["past_value.1"] == tuple((1, v, 2, 4) for v in r["past_tokens"])
    assert p["decoder"]["target_rays"] == tuple((1, v, 6, 16, 16) for v in r["num_targets"])


def test_profiles_for_opt_overrides_and_one_view():
    p = profiles_for(
        _manifest(), 4, {"num_targets": 8}, opt={"past_tokens": 3 * T, "num_targets": 2}
    )
    assert p["decoder"]["past_key.0"][1] == (1, 3 * T, 2, 4)
    assert p["decoder"]["target_rays"][1] == (1, 2, 6, 16, 16)
    one = profiles_for(_manifest(), 1, {"num_targets": 1})
    assert one["decoder"]["past_key.0"] == ((1, T, 2, 4),) * 3


def test_profiles_for_rejects_bad_input():
    with pytest.raises(ViewrtError, match=r"opt past_tokens: expected 4..16"):
        profiles_for(_manifest(), 4, opt={"past_tokens": 5 * T})
    with pytest.raises(ViewrtError, match="opt num_targets"):
        profiles_for(_manifest(), 4, {"num_targets": 2}, opt={"num_targets": 3})
    with pytest.raises(ViewrtError, match=r"admits 1..4 views"):
        profiles_for(_manifest(), 5)
    with pytest.raises(ViewrtError, match="unknown dynamic dimension 'past_len'"):
        profiles_for(_manifest(), 4, {"past_len": 2})


def test_build_engine_checks_arguments_before_tensorrt(tmp_path):
    with pytest.raises(ViewrtError, match="precision"):
        build_engine(tmp_path / "a.onnx", tmp_path / "a.engine", {}, precision="int4")
    with pytest.raises(ViewrtError, match="not found"):
        build_engine(tmp_path / "absent.onnx", tmp_path / "a.engine", {})


def test_trt_available_gives_a_reason():
    ok, why = trt_available()
    assert isinstance(ok, bool) and why


TRT_OK, TRT_WHY = trt_available()


@pytest.mark.skipif(TRT_OK, reason="TensorRT is usable here; this checks the error without it")
def test_build_engine_without_tensorrt_names_the_reason(tmp_path):
    path = tmp_path / "toy.onnx"
    onnx.save(_matmul_softmax(), path)
    with pytest.raises(ViewrtError, match="cannot build 'toy.engine'"):
        build_engine(path, tmp_path / "toy.engine", {"x": ((1, 1, D), (1, 4, D), (1, 16, D))})
    assert not (tmp_path / "toy.engine").exists()


# ---------------------------------------------------------------------------- TensorRT builds


def needs_trt(test):
    """Mark a test `trt` and `gpu`: conftest skips it with the reason where either is missing."""
    return pytest.mark.trt(pytest.mark.gpu(test))


X_PROFILE = {"x": ((1, 1, D), (1, 4, D), (1, 16, D))}


def _matmul_softmax(opset=17):
    """x[1, T, D] -> Softmax(x @ W) with a dynamic T."""
    w = np.random.default_rng(0).standard_normal((D, D)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"], "proj"),
            helper.make_node("Softmax", ["m"], ["y"], "softmax", axis=-1),
        ],
        "matmul_softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T", D])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION
    )


def _compare_with_onnxruntime(onnx_path, engine_path, atol, rtol):
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import EngineFromPath, TrtRunner
    from polygraphy.comparator import Comparator, CompareFunc

    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, t, D)).astype(np.float32)} for t in (1, 5, 16)]
    runners = [
        OnnxrtRunner(SessionFromOnnx(str(onnx_path))),
        TrtRunner(EngineFromPath(str(engine_path))),
    ]
    results = Comparator.run(runners, data_loader=feeds)
    compare = CompareFunc.simple(atol=atol, rtol=rtol)
    return bool(Comparator.compare_accuracy(results, compare_func=compare))


@pytest.fixture
def toy_onnx(tmp_path):
    path = tmp_path / "toy.onnx"
    onnx.save(_matmul_softmax(), path)
    return path


@needs_trt
def test_fp32_engine_matches_onnxruntime(tmp_path, toy_onnx):
    engine = tmp_path / "toy.engine"
    cache = tmp_path / "timing.cache"
    info = build_engine(toy_onnx, engine, X_PROFILE, "fp32", timing_cache=cache)

    data = engine.read_bytes()
    assert info["file"] == "toy.engine"
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["size_bytes"] == len(data)
    assert info["profiles"] == {"x": {"min": [1, 1, D], "opt": [1, 4, D], "max": [1, 16, D]}}
    assert info["precision"] == "fp32" and info["tensorrt"] and info["gpu"]
    assert cache.stat().st_size > 0
    assert engine_io(engine) == [
        {"name": "x", "mode": "input", "dtype": "float32", "shape": [1, -1, D]},
        {"name": "y", "mode": "output", "dtype": "float32", "shape": [1, -1, D]},
    ]
    assert _compare_with_onnxruntime(toy_onnx, engine, atol=1e-5, rtol=1e-4)

    # A second build reuses the timing cache written by the first.
    again = build_engine(toy_onnx, tmp_path / "again.engine", X_PROFILE, "fp32", timing_cache=cache)
    assert again["size_bytes"] > 0


@needs_trt
def test_fp16_per_tensorrt_version(tmp_path, toy_onnx):
    engine = tmp_path / "toy16.engine"
    if trt_major() >= 11:  # strongly typed: an fp32 graph cannot become fp16 by a flag
        with pytest.raises(ViewrtError, match="--precision fp16"):
            build_engine(toy_onnx, engine, X_PROFILE, "fp16")
        assert not engine.exists()
    else:
        info = build_engine(
            toy_onnx, engine, X_PROFILE, "fp16"
        )  # fp32 graph: FP16 flag, weakly typed
        assert info["precision"].startswith("fp16") and info["typing"] == "weak"
        assert info["builder_flags"] == {"fp16": True, "tf32": False}
        assert _compare_with_onnxruntime(toy_onnx, engine, atol=1e-2, rtol=1e-2)


@needs_trt
def test_build_errors_are_viewrt_errors(tmp_path, toy_onnx):
    with pytest.raises(ViewrtError, match="input 'x' has dynamic shape"):
        build_engine(toy_onnx, tmp_path / "a.engine", {})
    with pytest.raises(ViewrtError, match="axis 2: the dimension is static"):
        build_engine(toy_onnx, tmp_path / "a.engine", {"x": ((1, 1, 4), (1, 1, 4), (1, 2, 4))})

    model = _matmul_softmax()
    model.graph.node[1].op_type, model.graph.node[1].domain = "NoSuchOp", "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, bad)
    with pytest.raises(ViewrtError, match="cannot parse 'bad.onnx'"):
        build_engine(bad, tmp_path / "bad.engine", X_PROFILE)
    assert not (tmp_path / "bad.engine").exists()


@needs_trt
def test_build_all_from_a_manifest(tmp_path):
    # Encoder: one view's tokens [1, T, D] -> K; decoder: targets attend to the cached K.
    w = numpy_helper.from_array(np.eye(D, dtype=np.float32), "w")
    enc = helper.make_graph(
        [helper.make_node("MatMul", ["tokens", "w"], ["present.0.key"], "k_proj")],
        "encoder",
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, [1, T, D])],
        [helper.make_tensor_value_info("present.0.key", TensorProto.FLOAT, [1, T, D])],
        initializer=[w],
    )
    dec = helper.make_graph(
        [
            helper.make_node("Transpose", ["past.0.key"], ["kt"], "kt", perm=[0, 2, 1]),
            helper.make_node("MatMul", ["query", "kt"], ["s"], "scores"),
            helper.make_node("Softmax", ["s"], ["p"], "softmax", axis=-1),
            helper.make_node("MatMul", ["p", "past.0.key"], ["out"], "mix"),
        ],
        "decoder",
        [
            helper.make_tensor_value_info("query", TensorProto.FLOAT, [1, "num_targets", D]),
            helper.make_tensor_value_info("past.0.key", TensorProto.FLOAT, [1, "past_tokens", D]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "num_targets", D])],
    )
    for graph in (enc, dec):
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION
        )
        onnx.save(model, tmp_path / f"{graph.name}.onnx")

    manifest = _manifest(max_views=4, kv_dtype="float32")
    # the toy graphs' own tensors (build_all reads the graphs' inputs from the manifest)
    manifest.graphs = {
        "encoder": GraphInfo("encoder.onnx", (TensorInfo("tokens", "float32", (1, T, D)),), ()),
        "decoder": GraphInfo(
            "decoder.onnx",
            (
                TensorInfo("query", "float32", (1, "num_targets", D)),
                TensorInfo("past.0.key", "float32", (1, "past_tokens", D)),
            ),
            (),
        ),
    }
    infos = build_all(tmp_path, manifest, "fp32", 4, {"num_targets": 2})

    assert set(infos) == {"encoder", "decoder"}
    assert (tmp_path / "encoder.engine").is_file() and (tmp_path / "decoder.engine").is_file()
    assert (tmp_path / "timing.cache").is_file()
    assert infos["decoder"]["profiles"]["past.0.key"] == {
        "min": [1, T, D], "opt": [1, 2 * T, D], "max": [1, 4 * T, D]
    }  # fmt: skip
    modes = {t["name"]: t["mode"] for t in engine_io(tmp_path / "decoder.engine")}
    assert modes == {"query": "input", "past.0.key": "input", "out": "output"}
