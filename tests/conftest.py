"""Shared fixtures: exports of the tiny/small presets made once per test session."""

from __future__ import annotations

import importlib.util

import pytest


def _export(tmp_path_factory, preset: str, precision: str = "fp32", max_views: int = 8):
    from viewrt.export.onnx_export import export_model
    from viewrt.models import build_model

    model, _ = build_model(preset)
    out = tmp_path_factory.mktemp(f"export_{preset}_{precision}")
    export_model(model, out, preset, max_views=max_views, precision=precision, progress=False)
    return out, model


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


# Runtime backends every runtime test runs on (options for viewrt.runtime.open); OpenVINO in
# f32, the precision held to PyTorch within 1e-4.
RUNTIME_BACKENDS = {"ort": {"backend": "ort"}, "openvino": {"backend": "openvino", "precision": "f32"}}


@pytest.fixture(params=list(RUNTIME_BACKENDS))
def backend(request):
    """``viewrt.runtime.open`` options of each CPU runtime backend: ONNX Runtime, and OpenVINO
    (f32) where it is installed (skipped with a reason elsewhere)."""
    if request.param == "openvino" and importlib.util.find_spec("openvino") is None:
        pytest.skip("OpenVINO is not installed (pip install 'viewrt[openvino]')")
    return dict(RUNTIME_BACKENDS[request.param])


def pytest_collection_modifyitems(config, items):
    """Skip trt/gpu tests with a reason where TensorRT or a GPU is absent."""
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "trt" in item.keywords and not has_trt:
            item.add_marker(pytest.mark.skip(reason="TensorRT is not installed on this machine"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine multi-threaded
    small ops wait for descheduled workers and run ~100x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
