"""viewrt bench on a token-window export (gct-stream, stream-tiny): per-frame latency of the
runtime against PyTorch eager streaming and full recompute, by frames seen and by window,
memory per cached frame, the report files; bad options in one line (few iterations: no
timing is asserted)."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from viewrt.cli import main

FRAMES = (3, 5)
WINDOWS = (2, 3)
BACKENDS = ("ort", "torch-stream", "torch-recompute")


def _invoke(*args):
    return CliRunner().invoke(main, ["bench", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def export_dir(stream_export):
    """The session's stream-tiny export (tests/conftest.py)."""
    return stream_export[0]


def test_bench_end_to_end(export_dir, tmp_path):
    from viewrt.contract.manifest import load_manifest

    out = tmp_path / "bench"
    r = _invoke(
        export_dir, "--backends", ",".join(BACKENDS), "--frames", ",".join(map(str, FRAMES)),
        "--windows", ",".join(map(str, WINDOWS)), "--repeats", 1, "--warmup", 0, "--threads", 1,
        "--quiet", "--out", out,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "CPU flags:" in r.output and "## Step latency, window 3" in r.output
    for name in ("results.csv", "results.json", "summary.md", "latency_vs_frames.png",
                 "latency_vs_window.png"):  # fmt: skip
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    got = {(r["backend"], int(r["window"]), int(r["frames_seen"])) for r in rows}
    assert got == {(b, w, n) for b in BACKENDS for w in WINDOWS for n in FRAMES}
    assert all(float(r["median_ms"]) > 0 for r in rows)
    kinds = {r["backend"]: r["kind"] for r in rows}
    assert kinds == {"ort": "runtime", "torch-stream": "eager", "torch-recompute": "recompute"}
    res = json.loads((out / "results.json").read_text())
    assert res["weights"] == "built-in, untrained" and res["pinned"] == 2
    assert res["machine"]["cpu_flags"] is not None and "CPU ISA" in res["cpu_isa"]
    # the per-frame curves: prefill frames have no step time, every later frame one
    curve = res["curves"]["ort W=2"]["median_ms_by_frame"]
    assert curve[:2] == [None, None] and all(v > 0 for v in curve[2:]) and len(curve) == max(FRAMES)
    # memory per cached frame: the manifest's K/V bytes plus the camera head's token
    m = load_manifest(export_dir)
    mem = res["memory_per_frame"]["ort W=3"]
    assert mem["kv_bytes_per_frame"] == m.kv_bytes_per_entry
    side = m.contract.side_caches(m.header)["camera"].bytes_per_entry(4)
    assert mem["cache_bytes_per_frame"] == m.kv_bytes_per_entry + side
    assert mem["session_info"]["window"] == 3
    summary = (out / "summary.md").read_text()
    assert "Memory per cached frame" in summary and "untrained" in summary


def _one_line_error(r, text: str):
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], r.output


def test_bad_options_one_line(export_dir, tmp_path):
    out = tmp_path / "bench"
    _one_line_error(_invoke(export_dir, "--frames", 2, "--out", out), "--frames 2: each count")
    _one_line_error(_invoke(export_dir, "--views", 4, "--out", out), "--views do(es) not apply")
    _one_line_error(_invoke(export_dir, "--pinned", 3, "--out", out), "at most 2 frames")
    _one_line_error(  # beyond the export's cache: refused before anything runs
        _invoke(export_dir, "--windows", 99, "--backends", "ort,torch-stream", "--out", out),
        "--windows 99: the export's runtime cache holds 2 pinned frames and a window of at most",
    )
    _one_line_error(
        _invoke(export_dir, "--backends", "torch-fp32", "--out", out),
        "not a backend of a token-window",
    )
    assert not out.exists()
