"""python -m viewrt.runtime.backends.openvino_profile: OpenVINO's decoder time by N and node
type, fused and unfused attention, on the tiny export; user errors end in one line."""

from __future__ import annotations

import pytest

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'viewrt[openvino]')")

from viewrt.runtime.backends.openvino_profile import main, profile, table  # noqa: E402


def test_profile_fused_and_unfused(tiny_export):
    out_dir, _ = tiny_export
    fused = profile(out_dir, [1, 3], targets=2, inference_precision="f32", repeats=1)
    plain = profile(out_dir, [1, 3], targets=2, snippets="disable", inference_precision="f32", repeats=1)
    assert [p["views"] for p in fused["points"]] == [1, 3] and fused["precision"] == "fp32"
    for p in fused["points"] + plain["points"]:
        assert p["ms"] > 0 and sum(p["by_type"].values()) > 0
    assert all("Subgraph" in p["by_type"] for p in fused["points"])
    assert all("Softmax" in p["by_type"] and "Subgraph" not in p["by_type"] for p in plain["points"])
    text = table(plain)
    assert "Snippets disable" in text and "| 3 |" in text and "CPU:" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--views", "99"], "--views 99: the export caches 1..8 views"),
        (["--views", "a,b"], "not a comma-separated list of integers"),
        (["--targets", "0"], "--targets and --repeats must be >= 1"),
        (["--out", "/proc/nope/x.json", "--views", "1", "--repeats", "1"], "cannot write it"),
    ],
)
def test_user_errors_one_line(tiny_export, capsys, args, message):
    assert main([str(tiny_export[0]), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_missing_export_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
