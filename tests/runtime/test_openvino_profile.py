"""python -m viewrt.runtime.backends.openvino_profile: OpenVINO's decoder time by N and node
type, fused and unfused attention, on the tiny export; user errors end in one line."""

from __future__ import annotations

import pytest

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'viewrt[openvino]')")

from viewrt.runtime.backends.openvino_profile import main, profile, table  # noqa: E402


def test_profile_fused_and_unfused(tiny_export):
    out_dir, _ = tiny_export
    fused = profile(out_dir, [1, 3], targets=2, inference_precision="f32", repeats=1)
    plain = profile(
        out_dir, [1, 3], targets=2, snippets="disable", inference_precision="f32", repeats=1
    )
    assert [p["views"] for p in fused["points"]] == [1, 3] and fused["precision"] == "fp32"
    for p in fused["points"] + plain["points"]:
        assert p["ms"] > 0 and sum(p["by_type"].values()) > 0
    assert all("Subgraph" in p["by_type"] for p in fused["points"])
    assert all(
        "Softmax" in p["by_type"] and "Subgraph" not in p["by_type"] for p in plain["points"]
    )
    text = table(plain)
    assert "Snippets disable" in text and "| 3 |" in text and "CPU:" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--views", "99"], "--views 99: the export caches 1..8 views"),
        (["--views", "a,b"], "not a comma-separated list of integers"),
        (["--targets", "0"], "--targets and --repeats must be >= 1"),
        (["--out", "/proc/nope/x.json", "--views", "1", "--repeats", "1"], "cannot write it"),
        (
            ["--views", "1", "--targets", "9"],
            "--targets 9: the export's decoder renders 1..8 targets",
        ),
        (["--targets", "2.5"], "--targets: invalid int value"),
        (["--snippets", "DISABLE"], "--snippets: invalid choice"),
    ],
)
def test_user_errors_one_line(tiny_export, capsys, args, message):
    try:
        code = main([str(tiny_export[0]), *args])
    except SystemExit as e:  # argparse's own checks
        code = e.code
    assert code in (1, 2)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_missing_export_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_fp16_export_and_default_views(tiny_export_fp16, tmp_path, capsys):
    """An fp16 export's decoder is fed in its own input types; without --views the points are
    those of 4, 16, 64 the cache holds (tiny: 8 views: 1, 2, 8)."""
    out = tmp_path / "p.json"
    assert (
        main([str(tiny_export_fp16[0]), "--targets", "1", "--repeats", "1", "--out", str(out)]) == 0
    )
    import json

    res = json.loads(out.read_text())
    assert [p["views"] for p in res["points"]] == [1, 2, 8] and all(
        p["ms"] > 0 for p in res["points"]
    )
    assert "| 8 |" in capsys.readouterr().out
