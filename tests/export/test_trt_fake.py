"""The TensorRT build path and the TensorRT backend's binding logic, run through the FAKE
``tensorrt`` module in tests/fake_tensorrt (TensorRT 10.3 and 11.1 API surfaces) on the CPU.

These tests prove that viewrt calls the documented API as documented (names, signatures,
None/False returns, version-dependent enums, typing and flags). They prove nothing about
numerics and never count as TensorRT running: the fake computes nothing, its plans are marked
fake, and its version string ends in "+fake". The real-TensorRT tests are marked ``trt``/``gpu``
(tests/test_trt_build.py, tests/test_runtime.py) and skip here with a reason.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import types

import fake_tensorrt
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from viewrt import devices
from viewrt.errors import ViewrtError
from viewrt.export.trt_build import build_engine, engine_io, trt_available

D = 8
PROFILE = {"x": ((1, 1, D), (1, 4, D), (1, 16, D))}


@pytest.fixture(params=fake_tensorrt.VERSIONS)
def fake_trt(request, monkeypatch):
    """The fake tensorrt of one version (and a fake CUDA runtime with one 'GPU') for one test."""
    devices.reset()
    trt = fake_tensorrt.install(monkeypatch, request.param)
    yield trt
    devices.reset()


def _toy(path, fp16: bool = False):
    """x[1, T, D] -> Softmax(x @ W); fp16: fp16 I/O and weights (a typed graph)."""
    dt, np_dt = (TensorProto.FLOAT16, np.float16) if fp16 else (TensorProto.FLOAT, np.float32)
    w = np.random.default_rng(0).standard_normal((D, D)).astype(np_dt)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"], "proj"),
            helper.make_node("Softmax", ["m"], ["y"], "softmax", axis=-1),
        ],
        "toy",
        [helper.make_tensor_value_info("x", dt, [1, "T", D])],
        [helper.make_tensor_value_info("y", dt, [1, "T", D])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path
    )
    return path


def _plan(path) -> dict:
    """What the fake recorded in its (fake) plan file: typing, flags, IO."""
    data = path.read_bytes()
    assert data.startswith(fake_tensorrt.FAKE_PLAN_MAGIC)
    return json.loads(data[len(fake_tensorrt.FAKE_PLAN_MAGIC) :])


# ---------------------------------------------------------------------------- the fake itself


def test_the_fake_says_it_is_fake_and_is_never_taken_for_tensorrt(fake_trt, tmp_path):
    import conftest

    assert fake_trt.__version__.endswith("+fake") and "FAKE" in fake_trt.__doc__
    assert conftest._real_tensorrt() == "only the fake TensorRT (tests/fake_tensorrt) is loaded"
    # A fresh network is falsy, as in the real bindings (len() is the layer count).
    network = fake_trt.Builder(fake_trt.Logger()).create_network(0)
    assert network is not None and len(network) == 0 and not network
    # Its runtime refuses anything that is not its own plan (e.g. a real engine's bytes).
    assert fake_trt.Runtime(fake_trt.Logger()).deserialize_cuda_engine(b"\x00" * 64) is None


def test_version_dependent_enums(fake_trt):
    if fake_trt.__version__.startswith("11."):
        assert not hasattr(fake_trt.BuilderFlag, "FP16") and not hasattr(
            fake_trt.BuilderFlag, "INT8"
        )
        assert not hasattr(fake_trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    else:
        assert hasattr(fake_trt.BuilderFlag, "FP16")
    assert hasattr(fake_trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") and hasattr(
        fake_trt.BuilderFlag, "TF32"
    )


# ---------------------------------------------------------------------------- finding 1: truthiness


def test_build_engine_runs_the_documented_calls(fake_trt, tmp_path):
    """Every build used to fail at `if not builder or not network or not parser`."""
    engine = tmp_path / "toy.engine"
    cache = tmp_path / "timing.cache"
    info = build_engine(_toy(tmp_path / "toy.onnx"), engine, PROFILE, "fp32", timing_cache=cache)
    assert info["tensorrt"] == fake_trt.__version__ and info["tensorrt"].endswith(
        "+fake"
    )  # never claims real TensorRT
    assert info["file"] == "toy.engine" and info["size_bytes"] == engine.stat().st_size
    assert info["profiles"] == {"x": {"min": [1, 1, D], "opt": [1, 4, D], "max": [1, 16, D]}}
    assert info["io"] == [
        {"name": "x", "mode": "input", "dtype": "float32", "shape": [1, -1, D]},
        {"name": "y", "mode": "output", "dtype": "float32", "shape": [1, -1, D]},
    ]
    assert engine_io(engine) == info["io"]
    assert (
        info["device_memory_bytes"]
        == fake_trt.Runtime(None).deserialize_cuda_engine(engine.read_bytes()).device_memory_size_v2
    )
    assert cache.read_bytes().startswith(b"FAKE-TIMING-CACHE")
    # The timing cache written by the first build is read by the second.
    again = build_engine(
        _toy(tmp_path / "toy.onnx"), tmp_path / "again.engine", PROFILE, "fp32", timing_cache=cache
    )
    assert again["sha256"] == info["sha256"]


def test_parser_errors_name_the_node(fake_trt, tmp_path):
    model = onnx.load(_toy(tmp_path / "toy.onnx"))
    model.graph.node[1].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(
        ViewrtError, match="cannot parse 'bad.onnx'.*at node 'softmax' \\(Softmax\\)"
    ):
        build_engine(tmp_path / "bad.onnx", tmp_path / "bad.engine", PROFILE)
    assert not (tmp_path / "bad.engine").exists()


# ---------------------------------------------------------------------------- finding 2: typing


def test_fp16_graph_is_built_strongly_typed_without_precision_flags(fake_trt, tmp_path):
    engine = tmp_path / "toy16.engine"
    info = build_engine(_toy(tmp_path / "toy16.onnx", fp16=True), engine, PROFILE, "fp16")
    plan = _plan(engine)
    assert plan["strongly_typed"] and not plan["fp16_flag"]
    assert (info["precision"], info["typing"], info["builder_flags"]["fp16"]) == (
        "fp16",
        "strong",
        False,
    )
    assert info["io"][0]["dtype"] == "float16"
    with pytest.raises(ViewrtError, match="an fp32 engine needs an fp32 export"):
        build_engine(tmp_path / "toy16.onnx", tmp_path / "x.engine", PROFILE, "fp32")


def test_fp16_of_an_fp32_graph_per_version(fake_trt, tmp_path):
    onnx_path, engine = _toy(tmp_path / "toy.onnx"), tmp_path / "down.engine"
    if fake_trt.__version__.startswith("11."):
        with pytest.raises(ViewrtError, match="export with --precision fp16"):
            build_engine(onnx_path, engine, PROFILE, "fp16")
        assert not engine.exists()
    else:  # 10.x: the FP16 flag down-casts an fp32 graph, weakly typed
        info = build_engine(onnx_path, engine, PROFILE, "fp16")
        assert _plan(engine)["fp16_flag"] and not _plan(engine)["strongly_typed"]
        assert info["typing"] == "weak" and info["precision"].startswith("fp16 (builder down-cast")


def test_fp32_graph_is_strongly_typed_fp32(fake_trt, tmp_path):
    info = build_engine(_toy(tmp_path / "toy.onnx"), tmp_path / "a.engine", PROFILE, "fp32")
    assert (
        _plan(tmp_path / "a.engine")["strongly_typed"]
        and info["typing"] == "strong"
        and info["precision"] == "fp32"
    )


# ---------------------------------------------------------------------------- finding 3: TF32


def test_tf32_is_cleared_unless_asked_for_and_recorded(fake_trt, tmp_path):
    onnx_path = _toy(tmp_path / "toy.onnx")
    off = build_engine(onnx_path, tmp_path / "off.engine", PROFILE, "fp32")
    assert not _plan(tmp_path / "off.engine")["tf32"] and off["builder_flags"]["tf32"] is False
    on = build_engine(onnx_path, tmp_path / "on.engine", PROFILE, "fp32", tf32=True)
    assert _plan(tmp_path / "on.engine")["tf32"] and on["builder_flags"]["tf32"] is True


# ---------------------------------------------------------------------------- a whole export, CLI


@pytest.fixture
def fake_built(fake_trt, tiny_export, tmp_path):
    """A copy of the tiny export with engines 'built' by the fake (max 4 views, 3 targets)."""
    from viewrt.export.engines import build_engines

    dst = tmp_path / "tiny"
    shutil.copytree(tiny_export[0], dst)
    engines = build_engines(dst, None, 4, 3)
    return dst, engines


def test_viewrt_build_probes_tensorrt_once(fake_trt, tiny_export, tmp_path, monkeypatch):
    from viewrt.cli import main

    calls = []
    real = devices._probe
    monkeypatch.setattr(devices, "_probe", lambda: calls.append(1) or real())
    dst = tmp_path / "tiny"
    shutil.copytree(tiny_export[0], dst)
    res = CliRunner().invoke(main, ["build", str(dst), "--max-views", "4"])
    assert res.exit_code == 0, res.output
    assert len(calls) == 1  # was 4 per `viewrt build`
    assert "built encoder.engine, decoder.engine" in res.output and "+fake" in res.output
    rec = json.loads((dst / "manifest.json").read_text())["engines"]
    assert rec["decoder"]["tensorrt"].endswith("+fake") and rec["decoder"]["typing"] == "strong"


def test_whole_export_builds_with_recorded_typing_and_memory(fake_built, fake_trt):
    dst, engines = fake_built
    for g in ("encoder", "decoder"):
        e = engines[g]
        assert (e["precision"], e["typing"], e["builder_flags"]) == (
            "fp32",
            "strong",
            {"fp16": False, "tf32": False},
        )
        assert e["device_memory_bytes"] > 0
    prof = engines["decoder"]["profiles"]["target_rays"]
    assert prof["opt"][1] == prof["max"][1] == 3  # tuned for the most targets


# ---------------------------------------------------------------------------- finding 6: the backend


class _Memory:
    """Stands in for CudaMemory in binding tests: a stream handle, and a log of calls."""

    def __init__(self, log):
        self.stream, self.log = types.SimpleNamespace(handle=0), log

    def synchronize(self):
        self.log.append("synchronize")

    def close(self):
        self.log.append("close")


def _backend(dst, fake_trt):
    from viewrt.contract.manifest import load_manifest
    from viewrt.runtime.backends.trt import TrtBackend

    be = TrtBackend(load_manifest(dst))
    be._load_engines(fake_trt)
    be.memory, be.active = _Memory([]), True
    return be


def _buf(shape, dtype, ptr):
    from viewrt.runtime.backends.base import Buffer

    return Buffer(ptr, tuple(shape), np.dtype(dtype), "cuda:0")


def test_activate_checks_engine_dtypes_and_static_dims(fake_built, fake_trt):
    dst, _ = fake_built
    be = _backend(dst, fake_trt)  # the engines match the manifest
    dec = be.manifest.graphs["decoder"]
    out = dec.outputs[0]

    def with_output(t):
        be.manifest.graphs["decoder"] = dataclasses.replace(dec, outputs=(t, *dec.outputs[1:]))

    with_output(dataclasses.replace(out, dtype="float16"))
    with pytest.raises(
        ViewrtError,
        match=f"tensor '{out.name}' has dtype float32 in the engine, the manifest says float16",
    ):
        be._load_engines(fake_trt)
    shape = list(out.shape)
    shape[2] = 4  # channels: 3 in the engine
    with_output(dataclasses.replace(out, shape=tuple(shape)))
    with pytest.raises(
        ViewrtError, match=f"tensor '{out.name}' has shape .* in the engine, the manifest says"
    ):
        be._load_engines(fake_trt)


def _decoder_io(be, n_targets, out_targets, ptr=0x10000):
    m = be.manifest
    S, T = m.image_size, m.tokens_per_view
    inputs = {m.target_input: _buf((1, n_targets, 6, S, S), np.float32, ptr)}
    for i, name in enumerate(m.past_names):
        inputs[name] = _buf((1, 2 * T, m.n_heads, m.head_dim), m.kv_dtype, ptr + (i + 1) * 0x100000)
    return inputs, {m.image_output: _buf((1, out_targets, 3, S, S), np.float32, ptr + 0x10000000)}


def test_output_shape_is_checked_before_execute(fake_built, fake_trt):
    dst, _ = fake_built
    be = _backend(dst, fake_trt)
    inputs, outputs = _decoder_io(be, 2, 2)
    be._run(
        "decoder", inputs, outputs
    )  # shapes agree: binds and "executes" (the fake computes nothing)
    inputs, outputs = _decoder_io(be, 2, 3)
    with pytest.raises(
        ViewrtError,
        match=r"output '.*' resolves to shape \(1, 2, 3, 32, 32\).*holds \(1, 3, 3, 32, 32\)",
    ):
        be._run("decoder", inputs, outputs)
    inputs, outputs = _decoder_io(be, 2, 2, ptr=0x10080)  # not 256-byte aligned
    with pytest.raises(ViewrtError, match="256-byte alignment"):
        be._run("decoder", inputs, outputs)
    inputs, outputs = _decoder_io(be, 4, 4)  # more targets than the profile's max (3)
    with pytest.raises(ViewrtError, match="outside its optimization profile"):
        be._run("decoder", inputs, outputs)


def test_stream_is_synchronized_before_contexts_are_released(fake_built, fake_trt):
    dst, _ = fake_built
    be = _backend(dst, fake_trt)
    log = be.memory.log
    seen = []
    be.memory.synchronize = lambda: seen.append(len(be.contexts))
    be.deactivate()
    assert seen and seen[0] == 2  # synchronized while both contexts were alive
    assert be.contexts == {} and log == ["close"]


def test_targets_per_call_follow_the_recorded_activation_memory(fake_built, fake_trt):
    from viewrt.contract.manifest import load_manifest
    from viewrt.runtime.backends.trt import TrtBackend

    dst, _ = fake_built
    m = load_manifest(dst)
    be = TrtBackend(m)
    scores = be.bounds["num_targets"] * m.tokens_per_view * be.bounds["past_tokens"] * m.n_heads * 4
    m.engines["decoder"]["device_memory_bytes"] = scores - 1  # fused: less than the scores
    assert not TrtBackend(m).materializes_attention
    m.engines["decoder"]["device_memory_bytes"] = scores  # holds them: split targets by budget
    assert TrtBackend(m).materializes_attention


# ---------------------------------------------------------------------------- finding 5: CUDA errors


def test_cuda_error_is_named_not_no_gpu(monkeypatch):
    devices.reset()
    fake_tensorrt.install(monkeypatch, "10.3", cuda_error="cudaErrorInsufficientDriver")
    try:
        ok, why = trt_available()
    finally:
        devices.reset()
    assert not ok
    assert (
        "cudaErrorInsufficientDriver" in why
        and "gpu-cu12" in why
        and "no CUDA GPU is visible" not in why
    )
