"""ONNX export: graphs and manifest as the spec says, numbers that match PyTorch on fresh
inputs (checked here independently of the exporter's own validation), fp16 variant,
TensorRT 10.3 op check, the CLI, and an output folder that only changes on success."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import secrets
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from helpers import posed_views, target_rays
from viewrt.cli import main
from viewrt.contract import names as spec
from viewrt.contract.precision import PRECISIONS
from viewrt.errors import ViewrtError
from viewrt.export import onnx_export
from viewrt.export.onnx_export import export_model, weights_digest
from viewrt.export.spec import EXPORT_SPECS, spec_for
from viewrt.export.trt_ops import check_trt_compatible
from viewrt.models import (
    EfficientLVSM,
    build_model,
    get_preset,
    init_weights,
    save_upstream_checkpoint,
)

FP32_ATOL = 1e-4  # fp32 graphs vs PyTorch, every output
FP16_ATOL = 1e-2  # fp16 graphs vs fp32 graphs: images; K/V relative to their peak (see below)
FIXTURE_MAX_VIEWS = 8  # what conftest exports with


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- inputs


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class Graphs:
    """The two exported graphs of a folder on ONNX Runtime CPU, named from the manifest."""

    def __init__(self, folder: Path):
        self.manifest = json.loads((folder / "manifest.json").read_text())
        g = self.manifest["graphs"]
        self.enc, self.dec = (
            _session(folder / g["encoder"]["file"]),
            _session(folder / g["decoder"]["file"]),
        )
        self.present = [t["name"] for t in g["encoder"]["outputs"]]
        self.past = [t["name"] for t in g["decoder"]["inputs"][1:]]

    def encode(self, views: np.ndarray) -> list[list[np.ndarray]]:
        """Per view: [K0, V0, K1, V1, ...] each [1, T, H, Dh]."""
        return [
            self.enc.run(self.present, {spec.VIEW: views[i : i + 1]}) for i in range(len(views))
        ]

    def render(self, targets: np.ndarray, per_view_kv: list[list[np.ndarray]]) -> np.ndarray:
        feed = {spec.TARGET_RAYS: targets}
        for j, name in enumerate(self.past):
            feed[name] = np.concatenate([kv[j] for kv in per_view_kv], axis=1)  # [1, N*T, H, Dh]
        return self.dec.run([spec.IMAGES], feed)[0]


def _torch_kv(model, views: np.ndarray) -> list[list[np.ndarray]]:
    with torch.no_grad():
        kv = model.encode_view(torch.from_numpy(views))  # L x ([n, T, H, Dh], ...)
    return [[t[i : i + 1].numpy() for pair in kv for t in pair] for i in range(len(views))]


def _torch_images(model, views: np.ndarray, targets: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(views)[None], torch.from_numpy(targets)).numpy()


def _err(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _temp_dirs(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".export-")]


# --------------------------------------------------------------- manifest and graphs


@pytest.mark.parametrize("fixture", ["tiny_export", "small_export"])
def test_export_is_validated_and_recorded(request, fixture):
    folder, model = request.getfixturevalue(fixture)
    m = json.loads((folder / "manifest.json").read_text())
    cfg = model.cfg
    v = m["validation"]
    assert v["atol"] == FP32_ATOL and v["backend"].startswith("onnxruntime")
    for name, err in v["max_abs_error"].items():
        assert 0 < err <= FP32_ATOL, f"{name}: {err}"  # > 0: something was really compared
    assert v["tolerance"]["images"] == FP32_ATOL  # images are in [0, 1]: held to atol itself
    assert set(v["tolerance"]) == {spec.IMAGES, *spec.kv_names("present", cfg.n_layers)}
    cases = {(c["views"], c["targets"]) for c in v["decoder_cases"]}
    assert (
        (1, 1) in cases
        and max(n for n, _ in cases) == FIXTURE_MAX_VIEWS
        and max(t for _, t in cases) > 1
    )
    assert (
        m["precision"] == "fp32"
        and m["kv_dtype"] == "float32"
        and m["max_views"] == FIXTURE_MAX_VIEWS
    )
    assert m["config"] == cfg.to_dict() and m["weights_sha256"] == weights_digest(model)
    assert m["tokens_per_view"] == cfg.tokens_per_view == (cfg.image_size // cfg.patch_size) ** 2
    assert {k: m["kv_bytes_per_view"][k] for k in ("fp32", "fp16")} == {
        "fp32": cfg.n_layers * 2 * cfg.tokens_per_view * cfg.d_model * 4,
        "fp16": cfg.n_layers * 2 * cfg.tokens_per_view * cfg.d_model * 2,
    }
    # checksums of what is on disk
    assert set(m["files"]) == {"encoder.onnx", "decoder.onnx", "decoder_ort_cpu.onnx"}
    assert sorted(p.name for p in folder.iterdir()) == [
        "decoder.onnx",
        "decoder_ort_cpu.onnx",
        "encoder.onnx",
        "manifest.json",
    ]
    var = m["variants"]["decoder"][
        "onnxruntime-cpu"
    ]  # ONNX Runtime's fused-attention decoder, checked against decoder.onnx
    assert (
        var["file"] == "decoder_ort_cpu.onnx"
        and 0 < var["validation"]["max_abs_error"] <= FP32_ATOL
    )
    for name, rec in m["files"].items():
        data = (folder / name).read_bytes()
        assert rec["sha256"] == hashlib.sha256(data).hexdigest() and rec["size_bytes"] == len(data)
    for g in m["graphs"].values():
        assert g["sha256"] == m["files"][g["file"]]["sha256"]
    # the manifest's graph records are the spec, names from kv_names
    sigs = EXPORT_SPECS["efficient-lvsm"].signatures(cfg, m["max_views"], "float32")
    for g in ("encoder", "decoder"):
        assert {k: m["graphs"][g][k] for k in ("inputs", "outputs")} == sigs[g].to_dict()
    assert [t["name"] for t in m["graphs"]["encoder"]["outputs"]] == spec.kv_names(
        "present", cfg.n_layers
    )
    assert [t["name"] for t in m["graphs"]["decoder"]["inputs"]] == [
        spec.TARGET_RAYS,
        *spec.kv_names("past", cfg.n_layers),
    ]


def _io(tensors) -> list[tuple[str, int, tuple]]:
    return [
        (
            t.name,
            t.type.tensor_type.elem_type,
            tuple(d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim),
        )
        for t in tensors
    ]


@pytest.mark.parametrize(
    "fixture, kv_type",
    [
        ("tiny_export", onnx.TensorProto.FLOAT),
        ("small_export", onnx.TensorProto.FLOAT),
        ("tiny_export_fp16", onnx.TensorProto.FLOAT16),
    ],
)
def test_graph_io_and_dynamic_axes_are_the_spec(request, fixture, kv_type):
    folder, model = request.getfixturevalue(fixture)
    cfg, F32 = model.cfg, onnx.TensorProto.FLOAT
    s, T, H, Dh = cfg.image_size, cfg.tokens_per_view, cfg.n_heads, cfg.head_dim
    enc = onnx.load(str(folder / "encoder.onnx"))
    dec = onnx.load(str(folder / "decoder.onnx"))
    assert _io(enc.graph.input) == [("view", F32, (1, 9, s, s))]
    assert _io(enc.graph.output) == [
        (n, kv_type, (1, T, H, Dh)) for n in spec.kv_names("present", cfg.n_layers)
    ]
    assert _io(dec.graph.input) == [("target_rays", F32, (1, "num_targets", 6, s, s))] + [
        (n, kv_type, (1, "past_tokens", H, Dh)) for n in spec.kv_names("past", cfg.n_layers)
    ]
    assert _io(dec.graph.output) == [("images", F32, (1, "num_targets", 3, s, s))]
    for g in (enc, dec):
        assert [o.version for o in g.opset_import if o.domain in ("", "ai.onnx")] == [
            onnx_export.OPSET
        ]
        onnx.checker.check_model(g)


# ------------------------------------------------------------- numbers, independently


def test_tiny_graphs_match_torch_on_fresh_inputs(tiny_export):
    folder, model = tiny_export
    graphs, rng, s = Graphs(folder), np.random.default_rng(), model.cfg.image_size
    views = posed_views(rng, FIXTURE_MAX_VIEWS, s)
    ort_kv, torch_kv = graphs.encode(views), _torch_kv(model, views)
    for got, want in zip(ort_kv, torch_kv):
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == np.float32
            assert _err(g, w) <= FP32_ATOL
    for n_views in (1, 3, FIXTURE_MAX_VIEWS):
        for n_targets in (1, 2, 5):
            targets = target_rays(rng, n_targets, s)[None]
            expected = _torch_images(model, views[:n_views], targets)  # one batch forward
            assert expected.shape == (1, n_targets, 3, s, s) and expected.std() > 1e-3
            end_to_end = graphs.render(targets, ort_kv[:n_views])  # ORT encoder -> ORT decoder
            assert _err(end_to_end, expected) <= FP32_ATOL, (n_views, n_targets)
            from_torch_kv = graphs.render(targets, torch_kv[:n_views])  # decoder alone
            assert _err(from_torch_kv, expected) <= FP32_ATOL, (n_views, n_targets)
    # the cache has no order: the decoder graph renders a shuffled cache the same
    targets = target_rays(rng, 2, s)[None]
    order = rng.permutation(FIXTURE_MAX_VIEWS)
    shuffled = graphs.render(targets, [ort_kv[i] for i in order])
    assert _err(shuffled, graphs.render(targets, ort_kv)) <= FP32_ATOL
    assert (
        _err(graphs.render(targets, ort_kv[:2]), graphs.render(targets, ort_kv)) > 1e-3
    )  # views matter


def test_small_graphs_match_torch_end_to_end(small_export):
    folder, model = small_export
    graphs, rng, s = Graphs(folder), np.random.default_rng(), model.cfg.image_size
    views, targets = posed_views(rng, 3, s), target_rays(rng, 2, s)[None]
    expected = _torch_images(model, views, targets)
    assert expected.std() > 1e-3
    assert _err(graphs.render(targets, graphs.encode(views)), expected) <= FP32_ATOL


# --------------------------------------------------------------------------- fp16


def test_fp16_export_manifest(tiny_export_fp16):
    folder, model = tiny_export_fp16
    m = json.loads((folder / "manifest.json").read_text())
    assert m["precision"] == "fp16" and m["kv_dtype"] == "float16"
    assert m["weights_sha256"] == weights_digest(model)  # the fp32 model's identity
    assert m["validation"]["atol"] == FP16_ATOL
    assert all(0 < e for e in m["validation"]["max_abs_error"].values())
    assert m["validation"]["max_abs_error"]["images"] <= FP16_ATOL
    assert {t["dtype"] for t in m["graphs"]["encoder"]["outputs"]} == {"float16"}
    assert [t["dtype"] for t in m["graphs"]["decoder"]["inputs"]] == ["float32"] + [
        "float16"
    ] * 2 * model.cfg.n_layers
    assert m["graphs"]["decoder"]["outputs"][0]["dtype"] == "float32"


def test_fp16_graphs_match_fp32_graphs(tiny_export, tiny_export_fp16):
    """fp16 vs fp32 graphs on ONNX Runtime CPU, fresh inputs. Images within 1e-2. K/V
    within 1e-2 of their peak magnitude: k_norm puts K near 10 at times, where one fp16
    rounding alone is 0.004, so 1e-2 absolute would reject correct fp16 graphs now and then."""
    (f32, model), (f16, _) = tiny_export, tiny_export_fp16
    g32, g16, rng, s = Graphs(f32), Graphs(f16), np.random.default_rng(), model.cfg.image_size
    views = posed_views(rng, FIXTURE_MAX_VIEWS, s)
    kv32, kv16 = g32.encode(views), g16.encode(views)
    kv_err = 0.0
    for a_view, b_view in zip(kv32, kv16):
        for a, b in zip(a_view, b_view):
            assert b.dtype == np.float16 and a.dtype == np.float32
            peak = float(np.abs(a).max())
            err = _err(a, b)
            assert err <= FP16_ATOL * max(1.0, peak), (err, peak)
            kv_err = max(kv_err, err)
    assert kv_err > 0  # fp16 really ran
    img_err = 0.0
    for n_views in (1, 3, FIXTURE_MAX_VIEWS):
        targets = target_rays(rng, 2, s)[None]
        ref = g32.render(targets, kv32[:n_views])
        got = g16.render(targets, kv16[:n_views])  # fp16 encoder -> fp16 decoder
        assert got.dtype == np.float32 and ref.std() > 1e-3
        assert _err(got, ref) <= FP16_ATOL, n_views
        assert _err(ref, _torch_images(model, views[:n_views], targets)) <= FP32_ATOL
        img_err = max(img_err, _err(got, ref))
    assert img_err > 0


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types |= {t.name: t.data_type for t in g.initializer}
    for node in g.node:  # constants
        if node.op_type == "Constant":
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


@pytest.mark.parametrize("graph", ["encoder.onnx", "decoder.onnx"])
def test_fp16_graphs_normalize_and_softmax_in_fp32(tiny_export_fp16, graph):
    folder, model = tiny_export_fp16
    proto = onnx.load(str(folder / graph))
    types = _elem_types(proto)
    nodes = [n for n in proto.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    L = model.cfg.n_layers
    assert sum(n.op_type == "Softmax" for n in nodes) == (L if graph == "encoder.onnx" else 2 * L)
    assert sum(n.op_type == "LayerNormalization" for n in nodes) >= 2 * L
    for node in nodes:
        for name in node.input:
            if name:
                assert types.get(name) == onnx.TensorProto.FLOAT, (
                    f"{node.op_type} '{node.name}' input '{name}' is {types.get(name)}"
                )
        assert types.get(node.output[0]) == onnx.TensorProto.FLOAT
    # RMSNorm's mean of squares, too (plain arithmetic in the graph)
    for node in proto.graph.node:
        if node.op_type == "ReduceMean":
            assert types.get(node.input[0]) == onnx.TensorProto.FLOAT
    # and the weights really are fp16 (this is not an fp32 graph with fp16 I/O)
    assert any(
        t.data_type == onnx.TensorProto.FLOAT16 and len(t.dims) == 2
        for t in proto.graph.initializer
    )


# ------------------------------------------------------------------ TensorRT 10.3 ops


@pytest.mark.parametrize("fixture", ["tiny_export", "small_export", "tiny_export_fp16"])
def test_exported_graphs_are_trt_10_3_compatible(request, fixture):
    folder, _ = request.getfixturevalue(fixture)
    for graph in ("encoder.onnx", "decoder.onnx"):
        check_trt_compatible(folder / graph, opset_range=(onnx_export.OPSET, onnx_export.OPSET))


@pytest.mark.parametrize(
    "op, domain, named",
    [("Attention", "", "Attention x1"), ("FusedMHA", "com.example", "com.example::FusedMHA x1")],
)
def test_a_graph_with_an_unsupported_op_fails_the_trt_check(
    tiny_export, tmp_path, op, domain, named
):
    proto = onnx.load(str(tiny_export[0] / "decoder.onnx"))
    check_trt_compatible(proto)  # the original passes
    k, v = proto.graph.input[1].name, proto.graph.input[2].name
    proto.graph.node.append(
        onnx.helper.make_node(op, [k, k, v], ["extra_attn_out"], name="extra_attn", domain=domain)
    )
    if domain:
        proto.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    with pytest.raises(ViewrtError, match=rf"{named} \(first: 'extra_attn'\)"):
        check_trt_compatible(proto)
    path = tmp_path / "bad.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ViewrtError, match=named):
        check_trt_compatible(path)


# -------------------------------------------------------------------------- the CLI


def _invoke(args: list) -> SimpleNamespace:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return SimpleNamespace(
        code=r.exit_code, stdout=r.stdout, stderr=r.stderr, output=r.output, exception=r.exception
    )


def _assert_one_error_line(r, *fragments: str) -> None:
    assert r.code != 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    # the export progress bar (tqdm, on stderr) may precede the error; nothing else may
    lines = [
        ln
        for ln in r.stderr.strip().splitlines()
        if ln.strip() and not re.match(r"export \S+ \S+: +\d+%\|", ln)
    ]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert r.stderr.rstrip().endswith(lines[0])
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.fixture(scope="module")
def foreign_checkpoint(tmp_path_factory):
    """An upstream-layout checkpoint of the tiny architecture with weights unlike the
    built-in ones: (path, model)."""
    model = init_weights(EfficientLVSM(get_preset("tiny")), seed=secrets.randbits(31) + 1)
    extra = {
        "loss_computer.vgg.0.weight": torch.randn(8, 3, 3, 3),
        "repa_proj.weight": torch.randn(4, 64),
    }
    path = save_upstream_checkpoint(
        model, tmp_path_factory.mktemp("ckpt") / "efficient_lvsm_tiny.pt", extra=extra
    )
    return path, model


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory, tiny_export, foreign_checkpoint):
    """``viewrt export --checkpoint`` into a folder holding the built-in tiny export:
    first refused, then with --force. Records both runs and the folder in between."""
    out = tmp_path_factory.mktemp("cli") / "occupied"
    shutil.copytree(tiny_export[0], out)
    args = [
        "export",
        "--preset",
        "tiny",
        "--checkpoint",
        foreign_checkpoint[0],
        "--out",
        out,
        "--max-views",
        "4",
    ]
    before = _snapshot(out)
    refused = _invoke(args)
    after_refused = _snapshot(out)
    leftovers = _temp_dirs(out)
    forced = _invoke([*args, "--force"])
    return SimpleNamespace(
        out=out,
        before=before,
        refused=refused,
        after_refused=after_refused,
        leftovers=leftovers,
        forced=forced,
    )


def test_cli_refuses_to_overwrite_another_model(cli_export):
    _assert_one_error_line(cli_export.refused, "--force", "weights_sha256", str(cli_export.out))
    assert cli_export.after_refused == cli_export.before  # manifest and graphs byte-identical
    assert cli_export.leftovers == []


def test_cli_force_exports_the_checkpoint(cli_export, foreign_checkpoint):
    r = cli_export.forced
    assert r.code == 0, r.output
    assert "loaded efficient-lvsm from" in r.stdout and "ignored 2 non-model keys" in r.stdout
    assert "wrote" in r.stdout and "Traceback" not in r.output
    m = json.loads((cli_export.out / "manifest.json").read_text())
    assert m["checkpoint"] == str(foreign_checkpoint[0]) and m["max_views"] == 4
    assert (
        m["weights_sha256"]
        == weights_digest(foreign_checkpoint[1])
        != json.loads(cli_export.before["manifest.json"])["weights_sha256"]
    )
    assert all(0 < e <= FP32_ATOL for e in m["validation"]["max_abs_error"].values())
    assert sorted(p.name for p in cli_export.out.iterdir()) == [
        "decoder.onnx",
        "decoder_ort_cpu.onnx",
        "encoder.onnx",
        "manifest.json",
    ]


def test_cli_checkpoint_export_reproduces_the_checkpoint_model(
    cli_export, foreign_checkpoint, tiny_export
):
    assert cli_export.forced.code == 0, cli_export.forced.output
    loaded, _ = build_model("tiny", str(foreign_checkpoint[0]))  # PyTorch, from the same file
    graphs, rng, s = Graphs(cli_export.out), np.random.default_rng(), loaded.cfg.image_size
    views = posed_views(rng, 4, s)
    kv = graphs.encode(views)
    for got, want in zip(kv, _torch_kv(loaded, views)):
        assert max(_err(g, w) for g, w in zip(got, want)) <= FP32_ATOL
    for n_views, n_targets in ((1, 1), (4, 3)):
        targets = target_rays(rng, n_targets, s)[None]
        expected = _torch_images(loaded, views[:n_views], targets)
        got = graphs.render(targets, kv[:n_views])
        assert expected.std() > 1e-3 and _err(got, expected) <= FP32_ATOL
        builtin = _torch_images(tiny_export[1], views[:n_views], targets)
        assert _err(got, builtin) > 1e-3  # the checkpoint's weights, not the built-in ones


def test_cli_user_errors_are_one_line(tmp_path):
    rng = np.random.default_rng()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\0" + rng.bytes(2048))
    out = tmp_path / "out"
    cases = [
        (
            ["--preset", "tiny", "--checkpoint", tmp_path / "missing.pt"],
            ("missing.pt", "no such file"),
        ),
        (["--preset", "tiny", "--checkpoint", corrupt], ("corrupt.pt", "cannot be read")),
        (["--preset", "huge"], ("unknown preset 'huge'",)),
        (["--preset", "tiny", "--max-views", "0"], ("'--max-views': 0 is not in the range x>=1",)),
        (["--preset", "tiny", "--max-views", "-3"], ("-3 is not in the range",)),
    ]
    for args, fragments in cases:
        r = _invoke(["export", *args, "--out", out])
        _assert_one_error_line(r, *fragments)
        assert not out.exists()  # nothing was written


# ------------------------------------------------------- failed validation changes nothing


def test_failed_validation_leaves_the_folder_untouched(tiny_export, tmp_path, monkeypatch):
    """A real re-export of the same model whose validation cannot pass (tolerance 1e-12)."""
    folder, model = tiny_export
    out = tmp_path / "existing"
    shutil.copytree(folder, out)
    before = _snapshot(out)
    monkeypatch.setitem(
        PRECISIONS,
        "fp32",
        dataclasses.replace(PRECISIONS["fp32"], atol_kv=1e-12, atol_images=1e-12),
    )
    with pytest.raises(
        ViewrtError,
        match=r"validation of encoder\.onnx failed: output 'present_(key|value)\.\d' max abs error",
    ):
        export_model(model, out, "tiny", max_views=FIXTURE_MAX_VIEWS, progress=False)
    assert _snapshot(out) == before
    assert _temp_dirs(out) == []


def _fake_export(folder: Path):
    """Stand-in for the slow torch.onnx.export: copy the already exported graph."""

    def fake(module, args, path: Path, graph_spec, dynamic_shapes):
        shutil.copyfile(folder / path.name, path)

    return fake


@pytest.mark.parametrize("existing", [True, False])
def test_validation_error_leaves_no_trace(tiny_export, tmp_path, monkeypatch, existing):
    folder, model = tiny_export
    out = tmp_path / "out"
    if existing:
        shutil.copytree(folder, out)
    before = _snapshot(out) if existing else None
    calls = []

    def failing_validation(*args, **kwargs):
        calls.append(
            sorted(p.name for p in args[2].iterdir())
        )  # the graphs are there, in the temp folder (args: spec, model, folder, ...)
        raise ViewrtError(
            "validation of decoder.onnx failed: output 'images' max abs error 1 > 0.0001 against PyTorch"
        )

    monkeypatch.setattr(onnx_export, "_export", _fake_export(folder))
    monkeypatch.setattr(type(spec_for("efficient-lvsm")), "validate", failing_validation)
    with pytest.raises(ViewrtError, match="validation of decoder.onnx failed"):
        export_model(model, out, "tiny", max_views=FIXTURE_MAX_VIEWS, progress=False, force=True)
    assert calls == [["decoder.onnx", "encoder.onnx"]]
    if existing:
        assert _snapshot(out) == before and _temp_dirs(out) == []
    else:
        assert not out.exists()


def test_cli_failed_validation_is_one_line_and_changes_nothing(tiny_export, tmp_path, monkeypatch):
    folder, _ = tiny_export
    out = tmp_path / "existing"
    shutil.copytree(folder, out)
    before = _snapshot(out)
    monkeypatch.setattr(onnx_export, "_export", _fake_export(folder))  # the built-in tiny graphs
    monkeypatch.setitem(
        PRECISIONS,
        "fp32",
        dataclasses.replace(PRECISIONS["fp32"], atol_kv=1e-12, atol_images=1e-12),
    )
    r = _invoke(["export", "--preset", "tiny", "--out", out, "--max-views", "8"])
    _assert_one_error_line(r, "validation of encoder.onnx failed", "against PyTorch")
    assert _snapshot(out) == before and _temp_dirs(out) == []


def test_export_rejects_bad_arguments_before_writing(tiny_export, tmp_path):
    _, model = tiny_export
    for kwargs, match in (
        ({"max_views": 0}, "at least 1"),
        ({"precision": "int8"}, "unknown precision 'int8'"),
    ):
        with pytest.raises(ViewrtError, match=match):
            export_model(model, tmp_path / "x", "tiny", progress=False, **kwargs)
        assert not (tmp_path / "x").exists()


def test_single_view_cache_exports_and_validates(tmp_path):
    """--max-views 1 (the smallest cache): the decoder's example input must fit the
    dynamic range, and validation with a single encoder feed must work."""
    model = init_weights(EfficientLVSM(get_preset("tiny")), seed=secrets.randbits(31) + 1)
    m = export_model(model, tmp_path / "one", "tiny", max_views=1, progress=False)
    assert m.max_views == 1 and all(
        0 < e <= FP32_ATOL for e in m.validation["max_abs_error"].values()
    )
    assert {c["views"] for c in m.validation["decoder_cases"]} == {1}
    graphs, rng, s = Graphs(tmp_path / "one"), np.random.default_rng(), model.cfg.image_size
    views, targets = posed_views(rng, 1, s), target_rays(rng, 3, s)[None]
    expected = _torch_images(model, views, targets)
    assert (
        expected.std() > 1e-3
        and _err(graphs.render(targets, graphs.encode(views)), expected) <= FP32_ATOL
    )


# ---------------------------------------------------------------------------- res256


@pytest.mark.slow
def test_res256_export_validates(tmp_path):
    model, _ = build_model("res256")
    t0 = time.perf_counter()
    m = export_model(model, tmp_path / "res256", "res256", max_views=2, progress=False)
    seconds = time.perf_counter() - t0
    assert all(0 < e <= FP32_ATOL for e in m.validation["max_abs_error"].values())
    assert (
        m.tokens_per_view == 1024
        and m.to_dict()["kv_bytes_per_view"]["fp16"] == 1024 * 768 * 2 * 12 * 2
    )
    for graph in ("encoder.onnx", "decoder.onnx"):
        check_trt_compatible(
            tmp_path / "res256" / graph, opset_range=(onnx_export.OPSET, onnx_export.OPSET)
        )
    print(f"res256 export + validation: {seconds:.0f} s")
