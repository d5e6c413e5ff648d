"""A backend from outside viewrt is one module plus one registry row (docs/extending.md):
a throwaway backend written into the test's folder, registered with
``viewrt.runtime.backends.register`` (in-process), a ``viewrt.backends`` entry point (a
subprocess of the installed ``viewrt``) or a ``-p`` pytest plugin, is picked up by
``viewrt infer --backend``, ``viewrt bench --backends`` and the parametrized runtime tests
without editing any of them. It really computes (ONNX Runtime on the CPU with the plain
decoder and its own session), and its renders are compared with the built-in ``ort``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from viewrt.cli import main
from viewrt.runtime import backends as registry

ROOT = Path(__file__).resolve().parents[2]
NAME = "throwaway"

# the one module a third party writes (its row is the register() call at the bottom)
BACKEND_MODULE = '''
"""A backend outside viewrt: ONNX Runtime on the CPU with the plain decoder
(MatMul -> Softmax -> MatMul attention), under its own name."""

from viewrt.runtime.backends import BackendEntry, Config
from viewrt.runtime.backends import register as add
from viewrt.runtime.backends.ort import OrtBackend


class ThrowawayBackend(OrtBackend):
    name = "throwaway"
    options = ("device", "threads")

    def __init__(self, manifest, device="cpu", threads=None):
        super().__init__(manifest, device=device, threads=threads, fused_attention=False)


def register():
    add(
        "throwaway",
        BackendEntry(
            "throwaway_backend",
            "ThrowawayBackend",
            ("onnxruntime",),
            "pip install onnxruntime",
            "a throwaway backend: ONNX Runtime CPU, plain decoder",
            unavailable="viewrt.runtime.backends.ort:unavailable",
        ),
        configs={"throwaway": Config("throwaway", {"device": "cpu"}, "throwaway (test)", tests=True)},
    )
'''

# the pytest plugin and the entry point: how each registers it without touching viewrt
PLUGIN_MODULE = "import throwaway_backend\n\nthrowaway_backend.register()\n"
ENTRY_POINTS = "[viewrt.backends]\nthrowaway = throwaway_backend:register\n"


@pytest.fixture
def third_party(tmp_path):
    """A folder holding the backend module and the pytest plugin (``site``), and one holding
    an installed distribution whose ``viewrt.backends`` entry point registers the backend
    (``dist``); each found through PYTHONPATH."""
    pkg, dist_root = tmp_path / "site", tmp_path / "dist"
    pkg.mkdir()
    (pkg / "throwaway_backend.py").write_text(textwrap.dedent(BACKEND_MODULE))
    (pkg / "throwaway_plugin.py").write_text(PLUGIN_MODULE)
    dist = dist_root / "throwaway_backend-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    return pkg


@pytest.fixture
def registered(third_party, monkeypatch):
    """The throwaway backend registered in this process (the registry restored after)."""
    monkeypatch.setattr(registry, "BACKENDS", dict(registry.BACKENDS))
    monkeypatch.setattr(registry, "CONFIGS", dict(registry.CONFIGS))
    monkeypatch.syspath_prepend(str(third_party))
    import throwaway_backend

    throwaway_backend.register()
    yield
    sys.modules.pop("throwaway_backend", None)


def _env(*paths: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    return env


def _viewrt_cli() -> list[str]:
    exe = Path(sys.executable).with_name("viewrt")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "viewrt.cli"]


def _preds(out: Path) -> dict[str, np.ndarray]:
    return {
        str(p.relative_to(out)): np.asarray(Image.open(p), np.int16)
        for p in sorted(out.glob("view_*/images/target_*_pred.png"))
    }


def test_register_refuses_a_taken_name_and_an_unknown_backend(registered):
    from viewrt.errors import ViewrtError

    with pytest.raises(ViewrtError, match="already registered"):
        registry.register(NAME, registry.BACKENDS[NAME])
    with pytest.raises(ViewrtError, match="'nope' is not registered"):
        registry.register("x", configs={"x": registry.Config("nope")})


def test_infer_runs_it_and_matches_ort(tiny_export, registered, tmp_path):
    """``viewrt infer --backend throwaway`` (a choice read from the registry) renders the
    same images as ``--backend ort`` on the same synthetic scene: 8-bit predictions within
    one level (the plain and the fused decoder round differently in float32)."""
    outs = {}
    for backend in (NAME, "ort"):
        outs[backend] = tmp_path / backend
        args = ["infer", str(tiny_export[0]), "--views", "3", "--backend", backend]
        r = CliRunner().invoke(main, [*args, "--out", str(outs[backend])])
        assert r.exit_code == 0, r.output
    summary = json.loads((outs[NAME] / "summary.json").read_text())
    assert summary["backend"] == NAME and summary["renderer"] == NAME
    assert [s["views"] for s in summary["steps"]] == [1, 2, 3]
    mine, ref = _preds(outs[NAME]), _preds(outs["ort"])
    assert mine.keys() == ref.keys() and len(mine) == 3 * 2  # 3 steps x 2 default targets
    worst = max(int(np.abs(mine[k] - ref[k]).max()) for k in mine)
    assert worst <= 1, f"throwaway vs ort: max 8-bit difference {worst}"


def test_bench_picks_it_up_from_an_entry_point(tiny_export, third_party, tmp_path):
    """The installed ``viewrt bench`` in a fresh process finds the backend through its
    ``viewrt.backends`` entry point (nothing registered in-process) and measures it."""
    out = tmp_path / "bench"
    cmd = [
        *_viewrt_cli(),
        "bench",
        str(tiny_export[0]),
        "--backends",
        f"{NAME},ort",
        "--views",
        "1,2",
        "--targets",
        "1",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--quiet",
        "--gemm-size",  # the roofline's plumbing, not this machine's peak
        "128",
        "--out",
        str(out),
    ]
    env = _env(third_party, third_party.parent / "dist")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    data = json.loads((out / "results.json").read_text())
    assert data["backends"] == [NAME, "ort"] and data["skipped"] == {}
    assert data["descriptions"][NAME] == "throwaway (test)"
    mine = [r for r in data["rows"] if r["backend"] == NAME]
    assert [(r["n_views"], r["n_targets"], r["status"]) for r in mine] == [
        (1, 1, "measured"),
        (2, 1, "measured"),
    ]
    assert all(r["median_ms"] > 0 for r in mine)
    assert data["cpu_precision"]["precisions"][NAME] == "fp32"


def test_the_runtime_tests_run_on_it(third_party, tiny_export):
    """The parametrized runtime tests, unedited, gain ``[throwaway]`` cases when a ``-p``
    plugin registers the backend, and those cases pass (parity with PyTorch included). The
    inner session reuses this session's tiny export (tests/conftest.py checks it is the
    same model) instead of exporting it again."""
    from conftest import REUSE_TINY_EXPORT

    select = "throwaway and (scripted_sequence_parity and tiny or window_with_pinned_views)"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "throwaway_plugin",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rA",
        "tests/runtime/test_runtime.py",
        "-k",
        select,
    ]
    env = {**_env(third_party), REUSE_TINY_EXPORT: str(tiny_export[0])}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    passed = sorted(
        line.split("::", 1)[1] for line in res.stdout.splitlines() if line.startswith("PASSED ")
    )
    assert passed == [
        "test_scripted_sequence_parity[throwaway-tiny_export]",
        "test_window_with_pinned_views[throwaway]",
    ], res.stdout[-3000:]
