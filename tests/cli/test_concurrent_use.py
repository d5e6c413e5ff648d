"""Output folders under concurrent use: two exports or two infer runs into one folder are
serialized by a lock, and replacing an export is restorable after a kill at any point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from viewrt.contract.manifest import load_manifest
from viewrt.folders import recover, staging_folder, swap_in


def _start(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "viewrt.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_two_exports_of_different_models_into_one_new_folder(tmp_path):
    out = tmp_path / "shared"
    procs = [
        _start("export", "--preset", "tiny", "--max-views", "2", "--precision", p, "--out", out)
        for p in ("fp32", "fp16")
    ]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(rc for rc, _, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results  # one wins, the other is told
    loser = next(err for rc, _, err in results if rc != 0)
    assert "holds a different model" in loser and "--force" in loser and "Traceback" not in loser
    winner = next(o for rc, o, _ in results if rc == 0)
    m = load_manifest(out)  # one whole export, checksums verified
    assert f"({m.preset}, {m.precision}," in winner


def test_two_infer_runs_into_one_folder_do_not_mix(tiny_export, tmp_path):
    export = tiny_export[0]
    scenes = tmp_path / "scenes"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "viewrt.cli",
            "scene",
            "--out",
            scenes,
            "--scenes",
            "2",
            "--views",
            "6",
            "--for",
            export,
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    jsons = sorted(scenes.rglob("*.json"))
    jsons = [j for j in jsons if "frames" in j.read_text()][:2]
    out = tmp_path / "run"
    procs = [_start("infer", export, "--scene", j, "--out", out) for j in jsons]
    for p in procs:
        rc = p.wait(timeout=600)
        assert rc == 0, p.communicate()
    summary = json.loads((out / "summary.json").read_text())
    names = {json.loads(m.read_text())["scene"] for m in out.glob("view_*/metrics.json")}
    assert names == {summary["scene"]}  # every step folder belongs to the scene the summary reports


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("kill_at", [1, 2, 3, 4, 5])
def test_replacing_an_export_is_restorable_after_a_kill(
    tiny_export, tiny_export_fp16, tmp_path, monkeypatch, kill_at
):
    """Replace the fp32 export by the fp16 one, killed after ``kill_at`` renames: the folder
    never holds a manifest that does not match its graphs, and the next export's recovery
    brings the old export back whole (or keeps the new one, once committed)."""
    out = tmp_path / "export"
    shutil.copytree(tiny_export[0], out)
    old = _files(out)
    staging = staging_folder(out)
    for f in ("encoder.onnx", "decoder.onnx", "manifest.json"):
        shutil.copy(tiny_export_fp16[0] / f, staging / f)
    calls = {"n": 0}
    real = os.replace

    def killed(src, dst):
        calls["n"] += 1
        if calls["n"] > kill_at:
            raise KeyboardInterrupt("killed")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        swap_in(
            staging,
            out,
            ["encoder.onnx", "decoder.onnx", "manifest.json"],
            "manifest.json",
            ["manifest.json", "encoder.onnx", "decoder.onnx"],
        )
    monkeypatch.setattr(os, "replace", real)
    if (out / "manifest.json").exists():
        load_manifest(out)  # whatever manifest is there matches its graphs
    recover(out, "manifest.json")
    assert not list(out.glob(".export-*"))
    m = load_manifest(out)
    assert _files(out) == old or m.precision == "fp16"
