"""Shared fixtures: exports of the tiny/small presets made once per test session."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

# A test that runs pytest in a subprocess (tests/cli/test_third_party_backend.py) hands it
# the session's tiny export through this variable instead of paying a second export; the
# reuse is checked against the model's weights digest, preset, precision and max_views.
REUSE_TINY_EXPORT = "VIEWRT_TEST_REUSE_TINY_EXPORT"


def _export(tmp_path_factory, preset: str, precision: str = "fp32", max_views: int = 8):
    from viewrt.export.onnx_export import export_model
    from viewrt.models import build_model

    model, _ = build_model(preset)
    out = tmp_path_factory.mktemp(f"export_{preset}_{precision}")
    reuse = os.environ.get(REUSE_TINY_EXPORT) if (preset, precision) == ("tiny", "fp32") else None
    if reuse:
        _reuse(Path(reuse), out, model, preset, precision, max_views)
        return out, model
    export_model(model, out, preset, max_views=max_views, precision=precision, progress=False)
    return out, model


def _reuse(src: Path, out: Path, model, preset: str, precision: str, max_views: int) -> None:
    from viewrt.contract.manifest import load_manifest
    from viewrt.models.checkpoint import weights_digest

    m = load_manifest(src)  # checksums verified
    got = (m.preset, m.precision, m.max_views, m.weights_sha256)
    want = (preset, precision, max_views, weights_digest(model))
    assert got == want, f"{REUSE_TINY_EXPORT}={src}: {got} is not {want}"
    shutil.copytree(src, out, dirs_exist_ok=True)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """(export dir, fp32 torch model) of the tiny preset, max 8 views."""
    return _export(tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def tiny_export_fp16(tmp_path_factory):
    return _export(tmp_path_factory, "tiny", "fp16")


@pytest.fixture(scope="session")
def small_export(tmp_path_factory):
    """(export dir, fp32 torch model) of the small preset, max 8 views."""
    return _export(tmp_path_factory, "small")


@pytest.fixture(scope="session")
def stream_export(tmp_path_factory):
    """(export dir, fp32 torch model) of the gct-stream stream-tiny preset: at most 6 full
    frames per step, 64 positions, 2 scale frames; untrained seeded weights."""
    return _export(tmp_path_factory, "stream-tiny", max_views=6)


def _real_tensorrt() -> str | None:
    """None where the real ``tensorrt`` imports, else why not (the fake in tests/fake_tensorrt is
    only ever put in sys.modules inside a test, never at collection)."""
    loaded = sys.modules.get("tensorrt")
    if loaded is not None:
        return (
            "only the fake TensorRT (tests/fake_tensorrt) is loaded"
            if getattr(loaded, "IS_FAKE", False)
            else None
        )
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed on this machine"
    return None


def _tested_configurations() -> list[str]:
    """The runtime configurations every runtime test runs on: the registry's rows marked
    ``tests`` (ONNX Runtime on the CPU and OpenVINO in f32, the precision held to PyTorch
    within 1e-4; and any backend registered with ``tests=True``, e.g. by a ``-p`` plugin)."""
    from viewrt.runtime import backends as registry

    return [name for name, row in registry.configs().items() if row.tests]


@pytest.fixture(params=_tested_configurations())
def backend(request):
    """``viewrt.runtime.open`` options of each tested runtime configuration (skipped with
    the registry's reason where its packages are not installed)."""
    from viewrt.runtime import backends as registry

    why = registry.missing(request.param)
    if why is not None:
        pytest.skip(why)
    return {"backend": request.param}


def pytest_collection_modifyitems(config, items):
    """The one skip policy for hardware markers: ``trt`` skips where TensorRT does not import,
    ``gpu`` skips where no CUDA GPU is usable; each with the reason (markers only, never names:
    a test is never skipped for its file or folder name)."""
    wants_trt = any(item.get_closest_marker("trt") for item in items)
    wants_gpu = any(item.get_closest_marker("gpu") for item in items)
    no_trt = _real_tensorrt() if wants_trt else None
    no_gpu = None
    if wants_gpu:
        from viewrt.devices import probe_gpu

        gpu = probe_gpu()
        no_gpu = None if gpu.count else f"no CUDA GPU: {gpu.reason}"
    for item in items:
        if item.get_closest_marker("trt") and no_trt:
            item.add_marker(pytest.mark.skip(reason=no_trt))
        elif item.get_closest_marker("gpu") and no_gpu:
            item.add_marker(pytest.mark.skip(reason=no_gpu))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine multi-threaded
    small ops wait for descheduled workers and run ~100x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
