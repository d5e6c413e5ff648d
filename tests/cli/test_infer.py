"""viewrt infer: the output tree, metrics consistent with the PNGs on disk, backend
parity, lists with failing scenes, and clear errors (tiny preset, 32 px, a few views)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from viewrt.cli import main
from viewrt.data import load_scene, make_synthetic_list, make_synthetic_scene
from viewrt.errors import ViewrtError
from viewrt.evaluation import default_targets, jsonable, run_scene, select_frames

VIEWS = 3
TARGETS = 2
PSNR_RECOMPUTE_TOL = 1e-6  # dB: metrics.json vs PSNR recomputed from the PNGs
PARITY_TOL = 1e-3  # dB: ORT vs PyTorch on the same scene


def _invoke(*args):
    return CliRunner().invoke(main, ["infer", *map(str, args)], catch_exceptions=False)


def _png(path: Path) -> np.ndarray:
    return (
        np.asarray(Image.open(path).convert("RGB"), np.float64).transpose(2, 0, 1) / 255.0
    )  # [3, H, W]


@pytest.fixture(scope="module")
def scene32(tmp_path_factory):
    """A 6-view synthetic scene at the tiny preset's 32 px: default targets 2 and 3."""
    return make_synthetic_scene(tmp_path_factory.mktemp("scene"), "s32", n_views=6, size=32, seed=3)


@pytest.fixture(scope="module")
def runs(tiny_export, scene32, tmp_path_factory):
    """The same scene through ORT and through PyTorch: {backend: out dir}."""
    out = {}
    for backend in ("ort", "torch"):
        d = tmp_path_factory.mktemp(f"infer_{backend}")
        r = _invoke(
            tiny_export[0], "--scene", scene32, "--views", VIEWS, "--backend", backend, "--out", d
        )
        assert r.exit_code == 0, r.output
        assert "3 views, PSNR" in r.output
        out[backend] = d
    return out


def _metrics(out: Path) -> list[dict]:
    return [json.loads((out / f"view_{i:03d}" / "metrics.json").read_text()) for i in range(VIEWS)]


def test_output_tree(runs):
    out = runs["ort"]
    for i in range(VIEWS):
        for k in range(TARGETS):
            for kind in ("pred", "gt"):
                with Image.open(out / f"view_{i:03d}" / "images" / f"target_{k}_{kind}.png") as im:
                    assert im.size == (32, 32) and im.mode == "RGB"
        assert (out / f"view_{i:03d}" / "metrics.json").is_file()
    assert not (out / f"view_{VIEWS:03d}").exists()
    for name in ("steps.png", "contact_sheet.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [int(r["views"]) for r in rows] == [1, 2, 3]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_frames"] == [0, 1, 4] and summary["target_frames"] == [
        2,
        3,
    ]  # default targets of 6 frames
    assert summary["lpips"] is None and "LPIPS" in summary["lpips_note"]
    assert summary["frame_source"].startswith("all input and target cameras")
    assert summary["backend"] == "ort" and summary["image_size"] == 32


def test_metrics_finite_and_consistent_with_pngs(runs):
    out = runs["ort"]
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader(open(out / "summary.csv")))
    for i, m in enumerate(_metrics(out)):
        assert m["views"] == i + 1 and m["cache"]["views"] == i + 1
        assert m["cache"]["bytes_used"] == (i + 1) * m["cache"]["bytes_per_view"] > 0
        assert m["cache"]["bytes_reserved"] >= m["cache"]["bytes_used"]
        assert m["peak_rss_bytes"] > 0
        for call in ("add_view", "render"):
            assert all(math.isfinite(v) and v >= 0 for v in m["latency_ms"][call].values())
        assert m["latency_ms"]["total"] == pytest.approx(
            m["latency_ms"]["add_view"]["total"] + m["latency_ms"]["render"]["total"]
        )
        step_dir = out / f"view_{i:03d}"
        for t in m["targets"]:
            assert math.isfinite(t["psnr"]) and math.isfinite(t["ssim"])
            pred, gt = _png(step_dir / t["pred"]), _png(step_dir / t["gt"])
            assert (
                abs(peak_signal_noise_ratio(gt, pred, data_range=1.0) - t["psnr"])
                <= PSNR_RECOMPUTE_TOL
            )
            sk = structural_similarity(
                gt, pred, win_size=11, gaussian_weights=True, data_range=1.0, channel_axis=0
            )
            assert abs(sk - t["ssim"]) <= 1e-9
        assert m["psnr_mean"] == pytest.approx(
            np.mean([t["psnr"] for t in m["targets"]]), abs=1e-12
        )
        assert float(rows[i]["psnr_mean"]) == pytest.approx(m["psnr_mean"], abs=1e-9)
        assert summary["steps"][i]["psnr_mean"] == pytest.approx(m["psnr_mean"], abs=1e-12)
    gt0 = _png(out / "view_000" / "images" / "target_0_gt.png")
    scene = load_scene(summary["scene_json"])
    assert np.array_equal(
        gt0, _png(scene.frames[2].image_path)
    )  # 32 px scene: GT is the stored frame


def test_ort_torch_parity(runs):
    for a, b in zip(_metrics(runs["ort"]), _metrics(runs["torch"])):
        for ta, tb in zip(a["targets"], b["targets"]):
            assert abs(ta["psnr"] - tb["psnr"]) <= PARITY_TOL
            assert abs(ta["ssim"] - tb["ssim"]) <= 1e-4
    torch_summary = json.loads((runs["torch"] / "summary.json").read_text())
    assert torch_summary["renderer"].startswith("torch")


def test_default_synthetic_scene(tiny_export, tmp_path):
    r = _invoke(tiny_export[0], "--views", 2, "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "_scene" / "synthetic" / "scene.json").is_file()
    assert (tmp_path / "view_001" / "metrics.json").is_file() and not (
        tmp_path / "view_002"
    ).exists()


def test_threads_reach_the_backend(tiny_export, tmp_path, monkeypatch):
    """--threads on a view export is the backend's thread count (it applied only to
    streaming exports and was silently ignored here)."""
    import viewrt.runtime as vrt

    seen = []
    real = vrt.open

    def spy(*args, **kwargs):
        seen.append(kwargs.get("threads"))
        return real(*args, **kwargs)

    monkeypatch.setattr(vrt, "open", spy)
    r = _invoke(tiny_export[0], "--views", 2, "--out", tmp_path, "--threads", 1)
    assert r.exit_code == 0, r.output
    assert seen and set(seen) == {1}
    assert json.loads((tmp_path / "summary.json").read_text())["threads"] == 1


def test_out_apart_from_the_inputs(tiny_export, tmp_path):
    """--out may not be the export (or inside it), the list's folder or a listed scene's
    folder; a subfolder of the list's folder is fine."""
    lst = make_synthetic_list(tmp_path / "data", 1, n_views=5, size=32)
    scene_dir = tmp_path / "data" / "synthetic_000"
    before = sorted(p.name for p in scene_dir.iterdir())
    for out, why in (
        (tiny_export[0], "it is the export"),
        (Path(tiny_export[0]) / "run", "it lies inside the export"),
        (tmp_path / "data", "it is the list's folder"),
        (scene_dir, "it is the folder of the listed scene"),
    ):
        r = CliRunner().invoke(
            main,
            ["infer", str(tiny_export[0]), "--list", str(lst), "--views", "2", "--out", str(out)],
        )
        assert r.exit_code != 0 and why in r.output, r.output
    assert sorted(p.name for p in scene_dir.iterdir()) == before
    assert not (Path(tiny_export[0]) / "run").exists()
    r = _invoke(tiny_export[0], "--list", lst, "--views", 2, "--out", tmp_path / "data" / "run")
    assert r.exit_code == 0, r.output


def test_list_runs_other_scenes_and_reports_failures(tiny_export, tmp_path):
    lst = make_synthetic_list(tmp_path / "data", 3, n_views=5, size=32)
    (tmp_path / "data" / "synthetic_001" / "images" / "00002.png").write_bytes(b"not a png")
    with open(lst, "a") as f:
        f.write("missing/scene.json\n")
    out = tmp_path / "out"
    r = _invoke(tiny_export[0], "--list", lst, "--views", 2, "--out", out)
    assert r.exit_code == 1
    assert (
        "error: 2 of 4 scenes failed: 1 cannot read image (first: synthetic_001, .../00002.png), "
        "1 scene file not found (first: .../scene.json); all in "
    ) in r.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_scenes"], summary["n_ok"], summary["n_failed"]) == (4, 2, 2)
    failed = {f["scene"]: f["error"] for f in summary["failed"]}
    assert "00002.png" in failed["synthetic_001"] and "frame 2" in failed["synthetic_001"]
    (missing,) = [k for k in failed if "missing" in k]
    assert "scene file not found" in failed[missing]
    for name in ("synthetic_000", "synthetic_002"):
        assert (out / name / "view_001" / "images" / "target_1_pred.png").is_file()
        assert json.loads((out / name / "summary.json").read_text())["final"]["views"] == 2
    assert not (out / "synthetic_001").exists()  # its images are read before anything is written
    rows = {row["scene"]: row for row in csv.DictReader(open(out / "summary.csv"))}
    assert rows["synthetic_001"]["status"] == "failed" and rows["synthetic_000"]["status"] == "ok"
    assert (out / "steps.png").is_file()


def test_index_selection_and_null_scene(tiny_export, tmp_path):
    lst = make_synthetic_list(
        tmp_path / "data", 3, n_views=5, size=32
    )  # synthetic_002: not in the index
    index = tmp_path / "index.json"
    index.write_text(
        json.dumps({"synthetic_000": {"context": [4, 0], "target": [2]}, "synthetic_001": None})
    )
    out = tmp_path / "out"
    r = _invoke(tiny_export[0], "--list", lst, "--index", index, "--out", out)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_ok"], summary["n_skipped"], summary["n_failed"]) == (
        1,
        2,
        0,
    )  # absent: skipped, as upstream
    assert not (out / "synthetic_002").exists()
    s0 = json.loads((out / "synthetic_000" / "summary.json").read_text())
    assert (
        s0["input_frames"] == [4, 0]
        and s0["target_frames"] == [2]
        and s0["selection"].startswith("evaluation index")
    )


@pytest.mark.parametrize(
    "args, code, match",  # code: 1 a ViewrtError, 2 a usage error (parsed by click)
    [
        (["--views", 5], 1, "--views 5: scene 's32'"),  # 6 frames, 2 targets: at most 4 inputs
        (["--views", 9], 1, "--views 9 exceeds the cache capacity"),  # export max_views is 8
        (["--targets", "1,x"], 2, "'--targets': '1,x': expected a comma-separated list"),
        (["--targets", "1,6"], 1, "target frame(s) [6] out of range"),
        (["--backend", "trt"], 1, "--backend trt"),  # TensorRT absent (or no engines built)
    ],
)
def test_user_errors(tiny_export, scene32, tmp_path, args, code, match):
    r = _invoke(tiny_export[0], "--scene", scene32, *args, "--out", tmp_path)
    assert r.exit_code == code
    lines = r.stderr.strip().splitlines()  # stdout may hold the memory estimate
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], r.output


def test_bad_scene_json_and_unknown_backend(tiny_export, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"scene_name": "b", "frames": []}))
    r = _invoke(tiny_export[0], "--scene", bad, "--out", tmp_path / "o")
    assert r.exit_code == 1 and "'frames' is empty" in r.output and str(bad) in r.output
    r = _invoke(tiny_export[0], "--backend", "bogus", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "'bogus' is not one of" in r.output


def test_torch_refuses_other_weights(tiny_export, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(tiny_export[0], export)
    m = json.loads((export / "manifest.json").read_text())
    m["weights_sha256"] = "0" * 64
    (export / "manifest.json").write_text(json.dumps(m))
    r = _invoke(export, "--backend", "torch", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "cannot reproduce this export" in r.output


def test_run_scene_with_a_renderer(tiny_export, scene32, tmp_path):
    import viewrt.runtime as vrt

    with vrt.open(tiny_export[0]) as r:
        s = run_scene(r, scene32, tmp_path, [0, 5], [2], progress=False)
        assert r.info()["views"] == 2  # left as run; reset first by the next run_scene
    assert s["frame_source"] == "first added view" and [x["views"] for x in s["steps"]] == [1, 2]
    assert (tmp_path / "view_001" / "images" / "target_0_pred.png").is_file()


def test_select_frames():
    scene = load_scene_stub(8)
    assert (
        default_targets(8) == [2, 5]
        and default_targets(6) == [2, 3]
        and default_targets(3) == [1, 2]
    )
    with pytest.raises(ViewrtError, match="at least 3 frames"):
        default_targets(2)
    sel = select_frames(scene)
    assert sel["targets"] == [2, 5] and sel["inputs"] == [0, 1, 3, 4, 6, 7]
    assert select_frames(scene, max_views=4)["inputs"] == [0, 1, 3, 4]
    assert select_frames(scene, views=2, targets=[7])["inputs"] == [0, 1]
    with pytest.raises(ViewrtError, match="--views 7"):
        select_frames(scene, views=7)
    with pytest.raises(ViewrtError, match="--targets and the evaluation index"):
        select_frames(scene, targets=[1], index={"stub": {"context": [0], "target": [1]}})
    with pytest.raises(ViewrtError, match=r"input frame\(s\) \[9\] out of range"):
        select_frames(scene, index={"stub": {"context": [0, 9], "target": [1]}})


def load_scene_stub(n: int):
    from types import SimpleNamespace

    return SimpleNamespace(name="stub", path=Path("stub.json"), frames=[None] * n)


def test_json_has_no_infinity():
    assert jsonable({"psnr": math.inf, "x": [np.float32(1.5), np.int64(2), math.nan]}) == {
        "psnr": None,
        "x": [1.5, 2, None],
    }


def _openvino_computes_bf16() -> bool:
    """Whether OpenVINO's CPU plugin honours a bf16 inference precision here (AVX512-BF16 or
    AMX); elsewhere it computes in f32."""
    import openvino as ov

    core = ov.Core()
    core.set_property("CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    return core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name() == "bf16"


def test_openvino_backend_and_bf16_against_f32(tiny_export, scene32, runs, tmp_path):
    """--backend openvino in f32 scores like ORT; in bf16 it also reports its image error
    against f32 per step; --inference-precision with another backend is a clear error."""
    pytest.importorskip(
        "openvino", reason="OpenVINO is not installed (pip install 'viewrt[openvino]')"
    )
    r = _invoke(
        tiny_export[0],
        "--scene",
        scene32,
        "--views",
        VIEWS,
        "--backend",
        "openvino",
        "--inference-precision",
        "f32",
        "--out",
        tmp_path / "f32",
    )
    assert r.exit_code == 0, r.output
    for a, b in zip(_metrics(runs["ort"]), _metrics(tmp_path / "f32")):
        for ta, tb in zip(a["targets"], b["targets"]):
            assert abs(ta["psnr"] - tb["psnr"]) <= PARITY_TOL
    s = json.loads((tmp_path / "f32" / "summary.json").read_text())
    assert (
        s["renderer"] == "openvino"
        and s["precision_in_use"] == "fp32"
        and "precision_vs_fp32" not in s
    )
    r = _invoke(
        tiny_export[0], "--scene", scene32, "--inference-precision", "bf16", "--out", tmp_path / "o"
    )
    assert r.exit_code == 1 and "--inference-precision applies to a backend" in r.output
    assert not (tmp_path / "o").exists()
    r = _invoke(
        tiny_export[0],
        "--scene",
        scene32,
        "--views",
        VIEWS,
        "--backend",
        "openvino",
        "--inference-precision",
        "bf16",
        "--out",
        tmp_path / "bf16",
    )
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "bf16" / "summary.json").read_text())
    if not _openvino_computes_bf16():  # the hint is not honoured: the run says so, no comparison
        assert s["precision_in_use"] == "fp32" and "precision_vs_fp32" not in s
        pytest.skip(
            "OpenVINO computes in f32 on this CPU (no AVX512-BF16 or AMX): no bf16 to compare"
        )
    cmp = s["precision_vs_fp32"]
    assert (
        s["precision_in_use"] == cmp["precision"] == "bf16" and cmp["reference_precision"] == "fp32"
    )
    assert [st["views"] for st in cmp["steps"]] == [1, 2, 3]
    assert (
        0 < cmp["max_abs"] <= 1e-2 and cmp["psnr_db_min"] > 30
    )  # docs/design.md: bf16 within 1e-2 of fp32
    assert "bf16 vs fp32" in r.output and "PSNR" in r.output
