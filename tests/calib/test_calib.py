"""calib/: Q/DQ exports of the tiny preset (rule check, ONNX Runtime and OpenVINO against
fp32), the rule check rejecting each kind of bad Q/DQ, the TensorRT build plan, the accuracy
report, the memory estimate against peak RSS, and CLI errors that leave nothing behind."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from viewrt.cli import main
from viewrt.errors import ViewrtError
from viewrt.export.qdq_check import qdq_types, qdq_violations

# Quantized vs fp32 export, same inputs (random tiny weights, random views): explicit bounds.
# int8 max abs: 0.081-0.183 over 12 random draws of this test's inputs, with main's calibration
# and with the decoder's P·V kept float alike (PSNR >= 31.4 dB), so 0.25 (0.1 failed most draws)
IMAGE_ATOL = {"int8": 0.25, "fp8": 0.25}
MIN_PSNR = {"int8": 30.0, "fp8": 22.0}


@pytest.fixture(scope="module")
def quantized(tiny_export, tmp_path_factory):
    """{precision: export dir} of tiny, int8 and fp8, calibrated on 2 synthetic scenes."""
    from viewrt.calib.quantize import quantize_export

    out = {}
    for p in ("int8", "fp8"):
        d = tmp_path_factory.mktemp("q") / p
        quantize_export(tiny_export[0], d, p, synthetic=2)
        out[p] = d
    return out


def _feeds(manifest, rng, n_views=3, targets=2):
    from tests.helpers import posed_views, target_rays

    views = posed_views(rng, n_views, manifest.image_size)
    rays = target_rays(rng, targets, manifest.image_size)[None]
    return views, rays


def _run_ort(export_dir, views, rays):
    """Encode each view, concatenate K/V, decode: images [1, Vt, 3, S, S]."""
    import onnxruntime as ort

    import viewrt.runtime as vrt

    m = vrt.load_manifest(export_dir)
    enc = ort.InferenceSession(str(m.path("encoder")), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(m.path("decoder")), providers=["CPUExecutionProvider"])
    kv = [enc.run(None, {m.view_input: v[None]}) for v in views]
    past = {name: np.concatenate([k[i] for k in kv], axis=1) for i, name in enumerate(m.past_names)}
    return dec.run(None, {m.target_input: rays, **past})[0], past


def _psnr(a, b):
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-20)))


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_qdq_export_passes_trt_rules_and_matches_fp32_on_ort(tiny_export, quantized, precision):
    import viewrt.runtime as vrt

    d = quantized[precision]
    m = vrt.load_manifest(d)  # checksums verified: a complete export
    assert m.precision == precision
    # nothing but the export: no calibrator working copies (fp8's MinMax pass had left them)
    assert {p.name for p in d.iterdir()} == set(m.files) | {"manifest.json"}
    q = m.quantization
    assert (
        q["symmetric"]
        and q["calibration"]["encoder_samples"] > 0
        and q["calibration"]["decoder_samples"] > 0
    )
    assert q["method"] == "minmax"
    want = {"int8": {"int8"}, "fp8": {"float8e4m3fn"}}[precision]
    for g in ("encoder", "decoder"):
        path = m.path(g)
        assert qdq_violations(path) == []
        assert qdq_types(path) == want
        assert q["graphs"][g]["quantized_nodes"] and q["graphs"][g]["tensors"]["weights"]
        model = onnx.load(str(path))
        assert any(
            n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute)
            for n in model.graph.node
        )
    assert m.opset == (19 if precision == "fp8" else 18)

    views, rays = _feeds(m, np.random.default_rng())
    ref, _ = _run_ort(tiny_export[0], views, rays)
    got, _ = _run_ort(d, views, rays)
    err = float(np.abs(got - ref).max())
    assert err <= IMAGE_ATOL[precision], err
    assert _psnr(got, ref) >= MIN_PSNR[precision]
    assert err > 1e-6  # the Q/DQ do act: not the fp32 graph under another name

    with vrt.open(d, "ort") as r:  # the runtime API runs it like any export
        c2ws, fx = __import__("viewrt.data", fromlist=["x"]).synthetic_cameras(3, m.image_size)
        r.add_view(
            np.random.default_rng(0).random((3, m.image_size, m.image_size), dtype=np.float32),
            vrt.Camera(c2ws[0], fx),
        )
        img = r.render([vrt.Camera(c2ws[2], fx)])
        assert img.shape == (1, 3, m.image_size, m.image_size) and np.isfinite(img).all()


def test_int8_export_on_openvino_within_tolerance_of_fp32(tiny_export, quantized):
    ov = pytest.importorskip("openvino")
    import viewrt.runtime as vrt

    d = quantized["int8"]
    m = vrt.load_manifest(d)
    views, rays = _feeds(m, np.random.default_rng())
    ref, _ = _run_ort(tiny_export[0], views, rays)
    core = ov.Core()
    enc = core.compile_model(str(m.path("encoder")), "CPU")
    dec = core.compile_model(str(m.path("decoder")), "CPU")
    kv = [list(enc({m.view_input: v[None]}).values()) for v in views]
    past = {name: np.concatenate([k[i] for k in kv], axis=1) for i, name in enumerate(m.past_names)}
    got = list(dec({m.target_input: rays, **past}).values())[0]
    err = float(np.abs(got - ref).max())
    assert err <= IMAGE_ATOL["int8"], err
    assert _psnr(got, ref) >= MIN_PSNR["int8"]


def test_exclude_keeps_modules_in_fp32(tiny_export, tmp_path):
    from viewrt.calib.quantize import quantize_export

    m = quantize_export(
        tiny_export[0],
        tmp_path / "x",
        "int8",
        synthetic=1,
        exclude=["self_cross_blocks.0", "image_token_decoder"],
        attention=False,
    )
    dec = m.quantization["graphs"]["decoder"]
    model = onnx.load(str(tmp_path / "x" / "decoder.onnx"))
    dq_out = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    by_name = {n.name: n for n in model.graph.node}
    assert dec["excluded_nodes"] and dec["quantized_nodes"]
    for name in dec["excluded_nodes"]:
        assert not any(i in dq_out for i in by_name[name].input), name
    for name in dec["quantized_nodes"]:
        assert any(i in dq_out for i in by_name[name].input), name
    with pytest.raises(ViewrtError, match="no matmul"):
        quantize_export(
            tiny_export[0], tmp_path / "y", "int8", synthetic=1, exclude=["no_such_block"]
        )
    assert not (tmp_path / "y").exists()


# ----------------------------------------------------------------------------- the rule check


def _qdq_graph(break_rule: str | None = None) -> onnx.ModelProto:
    """x [2, 4] -> Q -> DQ -> MatMul <- DQ <- int8 weight [4, 3] (per-channel, axis 1).
    ``break_rule`` breaks one rule."""
    act_t = TensorProto.INT8
    zp = np.zeros((), np.int8)
    scale = np.float32(0.05)
    w_scale = np.array([0.01, 0.02, 0.03], np.float32)
    w_axis = 1
    w = np.arange(12, dtype=np.int8).reshape(4, 3)
    consumer = "MatMul"
    inits = []
    if break_rule == "zero_point":
        zp = np.array(3, np.int8)
    elif break_rule == "type":
        act_t = TensorProto.UINT8
    elif break_rule == "scale_negative":
        scale = np.float32(-0.05)
    elif break_rule == "scale_inf":
        scale = np.float32(np.inf)
    elif break_rule == "per_channel_activation":
        scale = np.full((4,), 0.05, np.float32)
    elif break_rule == "weight_axis":
        w_scale, w_axis = np.full((4,), 0.01, np.float32), 0
    elif break_rule == "weight_axis_length":
        w_scale = np.full((5,), 0.01, np.float32)
    elif break_rule == "placement":
        consumer = "Softmax"
    zp_arr = (
        helper.make_tensor("zp", act_t, [], [int(zp) if act_t == TensorProto.INT8 else 0])
        if break_rule != "zero_point"
        else numpy_helper.from_array(zp, "zp")
    )
    inits += [
        zp_arr,
        numpy_helper.from_array(np.asarray(scale, np.float32), "s"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(w_scale, "w_s"),
        numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), "w_zp"),
    ]
    q_inputs = ["x", "s"] if break_rule == "no_zero_point" else ["x", "s", "zp"]
    nodes = [helper.make_node("QuantizeLinear", q_inputs, ["xq"], name="q_x")]
    if break_rule == "q_without_dq":
        nodes.append(helper.make_node("Cast", ["xq"], ["xd"], name="cast", to=TensorProto.FLOAT))
    else:
        nodes.append(
            helper.make_node(
                "DequantizeLinear",
                ["xq", "s"] + ([] if break_rule == "no_zero_point" else ["zp"]),
                ["xd"],
                name="dq_x",
            )
        )
    nodes.append(
        helper.make_node(
            "DequantizeLinear", ["w_q", "w_s", "w_zp"], ["wd"], name="dq_w", axis=w_axis
        )
    )
    if consumer == "MatMul":
        nodes.append(helper.make_node("MatMul", ["xd", "wd"], ["y"], name="mm"))
    else:
        nodes.append(helper.make_node("Softmax", ["xd"], ["sm"], name="softmax"))
        nodes.append(helper.make_node("MatMul", ["sm", "wd"], ["y"], name="mm"))
    g = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])


def test_rule_check_accepts_a_good_pair_that_runs():
    import onnxruntime as ort

    model = _qdq_graph()
    assert qdq_violations(model) == []
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert s.run(None, {"x": np.ones((2, 4), np.float32)})[0].shape == (2, 3)


@pytest.mark.parametrize(
    "rule, phrase",
    [
        ("zero_point", "zero point not 0"),
        ("no_zero_point", "no zero point"),
        ("type", "quantized type UINT8"),
        ("scale_negative", "positive and finite"),
        ("scale_inf", "positive and finite"),
        ("per_channel_activation", "per-channel scale on activation"),
        ("weight_axis", "not the output-channel axis"),
        ("weight_axis_length", "per-channel scale has 5 values"),
        ("placement", "TensorRT fuses Q/DQ into"),
        ("q_without_dq", "a Q must feed DequantizeLinear"),
    ],
)
def test_rule_check_rejects_each_broken_rule(rule, phrase):
    from viewrt.export.qdq_check import check_qdq

    bad = qdq_violations(_qdq_graph(rule))
    assert any(phrase in b for b in bad), bad
    with pytest.raises(ViewrtError, match="break TensorRT's rules"):
        check_qdq(_qdq_graph(rule))


def test_trt_build_plan(tiny_export, quantized):
    from viewrt.export.trt_qdq import qdq_plan

    fp32_dec = tiny_export[0] / "decoder.onnx"
    assert qdq_plan(fp32_dec, "fp32", "8.7") is None
    with pytest.raises(ViewrtError, match="no Q/DQ nodes"):
        qdq_plan(fp32_dec, "int8", "8.7")
    plan = qdq_plan(quantized["int8"] / "decoder.onnx", "int8", "8.7")  # Orin: int8 yes
    assert plan["strongly_typed"] and plan["types"] == ["int8"]
    with pytest.raises(ViewrtError, match=r"compute capability >= 8.9.*8\.7"):
        qdq_plan(quantized["fp8"] / "decoder.onnx", "fp8", "8.7")
    assert qdq_plan(quantized["fp8"] / "decoder.onnx", "fp8", "9.0")["opset_range"] == (19, 19)
    with pytest.raises(ViewrtError, match="Q/DQ graph"):
        qdq_plan(quantized["int8"] / "decoder.onnx", "fp16", "9.0")


# ----------------------------------------------------------------------------- report, estimate


def test_accuracy_report(quantized, tmp_path):
    from viewrt.calib.report import accuracy_report

    r = accuracy_report(quantized["int8"], tmp_path / "rep", synthetic=1, views=(1, 2), targets=2)
    for f in ("report.json", "report.md", "report.png"):
        assert (tmp_path / "rep" / f).stat().st_size > 0
    assert [b["views"] for b in r["by_views"]] == [1, 2]
    assert all(b["psnr_q_vs_fp32"] >= MIN_PSNR["int8"] for b in r["by_views"])
    assert len(r["kv_error_by_layer"]) == 2 and all(
        0 < x["key_rel_error"] < 0.2 for x in r["kv_error_by_layer"]
    )
    assert r["sensitive_layers"] and "untrained" in (tmp_path / "rep" / "report.md").read_text()
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["precision"] == "int8"


def test_estimate_within_15_percent_of_peak_rss(tiny_export):
    from viewrt.calib.memcheck import TOLERANCE, measure

    r = measure(str(tiny_export[0]), 8, 8)
    assert abs(r["error"]) <= TOLERANCE, r


def test_estimate_cli(tiny_export):
    r = CliRunner().invoke(main, ["estimate", str(tiny_export[0]), "--max-views", "4", "--json"])
    assert r.exit_code == 0, r.output
    est = json.loads(r.output)
    rows = {(x["precision"], x["device"]): x for x in est["rows"]}
    assert len(rows) == 8
    assert rows[("fp16", "gpu")]["kv_cache"] * 2 == rows[("fp32", "gpu")]["kv_cache"]
    assert rows[("int8", "gpu")]["weights"] * 4 == pytest.approx(
        rows[("fp32", "gpu")]["weights"], rel=1e-3
    )
    r = CliRunner().invoke(main, ["estimate", str(tiny_export[0]), "--max-views", "99"])
    assert r.exit_code == 1 and "--max-views" in r.stderr


# ----------------------------------------------------------------------------- CLI errors


@pytest.fixture(scope="module")
def empty_list(tmp_path_factory):
    p = tmp_path_factory.mktemp("lists") / "empty.txt"
    p.write_text("# no scenes\n")
    return p


@pytest.mark.parametrize(
    "case",
    [
        "missing_export",
        "fp16_export",
        "empty_scene_list",
        "unknown_precision",
        "unknown_method",
        "no_scene_source",
        "fp8_entropy",
    ],
)
def test_calib_user_errors_one_line_nothing_written(
    case, tiny_export, tiny_export_fp16, empty_list, tmp_path
):
    out = tmp_path / "out"
    export, extra = str(tiny_export[0]), ["--precision", "int8", "--synthetic", "1"]
    if case == "missing_export":
        export = str(tmp_path / "nope")
    elif case == "fp16_export":
        export = str(tiny_export_fp16[0])
    elif case == "empty_scene_list":
        extra = ["--precision", "int8", "--list", str(empty_list)]
    elif case == "unknown_precision":
        extra = ["--precision", "int4", "--synthetic", "1"]
    elif case == "unknown_method":
        extra += ["--method", "magic"]
    elif case == "no_scene_source":
        extra = ["--precision", "int8"]
    elif case == "fp8_entropy":
        extra = ["--precision", "fp8", "--method", "entropy", "--synthetic", "1"]
    r = CliRunner().invoke(main, ["calib", export, "--out", str(out), *extra])
    assert r.exit_code != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    assert not out.exists()


def test_calib_cli_writes_an_export(tiny_export, tmp_path):
    r = CliRunner().invoke(
        main,
        [
            "calib",
            str(tiny_export[0]),
            "--out",
            str(tmp_path / "q"),
            "--precision",
            "int8",
            "--synthetic",
            "1",
            "--report",
            str(tmp_path / "rep"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (
        "passes the TensorRT Q/DQ check" in r.output and (tmp_path / "rep" / "report.md").is_file()
    )
    r = CliRunner().invoke(
        main,
        [
            "calib",
            str(tiny_export[0]),
            "--out",
            str(tmp_path / "q"),
            "--precision",
            "int8",
            "--synthetic",
            "1",
        ],
    )
    assert (
        r.exit_code == 1 and "not an empty folder" in r.stderr
    )  # an existing export is not overwritten


def test_estimate_printed_before_infer_and_build(tiny_export, tmp_path):
    r = CliRunner().invoke(
        main, ["infer", str(tiny_export[0]), "--out", str(tmp_path / "run"), "--views", "2"]
    )
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].startswith("[estimate] fp32 on CPU, 2 views")
    r = CliRunner().invoke(main, ["build", str(tiny_export[0]), "--if-available"])
    assert r.stdout.splitlines()[0].startswith("[estimate] fp32 on GPU")


def test_accuracy_report_refuses_views_beyond_the_cache(quantized, tmp_path):
    from viewrt.calib.report import accuracy_report

    with pytest.raises(ViewrtError, match=r"views \[99\]: outside 1\.\.8"):
        accuracy_report(quantized["int8"], tmp_path / "rep", synthetic=1, views=(1, 99), targets=2)
    assert not (tmp_path / "rep").exists()
