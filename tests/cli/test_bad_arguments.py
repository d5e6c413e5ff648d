"""Every subcommand over a table of bad arguments: exit != 0, one line on stderr, no
traceback, and nothing written. Each row is an instance of a kind of user error.

The first row of each subcommand (and every ``serve`` row: Ray keeps process-wide state)
runs as a fresh ``python -m viewrt.cli`` process, the entry point a user types; the other
rows go through the same click group in this process (click's test runner), which sees
the same exit status, stdout and stderr, and any exception that escaped, without paying
a torch import per row."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

# rows of these subcommands all run as processes
PROCESS_ONLY = {"serve"}


def _viewrt(*args, cwd=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "viewrt.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


@dataclass
class _Ran:
    returncode: int
    stdout: str
    stderr: str


def _viewrt_in_process(*args) -> _Ran:
    """The click group in this process; an exception that escaped it is reported as a
    traceback on stderr (the test then fails on it, as it would on a process's)."""
    from click.testing import CliRunner

    from viewrt.cli import main

    r = CliRunner().invoke(main, [str(a) for a in args])
    err = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        err += "Traceback (escaped the CLI):\n" + "".join(traceback.format_exception(*r.exc_info))
    return _Ran(r.exit_code, r.stdout, err)


def _table(export: Path, tmp: Path):
    ro = tmp / "readonly"
    ro.mkdir(exist_ok=True)
    ro.chmod(0o500)
    afile = tmp / "afile"
    afile.write_text("x")
    out = tmp / "out"
    empty = tmp / "empty.txt"
    empty.write_text("")
    busy = tmp / "busy"  # a folder holding someone else's files, no export
    busy.mkdir(exist_ok=True)
    (busy / "notes.txt").write_text("x")
    index_json = tmp / "index.json"
    index_json.write_text('{"scene": {"context": [0, 1], "target": [2]}}')
    calib_int8 = ["calib", export, "--out", out, "--precision", "int8", "--synthetic", "2"]
    return {
        "export": [
            ["export", "--preset", "nope", "--out", out],
            ["export", "--preset", "lvsm-tiny", "--out", out],  # a bench baseline, not exportable
            ["export", "--preset", "tiny", "--out", out, "--seed", "-1"],
            ["export", "--preset", "tiny", "--out", out, "--max-views", "0"],
            ["export", "--preset", "tiny", "--out", out, "--max-views", "100000000"],
            ["export", "--preset", "tiny", "--out", out, "--precision", "int4"],
            ["export", "--preset", "tiny", "--out", afile / "sub"],
            ["export", "--preset", "tiny", "--out", "/proc/x"],
            ["export", "--preset", "tiny", "--out", ro / "sub"]
            if os.geteuid() != 0
            else ["export", "--preset", "tiny", "--out", "/proc/y"],
            ["export", "--preset", "tiny", "--out", out, "--checkpoint", tmp / "missing.pt"],
            ["export", "--bogus"],
            ["export", "--preset", "tiny", "--out", busy],
        ],
        "build": [
            ["build", tmp / "nope"],
            ["build", export, "--max-views", "999"],
            ["build", export, "--precision", "int4"],
            ["build", export, "--precision", "f32"],  # OpenVINO's name, not a graph precision
            ["build", export, "--max-targets", "0"],
        ],
        "info": [["info", tmp / "nope"], ["info", afile]],
        "scene": [
            ["scene", "--out", out, "--seed", "-1"],
            ["scene", "--out", out, "--views", "0"],
            ["scene", "--out", out, "--size", "-3"],
            ["scene", "--out", afile / "sub"],
            ["scene", "--out", out, "--for", tmp / "nope"],
            ["scene", "--out", out, "--seed", str(2**31)],
        ],
        "infer": [
            ["infer", tmp / "nope", "--out", out],
            ["infer", export, "--out", out, "--views", "0"],
            ["infer", export, "--out", out, "--views", "99"],
            ["infer", export, "--out", out, "--backend", "bogus"],
            ["infer", export, "--out", out, "--backend", "torch", "--device", "cuda"],
            ["infer", export, "--out", out, "--backend", "trt"],
            ["infer", export, "--out", out, "--scene", tmp / "missing.json"],
            ["infer", export, "--out", out, "--targets", "x,1"],
            ["infer", export, "--out", afile / "sub"],
            ["infer", export, "--out", out, "--list", index_json],
            ["infer", export, "--out", out, "--targets", "1,1"],
            # --precision is the graph precision: OpenVINO's is --inference-precision
            ["infer", export, "--out", out, "--backend", "openvino", "--precision", "bf16"],
            ["infer", export, "--out", out, "--precision", "fp32"],
            ["infer", export, "--out", export],  # outputs mixed into the export
            # a configuration's own option is not overridden under its name
            [
                "infer",
                export,
                "--out",
                out,
                "--backend",
                "openvino-f32",
                "--inference-precision",
                "bf16",
            ],
            ["infer", export, "--out", out, "--inference-precision", "fp16"],
            ["infer", export, "--out", out, "--inference-precision", "bf16"],  # ort has none
        ],
        "calib": [
            ["calib", tmp / "nope", "--out", out, "--precision", "int8", "--synthetic", "2"],
            ["calib", export, "--out", out, "--precision", "int4", "--synthetic", "2"],
            ["calib", export, "--out", out, "--precision", "int8", "--list", empty],
            # --scenes is a number of scenes: a scene list file is --list
            ["calib", export, "--out", out, "--precision", "int8", "--scenes", empty],
            ["calib", export, "--out", out, "--precision", "int8", "--synthetic", "0"],
            ["calib", export, "--out", out, "--precision", "fp32", "--synthetic", "2"],
            [*calib_int8, "--seed", "-1"],
            [*calib_int8, "--method", "x"],
            [*calib_int8, "--report", "/proc/x"],  # checked before the calibration
            [*calib_int8, "--report", out],  # the export's own folder
            [*calib_int8, "--report", export],  # into the source export
        ],
        "calib-report": [
            ["calib-report", tmp / "nope", "--out", out],
            ["calib-report", export, "--out", out],  # not a quantized export
            ["calib-report", export, "--out", out, "--views", "1,x"],
            ["calib-report", export, "--out", out, "--synthetic", "0"],
            ["calib-report", export, "--out", out, "--scenes", empty],
        ],
        "estimate": [
            ["estimate", tmp / "nope"],
            ["estimate", export, "--max-views", "0"],
            ["estimate", export, "--precision", "int4"],
            ["estimate", export, "--precision", "bf16"],  # a compute precision, not a graph's
            ["estimate", export, "--targets", "0"],
        ],
        "train": [
            ["train", "--out", out, "--steps", "0"],
            ["train", "--out", out, "--list", tmp / "missing.txt", "--steps", "1"],
            ["train", "--out", out, "--eval", "--checkpoint", tmp / "missing.pt"],
            ["train", "--out", afile / "sub", "--steps", "1"],
            ["train", "--out", out, "--steps", "2", "--lr", "nan"],
            ["train", "--out", out, "--steps", "2", "--lr", "inf"],
            ["train", "--out", out, "--steps", "2", "--checkpoint", afile],
            ["train", "--eval", "--eval-scenes", "2", "--out", "/proc/x"],
            # --precision is the graph precision: training's is --autocast
            ["train", "--out", out, "--steps", "2", "--precision", "bf16"],
            ["train", "--out", out, "--steps", "2", "--precision", "fp32"],
            ["train", "--out", out, "--steps", "2", "--autocast", "fp32"],
            ["train", "--out", out, "--steps", "2", "--seed", "-1"],
        ],
        "bench": [
            ["bench", tmp / "nope", "--out", out],
            ["bench", export, "--out", out, "--views", "0"],
            ["bench", export, "--out", out, "--views", "1,99"],
            ["bench", export, "--out", out, "--backends", "tensorflow"],
            ["bench", export, "--out", out, "--repeats", "0"],
            ["bench", export, "--out", out, "--targets", "1,x"],
            ["bench", export, "--out", out, "--seed", "-1"],
            ["bench", export, "--out", out, "--threads", "0"],
            ["bench", export, "--out", out, "--backends", ","],
            ["bench", export, "--out", Path(export) / "results"],
        ],
        "serve": [  # each fails before Ray starts
            ["serve", tmp / "nope"],
            ["serve", export, "--backend", "bogus"],
            ["serve", export, "--replicas", "0"],
            ["serve", export, "--port", "70000"],
            ["serve", export, "--max-cache-mib", "nan"],
            ["serve", export, "--host", "203.0.113.9"],  # not an address of this machine
            ["serve", export, "--address", "127.0.0.1:1"],  # no Ray cluster answers there
            ["serve", export, "--address", "nohostport"],
        ],
        "studio": [  # each fails before the server starts
            ["studio", tmp / "nope"],
            ["studio", export, "--backend", "bogus"],
            ["studio", export, "--port", "0"],
            ["studio", export, "--list", tmp / "missing.txt"],
            ["studio", export, "--synthetic", "0"],
            ["studio", export, "--max-sessions", "0"],
            ["studio", export, "--host", "203.0.113.9", "--port", "8765"],  # not ours
        ],
        "bench-cache": [
            ["bench-cache", tmp / "nope"],
            ["bench-cache", export, "--views", "0"],
            ["bench-cache", export, "--views", "1,99"],  # beyond the export's max_views
            ["bench-cache", export, "--repeats", "0"],
            ["bench-cache", export, "--inference-precision", "f16"],
        ],
        "serve-bench": [
            ["serve-bench", tmp / "nope"],
            ["serve-bench", export, "--views", "99"],
            ["serve-bench", export, "--sessions", "0"],
            ["serve-bench", export, "--backend", "bogus"],
            ["serve-bench", export, "--out", afile / "x"],  # a file stands in the path
        ],
    }


def test_every_subcommand_is_in_the_table(tiny_export, tmp_path):
    from viewrt.cli import main

    assert set(main.commands) <= set(_table(tiny_export[0], tmp_path))


@pytest.mark.parametrize(
    "command",
    [
        "export",
        "build",
        "info",
        "scene",
        "infer",
        "bench",
        "bench-cache",
        "calib",
        "calib-report",
        "estimate",
        "train",
        "serve",
        "serve-bench",
        "studio",
    ],
)
def test_bad_arguments_end_in_one_line(tiny_export, tmp_path, command):
    export = tiny_export[0]
    before = sorted(p.name for p in export.iterdir())
    rows = _table(export, tmp_path)[command]
    n_proc = len(rows) if command in PROCESS_ONLY else 1
    # the process rows two at a time (most of their time is importing torch)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda args: _viewrt(*args), rows[:n_proc]))
    results += [_viewrt_in_process(*args) for args in rows[n_proc:]]
    for args, res in zip(rows, results):
        lines = res.stderr.strip().splitlines()
        where = f"viewrt {' '.join(map(str, args))}: rc {res.returncode}, stderr {res.stderr!r}"
        assert res.returncode != 0, where
        assert len(lines) == 1 and lines[0].startswith("error: "), where
        assert "Traceback" not in res.stderr + res.stdout, where
        assert not (tmp_path / "out").exists(), where  # nothing written
    assert sorted(p.name for p in export.iterdir()) == before


def test_runtime_only_install_fails_before_writing(tiny_export, tmp_path, monkeypatch):
    """Without the report extra (scikit-image, matplotlib), infer and bench end in one line
    naming the install command, before anything is written."""
    import importlib.util

    from click.testing import CliRunner

    from viewrt.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("skimage", "matplotlib") else real(name, *a),
    )
    for cmd in (
        ["infer", tiny_export[0], "--out", tmp_path / "o"],
        ["bench", tiny_export[0], "--out", tmp_path / "o", "--views", "1"],
    ):
        r = CliRunner().invoke(main, [str(c) for c in cmd])
        assert r.exit_code != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and 'pip install ".[report]"' in lines[0], r.stderr
        assert not (tmp_path / "o").exists()


def test_export_refuses_a_cache_larger_than_memory_up_front(tmp_path):
    import time

    from click.testing import CliRunner

    from viewrt.cli import main

    t0 = time.perf_counter()
    r = CliRunner().invoke(
        main,
        ["export", "--preset", "small", "--max-views", "1000000", "--out", str(tmp_path / "x")],
    )
    assert (
        r.exit_code != 0
        and "more than this machine's" in r.stderr
        and not (tmp_path / "x").exists()
    )
    assert time.perf_counter() - t0 < 60  # refused from the estimate, before any graph is exported
