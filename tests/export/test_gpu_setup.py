"""GPU/TensorRT set-up that can be checked on a CPU machine: the ORT TensorRT-EP options,
the gpu extras, the cache's address alignment, the single TensorRT import, the skip policy,
and what `viewrt build` says without TensorRT. (No test here runs TensorRT or a GPU.)"""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path

import numpy as np
import pytest
import tomllib
from click.testing import CliRunner

import viewrt.runtime as vrt
from helpers.imports import imported_modules
from viewrt import devices
from viewrt.errors import ViewrtError

ROOT = Path(__file__).resolve().parents[2]


def test_ort_tensorrt_ep_builds_typed_graphs_strongly(tiny_export_fp16):
    """trt_fp16_enable builds weakly typed: never set it for a graph that carries fp16."""
    from viewrt.runtime.backends.ort import OrtBackend

    m = vrt.load_manifest(tiny_export_fp16[0])
    assert m.precision == "fp16"
    for g in ("encoder", "decoder"):
        opts = OrtBackend(m, "tensorrt:0")._provider_options("TensorrtExecutionProvider", g)
        assert opts["trt_fp16_enable"] is False and opts["trt_int8_enable"] is False


def test_ort_trt_engine_cache_is_keyed_by_the_graph_sha256(tiny_export):
    from viewrt.runtime.backends.ort import OrtBackend

    out_dir, _ = tiny_export
    m = vrt.load_manifest(out_dir)
    be = OrtBackend(m, "tensorrt:0")
    paths = {}
    for g in ("encoder", "decoder"):
        opts = be._provider_options("TensorrtExecutionProvider", g)
        paths[g] = Path(opts["trt_engine_cache_path"])
        assert paths[g] == out_dir / "ort_trt_cache" / m.graphs[g].sha256
        assert opts["trt_timing_cache_path"] == str(out_dir / "ort_trt_cache")
    assert paths["encoder"] != paths["decoder"]


def test_gpu_extras_pin_cuda_python_to_the_driver_major():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]

    def cuda_python(extra):
        (spec,) = [s for s in extras[extra] if s.startswith("cuda-python")]
        return spec

    assert re.fullmatch(r"cuda-python>=12[.0-9]*,<13", cuda_python("gpu-cu12"))
    assert re.fullmatch(r"cuda-python>=13[.0-9]*,<14", cuda_python("gpu-cu13"))
    assert extras["gpu"] == ["viewrt[gpu-cu12]"]  # unbounded `cuda-python>=12.0` resolved to 13.x


def test_cache_refuses_slots_that_break_the_backend_alignment():
    from viewrt.contract.family import VIEW_SLOTS, CacheGeometry
    from viewrt.runtime.kv.storage import KVStorage

    def manifest(tokens, heads, head_dim, dtype):
        geo = CacheGeometry(VIEW_SLOTS, "view", tokens, 4, 1, heads, head_dim, "e", "d", "p")
        return types.SimpleNamespace(
            cache=geo, np_kv_dtype=np.dtype(dtype), present_names=["present_key.0"]
        )

    allocated = []
    backend = types.SimpleNamespace(
        name="trt",
        address_alignment=256,
        cache_dtype=np.dtype("float16"),
        alloc=lambda s, d: allocated.append(s) or s,
    )
    with pytest.raises(
        ViewrtError,
        match=r"= 120 bytes\) is not a multiple of the 256-byte address alignment the trt backend",
    ):
        KVStorage(backend, manifest(5, 3, 4, "float16"), slots=5)
    assert allocated == []  # refused before allocating anything
    KVStorage(backend, manifest(16, 2, 32, "float16"), slots=5)  # 2048 bytes per view: fine
    KVStorage(
        types.SimpleNamespace(name="ort", cache_dtype=np.dtype("float16"), alloc=lambda s, d: s),
        manifest(5, 3, 4, "float16"),
        5,
    )  # host: no rule


def test_one_tensorrt_import_and_gpu_probe():
    """tensorrt and cuda-python are imported only by viewrt/devices.py (function-local imports
    included); devices.py is a leaf of the root package."""
    offenders = []
    for folder in ("viewrt", "export", "runtime", "models", "calib"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "devices.py" and folder == "viewrt":
                continue
            mods = imported_modules(path)
            if mods & {"tensorrt", "cuda", "cuda.bindings", "cuda.cudart"} or any(
                m.startswith("cuda.") for m in mods
            ):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    dev = imported_modules(ROOT / "viewrt" / "devices.py")
    assert not any(m.startswith(("viewrt.models", "viewrt.export", "viewrt.runtime")) for m in dev)


def test_backends_share_one_memory_implementation():
    """Host and CUDA memory live in runtime/backends/memory.py; backend files hold none."""
    for name in ("ort.py", "trt.py"):
        tree = ast.parse((ROOT / "runtime" / "backends" / name).read_text())
        methods = {
            f.name
            for c in ast.walk(tree)
            if isinstance(c, ast.ClassDef)
            for f in c.body
            if isinstance(f, ast.FunctionDef)
        }
        assert not methods & {"alloc", "copy", "upload", "download", "synchronize"}, name


def test_skip_policy_uses_markers_with_reasons(monkeypatch):
    import conftest

    class Item:
        def __init__(self, *marks):
            self.marks, self.skips = set(marks), []

        def get_closest_marker(self, name):
            return name if name in self.marks else None

        def add_marker(self, mark):
            self.skips.append(mark.kwargs["reason"])

    monkeypatch.setattr(
        devices,
        "probe_gpu",
        lambda: devices.GpuInfo(0, reason="cudaGetDeviceCount failed: cudaErrorNoDevice"),
    )
    monkeypatch.setattr(
        conftest, "_real_tensorrt", lambda: "TensorRT is not installed on this machine"
    )
    gpu, trt, plain = Item("gpu"), Item("trt", "gpu"), Item()
    conftest.pytest_collection_modifyitems(None, [gpu, trt, plain])
    assert gpu.skips == ["no CUDA GPU: cudaGetDeviceCount failed: cudaErrorNoDevice"]
    assert trt.skips == ["TensorRT is not installed on this machine"] and plain.skips == []


def test_viewrt_build_without_tensorrt_says_why(tiny_export, tmp_path):
    from viewrt.cli import main

    devices.reset()
    status = devices.tensorrt_status()
    if status.ok:
        pytest.skip("TensorRT and a GPU are usable here")
    res = CliRunner().invoke(main, ["build", str(tiny_export[0])])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"TensorRT engines not built: {status.reason}" in res.output
    res = CliRunner().invoke(main, ["build", str(tiny_export[0]), "--if-available"])
    assert (
        res.exit_code == 0
        and f"engines NOT built in {tiny_export[0]}: {status.reason}" in res.output
    )
    assert not list(Path(tiny_export[0]).glob("*.engine"))


def test_gpu_check_says_why_and_exits_3_without_tensorrt(tmp_path):
    import subprocess
    import sys

    devices.reset()
    if devices.tensorrt_status().ok:
        pytest.skip("TensorRT and a GPU are usable here: `make gpu-check` would run for minutes")
    res = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "gpu_check.py"), "--out", str(tmp_path / "gc")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 3
    assert res.stderr.startswith("gpu-check NOT run: ") and res.stderr.count("\n") == 1
    assert not (tmp_path / "gc").exists()


def test_ort_tensorrt_ep_profile_is_the_manifest_ranges(tiny_export):
    """The ORT TensorRT EP's profile comes from Manifest.dynamic_ranges (the one opt rule):
    checked on the option strings without a GPU."""
    from viewrt.contract.manifest import load_manifest
    from viewrt.runtime.backends import ort

    m = load_manifest(tiny_export[0])
    backend = ort.OrtBackend(m, device="tensorrt:0")
    opts = ort._tensorrt_options(backend, "decoder")
    r = m.dynamic_ranges()
    T, H, Dh, S = m.tokens_per_view, m.n_heads, m.head_dim, m.image_size
    for key, k in (("min", 0), ("opt", 1), ("max", 2)):
        shapes = dict(s.split(":") for s in opts[f"trt_profile_{key}_shapes"].split(","))
        assert shapes["past_key.0"] == f"1x{r['past_tokens'][k]}x{H}x{Dh}"
        assert shapes["target_rays"] == f"1x{r['num_targets'][k]}x6x{S}x{S}"
    assert r["past_tokens"][1] == max(1, m.max_views // 2) * T  # tuned for half the cache
