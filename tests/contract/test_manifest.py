"""The export -> runtime contract: one manifest writer and loader, every number bounded,
the manifest checked against the graphs at open(), names and precisions from one place."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import viewrt.runtime as vrt
from viewrt.cli import main
from viewrt.contract import PRECISIONS, get_precision, kv_bytes_per_view, load_manifest, names
from viewrt.contract.manifest import Manifest, check_graph_io
from viewrt.errors import ViewrtError


@pytest.fixture
def edited(tiny_export, tmp_path):
    """A copy of the tiny export whose manifest a test edits: edit(fn) -> folder."""
    src, _ = tiny_export
    dst = tmp_path / "export"
    shutil.copytree(src, dst)

    def edit(fn):
        path = dst / names.MANIFEST_FILE
        data = json.loads(path.read_text())
        fn(data)
        path.write_text(json.dumps(data))
        return dst

    return edit


def _swap_past_key_value(d):
    ins = d["graphs"]["decoder"]["inputs"]
    ins[1]["name"], ins[2]["name"] = ins[2]["name"], ins[1]["name"]


# The failing inputs (a)-(e) and their right value: one ViewrtError naming the field and the values.
CASES = {
    "a_swapped_past_names": (
        _swap_past_key_value,
        r"decoder input 1 name: manifest has 'past_value\.0'.*'past_key\.0'",
    ),
    "b_tokens_per_view": (
        lambda d: d.update(tokens_per_view=32),
        r"tokens_per_view 32 does not match .*expected 16",
    ),
    "c_huge_max_views": (
        lambda d: d.update(max_views=1_000_000_000),
        r"max_views 1000000000: its KV cache needs .* GiB, more than this machine's",
    ),
    "d_zero_max_targets": (lambda d: d.update(max_targets=0), r"max_targets must be >= 1, got 0"),
    "e_zero_max_views": (lambda d: d.update(max_views=0), r"max_views must be >= 1, got 0"),
    "string_number": (lambda d: d.update(n_heads="2"), r"n_heads must be an integer, got '2'"),
    "unknown_precision": (lambda d: d.update(precision="int4"), r"precision 'int4' is not one of"),
    "bad_dtype": (
        lambda d: d["graphs"]["encoder"]["outputs"][0].update(dtype="float16"),
        r"encoder output 0 dtype: manifest has 'float16'",
    ),
    "missing_field": (lambda d: d.pop("head_dim"), r"malformed manifest: missing field 'head_dim'"),
    "null_graphs": (lambda d: d.update(graphs=None), r"malformed manifest \(TypeError"),
    "edited_cache": (
        lambda d: d["cache"].update(capacity=99),
        r"cache is .*'capacity': 99.*but the header implies",
    ),
    "edited_bytes": (
        lambda d: d["kv_bytes_per_view"].update(fp32=1),
        r"kv_bytes_per_view is .*but the header implies",
    ),
    "unknown_family": (lambda d: d.update(family="nope"), r"model family 'nope' is not one"),
    "wrong_memory": (lambda d: d.update(memory="token-window"), r"keeps its K/V as 'view-slots'"),
    # a fact named twice (config and header) edited in one place only
    "edited_config": (
        lambda d: d["config"].update(image_size=64),
        r"config\.image_size is 64, but the header's image_size is 32; the manifest was edited",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_manifest_is_one_clear_error_at_open(edited, case):
    fn, pattern = CASES[case]
    folder = edited(fn)
    with pytest.raises(ViewrtError, match=pattern):
        vrt.open(folder)


@pytest.mark.parametrize("case", ["a_swapped_past_names", "b_tokens_per_view", "e_zero_max_views"])
def test_bad_manifest_through_the_cli_is_one_line(edited, tmp_path, case):
    folder = edited(CASES[case][0])
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["infer", str(folder), "--out", str(out)])
    assert res.exit_code != 0
    err = (
        res.stderr.strip().splitlines()
        if hasattr(res, "stderr")
        else res.output.strip().splitlines()
    )
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in res.output
    assert "scene" not in err[0]  # (e) used to blame the scene


def test_manifest_that_disagrees_with_its_graph(edited):
    """Consistent with itself (2 heads of 32 -> 4 heads of 16), but not with encoder.onnx:
    the graph check at open names the tensor and both shapes."""

    def heads(d):
        d["n_heads"], d["head_dim"] = 4, 16
        d["config"]["head_dim"] = 16  # named twice: both edited
        d.pop("cache")  # a derived record: left out, not checked (present, it must agree)
        for g in d["graphs"].values():
            for t in g["inputs"] + g["outputs"]:
                if names.parse_kv_name(t["name"]):
                    t["shape"][2:] = [4, 16]

    folder = edited(heads)
    load_manifest(folder)  # the manifest alone is fine
    with pytest.raises(
        ViewrtError,
        match=r"manifest encoder output 'present_key\.0': shape \[1, 16, 4, 16\], but encoder\.onnx declares \[1, 16, 2, 32\]",
    ):
        vrt.open(folder)


def test_check_graph_io_rules(tiny_export):
    m = load_manifest(tiny_export[0])
    want = [(t.name, t.dtype, tuple(t.shape)) for t in m.tensors("decoder", "inputs")]
    check_graph_io(m, "decoder", "inputs", want, "x")  # itself: fine
    check_graph_io(
        m,
        "decoder",
        "inputs",
        [(n, d, tuple(None if isinstance(s, str) else s for s in sh)) for n, d, sh in want],
        "x",
    )  # unnamed dynamic dims are fine
    bad_order = [want[0], want[2], want[1], *want[3:]]
    with pytest.raises(ViewrtError, match="name 'past_key.0', but x declares 'past_value.0'"):
        check_graph_io(m, "decoder", "inputs", bad_order, "x")
    renamed = [(want[0][0], want[0][1], (1, "targets", 6, 32, 32)), *want[1:]]
    with pytest.raises(ViewrtError, match="shape"):
        check_graph_io(m, "decoder", "inputs", renamed, "x")
    static = [(want[1][0], want[1][1], (1, 64, 2, 32)), *want[2:]]
    with pytest.raises(ViewrtError):
        check_graph_io(m, "decoder", "inputs", [want[0], *static], "x")


def test_one_writer_one_loader_round_trip(tiny_export, tmp_path):
    m = load_manifest(tiny_export[0])
    m.write(tmp_path)
    for f in ("encoder.onnx", "decoder.onnx"):
        shutil.copy(tiny_export[0] / f, tmp_path / f)
    again = load_manifest(tmp_path)
    assert again.to_dict() == m.to_dict() and again == m


def test_unwritable_manifest_folder_is_a_clear_error(tiny_export, tmp_path):
    m = load_manifest(tiny_export[0])
    with pytest.raises(ViewrtError, match="cannot write the manifest"):
        m.write(tmp_path / "no" / "such")


def test_dynamic_ranges_and_memory_arithmetic(tiny_export):
    m = load_manifest(tiny_export[0])
    T = m.tokens_per_view
    r = m.dynamic_ranges()
    # the one opt rule: the cache tuned for half full (whole views), other dims for their max
    half = max(1, m.max_views // 2) * T
    assert r[names.PAST_TOKENS] == (T, half, m.max_views * T)
    assert r[names.NUM_TARGETS] == (1, m.max_targets, m.max_targets)
    assert m.dynamic_ranges(2, opt={names.PAST_TOKENS: T})[names.PAST_TOKENS] == (T, T, 2 * T)
    assert m.dynamic_ranges(3)[names.PAST_TOKENS] == (T, T, 3 * T)
    with pytest.raises(ViewrtError, match="admits 1..8 views"):
        m.dynamic_ranges(9)
    with pytest.raises(ViewrtError, match="unknown dynamic dimension 'nope'"):
        m.dynamic_ranges(limits={"nope": 2})
    assert (
        m.kv_bytes_per_view
        == kv_bytes_per_view(m.n_layers, T, m.n_heads, m.head_dim, 4)
        == m.n_layers * 2 * T * m.d_model * 4
    )


def test_precision_table_rows():
    assert set(PRECISIONS) >= {"fp32", "fp16", "int8", "fp8"}
    for p in PRECISIONS.values():
        assert np.dtype(p.kv_dtype).itemsize == p.itemsize and p.atol_kv > 0 and p.atol_images > 0
    assert get_precision("fp16").trt_strongly_typed and not get_precision("fp16").ort_trt_fp16
    assert (
        get_precision("fp16").kv_tolerance(8.0) == pytest.approx(0.08)
        and get_precision("fp32").kv_tolerance(8.0) == 1e-4
    )
    with pytest.raises(ViewrtError, match="unknown precision"):
        get_precision("int4")


def test_kv_names_pair_by_layer_and_kind():
    assert names.kv_name("present", "key", 3) == "present_key.3"
    assert (
        names.paired_name("present_value.11") == "past_value.11"
        and names.paired_name("past_key.0") == "present_key.0"
    )
    assert names.parse_kv_name("images") is None
    with pytest.raises(ValueError):
        names.kv_name("future", "key", 0)


def test_contract_imports_neither_torch_nor_onnx():
    code = (
        "import sys, viewrt.contract, viewrt.runtime; "
        "bad = [m for m in ('torch', 'onnx', 'viewrt.models', 'viewrt.export') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_manifest_dataclass_rejects_inconsistent_lists(tiny_export):
    m = load_manifest(tiny_export[0])
    d = m.to_dict()
    d["n_layers"] = 3
    with pytest.raises(ViewrtError, match="encoder has 4 outputs, expected 6 for .*n_layers 3"):
        Manifest.from_dict(d)


def test_an_edited_graph_checksum_is_refused(edited):
    folder = edited(lambda d: d["graphs"]["encoder"].update(sha256="0" * 64))
    with pytest.raises(
        ViewrtError, match=r"graphs.encoder.sha256 .* differs from files\['encoder.onnx'\].sha256"
    ):
        load_manifest(folder)


def test_manifest_is_readable_like_the_graphs(tiny_export, tmp_path):
    import os
    import stat

    m = load_manifest(tiny_export[0])
    path = m.write(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_a_file_is_not_an_export_folder(tiny_export):
    with pytest.raises(ViewrtError, match="is a file; pass the folder that holds manifest.json"):
        vrt.open(tiny_export[0] / "manifest.json")
    with pytest.raises(ViewrtError, match="export_dir must be a path"):
        vrt.open(123)
