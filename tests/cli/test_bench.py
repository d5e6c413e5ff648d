"""`viewrt bench` on the tiny preset: every backend x N x targets row, the report files,
and the errors a user can cause. Timings are not asserted (only that they exist)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math

import pytest
from click.testing import CliRunner

from viewrt.cli.bench import backend_names
from viewrt.cli.bench_stream import STREAM_BASELINES
from viewrt.cli.options import parse_backends, parse_int_list
from viewrt.models.baselines import BASELINES

RECOMPUTE = [b for b, (kind, _) in BASELINES.items() if kind == "recompute"]
from viewrt.cli import main
from viewrt.errors import ViewrtError

HAS_OV = importlib.util.find_spec("openvino") is not None
CPU_BACKENDS = [
    "ort",
    *(["openvino", "openvino-f32"] if HAS_OV else []),
    "torch-fp32",
    "torch-bf16",
    "torch-cat",
    "efflvsm-nocache",
    "lvsm",
]
VIEWS, TARGETS = [1, 2, 3], [1, 2]
PNG = b"\x89PNG\r\n\x1a\n"


def _bench(export_dir, out, *extra):
    # a small square GEMM probe: the roofline's plumbing, not this machine's peak
    args = ["bench", str(export_dir), "--out", str(out), "--quiet", "--gemm-size", "128", *extra]
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def bench_run(tiny_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    res = _bench(
        tiny_export[0],
        out,
        "--views",
        "1,2,3",
        "--targets",
        "1,2",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--backends",
        ",".join(CPU_BACKENDS),
    )
    return res, out


def test_bench_writes_every_backend_view_target_row(bench_run):
    res, out = bench_run
    assert res.exit_code == 0, res.output
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [(r["backend"], int(r["n_views"]), int(r["n_targets"])) for r in rows]
    want = [(b, n, t) for b in CPU_BACKENDS for n in VIEWS for t in TARGETS]
    assert sorted(keys) == sorted(want)  # each exactly once
    growth = json.loads((out / "results.json").read_text())["cache_growth"]
    per_view = {b: g["bytes_per_view"] for b, g in growth.items() if "bytes_per_view" in g}
    manifest_per_view = next(g["manifest_bytes_per_view"] for g in growth.values())
    for r in rows:
        assert r["status"] == "measured", r
        for k in ("median_ms", "min_ms", "max_ms", "flops", "gflops", "peak_rss_bytes"):
            v = float(r[k])
            assert math.isfinite(v) and v > 0, (k, r)
        assert float(r["min_ms"]) <= float(r["median_ms"]) <= float(r["max_ms"])
        if r["backend"] not in RECOMPUTE:  # incremental: cache bytes and a decode component
            # in the cache dtype in use: OpenVINO computing in bf16 keeps a bf16 cache (half)
            ratio = per_view[r["backend"]] / manifest_per_view if r["backend"] in per_view else 1
            assert ratio in (1, 0.5), (r["backend"], ratio)
            assert int(r["cache_bytes_used"]) == int(r["cache_bytes_manifest"]) * ratio > 0
            assert float(r["decode_ms"]) > 0 and float(r["encode_ms"]) > 0


def test_bench_summary_json_and_plots(bench_run):
    res, out = bench_run
    text = (out / "summary.md").read_text()
    assert res.output.strip().endswith(text.strip()[-200:])  # printed at the end
    for t in TARGETS:
        assert f"## Add-view latency, {t} target" in text
    header = next(line for line in text.splitlines() if line.startswith("| N | ort |"))
    for col in (
        "torch-fp32",
        "torch-bf16",
        "torch-cat",
        "effLVSM no-cache",
        "LVSM dec-only",
        "speedup vs LVSM",
        "speedup vs best torch",
        "overhead",
    ):
        assert col in header
    for n in VIEWS:
        assert sum(line.startswith(f"| {n} | ") for line in text.splitlines()) >= len(TARGETS)
    assert "## Targets" in text and "GFLOP/s" in text
    data = json.loads((out / "results.json").read_text())
    assert data["matmul"]["gflops"] > 0 and data["machine"]["cpu"]
    assert len(data["rows"]) == len(CPU_BACKENDS) * len(VIEWS) * len(TARGETS)
    assert set(data["cache_growth"]) == {b for b in CPU_BACKENDS if b not in RECOMPUTE}
    comps = data["steps"]["ort N=3 T=2"][0]
    assert {"encode", "preprocess"} <= set(comps["add"]) and {"decode", "d2h"} <= set(
        comps["render"]
    )
    for name in ("latency_vs_views.png", "speedup.png", "components.png"):
        blob = (out / name).read_bytes()
        assert blob[:8] == PNG and len(blob) > 1000, name


def test_bench_over_budget_is_extrapolated_and_marked(tiny_export, tmp_path):
    res = _bench(
        tiny_export[0],
        tmp_path,
        "--views",
        "1,2",
        "--targets",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--backends",
        "ort,lvsm",
        "--max-seconds-per-point",
        "1e-9",
    )
    assert res.exit_code == 0, res.output
    with open(tmp_path / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["backend"] == "lvsm"]
    assert [r["status"] for r in rows] == ["extrapolated", "extrapolated"]
    assert all(float(r["median_ms"]) > 0 and "budget" in r["note"] for r in rows)
    assert "‡" in (tmp_path / "summary.md").read_text()


def test_unknown_backend_is_named(tiny_export, tmp_path):
    res = _bench(tiny_export[0], tmp_path, "--views", "1", "--backends", "ort,tensorflow")
    assert res.exit_code != 0
    assert "tensorflow" in res.output and "unknown backend" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "results.csv").exists()


def test_views_above_export_max_views(tiny_export, tmp_path):
    res = _bench(tiny_export[0], tmp_path, "--views", "1,9")
    assert res.exit_code != 0
    assert "max_views 8" in res.output and "--max-views 9" in res.output


@pytest.mark.parametrize("text", ["1,x", "0,2", ","])
def test_bad_view_lists(text):
    with pytest.raises(ViewrtError, match="--views"):
        parse_int_list(text, "--views")


def test_parse_helpers():
    BACKENDS = backend_names()
    assert parse_int_list("4, 1,2,2", "--views") == [1, 2, 4]
    assert parse_backends(None, BACKENDS) is None
    assert parse_backends("lvsm,ort,lvsm", BACKENDS) == ["lvsm", "ort"]
    assert set(CPU_BACKENDS) <= set(BACKENDS)
    from viewrt.runtime.backends import CONFIGS

    # one vocabulary: the CLI's names are the registries' (runtime configurations, the
    # quantized columns of the configurations that run Q/DQ exports, the PyTorch baselines)
    assert BACKENDS == [
        *CONFIGS,
        "ort-int8",
        "openvino-int8",
        "openvino-plain-int8",
        "ort-fp8",
        "openvino-fp8",
        "openvino-plain-fp8",
        *BASELINES,
        *STREAM_BASELINES,  # the streaming family's PyTorch peers
    ]


def test_bad_repeats_and_missing_export(tiny_export, tmp_path):
    res = _bench(tiny_export[0], tmp_path, "--repeats", "0", "--views", "1")
    assert res.exit_code != 0 and "--repeats" in res.output
    res = _bench(tmp_path / "nope", tmp_path / "o", "--views", "1")
    assert res.exit_code != 0 and "no such folder" in res.output


def test_bench_reports_isa_precisions_and_reduced_precision_error(bench_run):
    """The header names the CPU's ISA and each backend's precision; each precision used
    has a measured matmul peak; bf16 backends are scored against fp32 images."""
    _, out = bench_run
    text = (out / "summary.md").read_text()
    data = json.loads((out / "results.json").read_text())
    cpu = data["cpu_precision"]
    assert "CPU ISA: AMX" in text and "AVX512-BF16" in text and "VNNI" in text
    assert cpu["precisions"]["torch-bf16"] == "bf16" and cpu["precisions"]["ort"] == "fp32"
    assert "`torch-bf16` bf16" in text and "`ort` fp32" in text
    peaks = cpu["peak_rates"]
    assert peaks["fp32"]["gflops"] > 0 and peaks["bf16"]["gflops"] > 0
    # the roofline probes every engine present, in every precision, at both shapes
    assert {"numpy 128x128x128", "torch 128x128x128", "onnxruntime 128x128x128"} <= set(
        peaks["fp32"]["runs"]
    )
    assert "onnxruntime matmulinteger 128x128x128" in peaks["int8"]["runs"]
    assert {"torch 128x128x128"} <= set(peaks["bf16"]["runs"])
    for p in ("fp32", "bf16", "int8"):
        assert peaks[p]["gflops"] == max(peaks[p]["runs"].values()) > 0
    assert "## Achieved rate against the peak of each backend's own precision" in text
    assert "## Roofline: GEMM rate of every engine per precision" in text
    # every rate is against its own precision's peak, and never above it
    for r in data["rows"]:
        if r["gflops"] != "" and r["ratio_to_peak"] != "":
            want = cpu["precisions"][r["backend"]].split("/")[0]
            assert r["peak_precision"] == want and 0 < r["ratio_to_peak"] <= 1.0
            assert r["ratio_to_peak"] == pytest.approx(r["gflops"] / peaks[want]["gflops"])
    for d in cpu["peak_defects"]:
        assert d["gflops"] > d["peak_gflops"]
        row = next(
            r
            for r in data["rows"]
            if (r["backend"], r["n_views"], r["n_targets"])
            == (d["backend"], d["n_views"], d["n_targets"])
        )
        assert row[("" if d["what"] == "step" else "decode_") + "ratio_to_peak"] == ""
    acc = {(a["backend"], a["n_views"], a["n_targets"]): a for a in cpu["accuracy"]}
    assert set(acc) >= {("torch-bf16", n, t) for n in VIEWS for t in TARGETS}
    for a in acc.values():
        assert 0 < a["max_abs"] < 0.1 and a["psnr_db"] > 20, (
            a
        )  # bf16 of untrained weights vs fp32: close, not equal
    if HAS_OV:
        assert cpu["precisions"]["openvino-f32"] == "fp32" and cpu["precisions"]["openvino"] in (
            "fp32",
            "bf16",
            "fp16",
        )
        header = next(line for line in text.splitlines() if line.startswith("| N | ort |"))
        assert "openvino" in header and "openvino-f32" in header
        assert (
            "`openvino-f32` peak resident memory grows" in text
            and "`openvino` step minus the encoder and decoder runs" in text
        )


def test_quantized_export_columns(tiny_export, tmp_path):
    """--quantized-export adds the int8 columns, run through the same runtime API."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed")
    from viewrt.calib.quantize import quantize_export

    q = tmp_path / "int8"
    quantize_export(tiny_export[0], q, "int8", None, 2, progress=False)
    out = tmp_path / "b"
    res = _bench(
        tiny_export[0],
        out,
        "--views",
        "1,2",
        "--targets",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--backends",
        "ort,ort-int8,openvino-int8",
        "--quantized-export",
        q,
    )
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert data["cpu_precision"]["precisions"]["ort-int8"] == "int8"
    assert data["cpu_precision"]["precisions"]["openvino-int8"].startswith("int8/")
    rows = {(r["backend"], r["n_views"]) for r in data["rows"] if r["status"] == "measured"}
    assert {("ort-int8", 2), ("openvino-int8", 2)} <= rows
    acc = {r["backend"] for r in data["cpu_precision"]["accuracy"]}
    assert {"ort-int8", "openvino-int8"} <= acc  # image error against fp32 is reported
    bad = _bench(tiny_export[0], tmp_path / "c", "--views", "1", "--backends", "ort-int8")
    assert bad.exit_code != 0 and "--quantized-export" in bad.output


def test_a_named_backend_that_cannot_run_is_an_error(tiny_export, tmp_path):
    """--backends names it: a file it needs that does not match the manifest is one error
    line before any work, not a skipped column in a report that exits 0."""
    import shutil

    dst = tmp_path / "e"
    shutil.copytree(tiny_export[0], dst)
    (dst / "decoder_ort_cpu.onnx").write_bytes(b"\0" * 8)
    res = _bench(dst, tmp_path / "b", "--views", "1", "--backends", "ort")
    assert res.exit_code != 0 and "decoder_ort_cpu.onnx: checksum differs" in res.output
    assert not (tmp_path / "b").exists()


def test_torch_compile_columns(tiny_export, tmp_path, monkeypatch):
    """torch-compile and torch-compile-bf16: warm step times, the compile time in its own
    column (one compile per N and targets, before the point's runs). Dynamo's "eager"
    backend stands in for inductor (tests/models/test_compiled.py runs inductor on
    request): the plumbing is the same."""
    import viewrt.models.compiled as compiled

    monkeypatch.setattr(compiled, "BACKEND", "eager")
    out = tmp_path / "b"
    res = _bench(
        tiny_export[0],
        out,
        *("--views", "1,2", "--targets", "2", "--repeats", "1", "--warmup", "0"),
        *("--backends", "ort,torch-compile,torch-compile-bf16"),
    )
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    rows = {(r["backend"], r["n_views"]): r for r in data["rows"]}
    for b in ("torch-compile", "torch-compile-bf16"):
        for n in (1, 2):
            r = rows[(b, n)]
            assert r["status"] == "measured" and r["median_ms"] > 0
            assert isinstance(r["compile_s"], float) and r["compile_s"] >= 0
        assert set(data["compile"][b]) == {
            "encode [1, 9, 32, 32]",
            "render N=1 T=2",
            "render N=2 T=2",
        }
    assert rows[("ort", 1)]["compile_s"] == ""  # a backend that does not compile has no figure
    assert data["cpu_precision"]["precisions"]["torch-compile-bf16"] == "bf16"
    text = (out / "summary.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| N | ort |"))
    assert "torch-compile compile (s)" in header and "torch-compile-bf16 compile (s)" in header
    assert "speedup vs best torch" in header and "Compile (s): torch.compile" in text


def test_a_failing_compile_is_a_skipped_column(tiny_export, tmp_path, monkeypatch):
    """torch.compile failing (here: a backend that does not exist) skips the column with
    the reason; the run goes on. No C++ compiler, asked for by name: one error line."""
    import torch._inductor.config as inductor

    import viewrt.models.compiled as compiled

    monkeypatch.setattr(compiled, "BACKEND", "no-such-backend")
    out = tmp_path / "b"
    args = ("--views", "1", "--targets", "1", "--repeats", "1", "--warmup", "0")
    res = _bench(tiny_export[0], out, *args, "--backends", "ort,torch-compile")
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert "torch.compile (no-such-backend) failed" in data["skipped"]["torch-compile"]
    assert {r["backend"] for r in data["rows"]} == {"ort"}
    assert "`torch-compile` (cannot open: torch.compile" in (out / "summary.md").read_text()

    monkeypatch.setattr(compiled, "BACKEND", "inductor")
    with inductor.patch({"cpp.cxx": (None, "no-such-c++")}):  # torch's own config patching
        res = _bench(tiny_export[0], tmp_path / "c", *args, "--backends", "ort,torch-compile")
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "torch-compile: torch.compile (inductor) needs a C++ compiler" in res.output


def test_memory_targets_use_the_cache_dtype_in_use():
    """The memory checks compare RSS growth with the session's own cache bytes per view
    (a bf16 or int8 cache is smaller than the manifest's fp32 figure), for every runtime
    backend, and the peak target is 1.1x (issue 19)."""
    from viewrt.bench.report import _check_memory, _lookup, _Run

    mib = 2**20
    fp32, bf16 = 4 * mib, 2 * mib

    def growth(per_view, grows):
        return {
            "rss_resolution_bytes_per_view": 0.01 * mib,
            "rss_page_bytes": 4096,
            "rss_delta_per_add_bytes": [grows] * 4,
            "mean_rss_delta_per_add_bytes": float(grows),
            "bytes_per_view": per_view,
            "manifest_bytes_per_view": fp32,
        }

    def rows(b, slope):
        return [
            {"backend": b, "n_views": n, "n_targets": 8, "peak_rss_bytes": 100 * mib + slope * n}
            for n in (4, 64)
        ]

    res = {
        "backends": ["ort", "openvino"],
        "kinds": {"ort": "runtime", "openvino": "runtime"},
        "views": [4, 64],
        "model": {"n_layers": 2},
        # ort: fp32 cache growing by its 4 MiB; openvino: a bf16 cache growing by 4 MiB a view
        "cache_growth": {"ort": growth(fp32, fp32), "openvino": growth(bf16, fp32)},
        "rows": rows("ort", 1.05 * fp32) + rows("openvino", 1.05 * fp32),
    }
    lines = _check_memory(_Run(res, _lookup(res), "ort", 8, "", []))
    ort = [x for x in lines if ": ort " in x]
    ov = [x for x in lines if ": openvino " in x]
    assert len(ort) == len(ov) == 2, lines
    assert all(x.startswith("- PASS") for x in ort), ort
    # against its 2 MiB bf16 cache, 4 MiB a view is twice too much: both checks fail
    assert all(x.startswith("- FAIL") for x in ov) and "session's cache dtype" in ov[0], ov
    assert "<= 1.1x" in ov[1]
