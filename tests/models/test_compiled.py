"""The torch.compile peers of `viewrt bench` (viewrt.models.compiled): the compiled
renderer renders what the eager one does, compiles once per shape family (outside any
step), and a failing compilation is one ViewrtError.

Inductor's C++ compile takes tens of seconds even on the tiny preset, so the default run
uses dynamo's "eager" backend (real tracing, guards and one graph per shape, no C++);
VIEWRT_TEST_COMPILE=1 adds the same checks through inductor."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import viewrt.models.compiled as compiled
from viewrt.errors import ViewrtError
from viewrt.geometry import Camera, NormalizationFrame
from viewrt.models import build_model
from viewrt.models.torch_renderer import CompiledTorchRenderer, TorchRenderer

INDUCTOR = pytest.param(
    "inductor",
    marks=pytest.mark.skipif(
        os.environ.get("VIEWRT_TEST_COMPILE") != "1",
        reason="inductor compiles for tens of seconds; set VIEWRT_TEST_COMPILE=1 to run it",
    ),
)


def _cameras(n: int, size: int) -> list[Camera]:
    rng = np.random.default_rng(1)
    cams = []
    for i in range(n):
        c2w = np.eye(4)
        c2w[:3, 3] = [0.2 * i, 0.1 * rng.standard_normal(), 2.0]
        cams.append(Camera(c2w, np.array([size, size, size / 2, size / 2], float)))
    return cams


@pytest.fixture(scope="module")
def tiny():
    model, _ = build_model("tiny")
    return model.eval()


@pytest.mark.parametrize("backend", ["eager", INDUCTOR])
def test_compiled_renderer_matches_eager_once_per_shape(tiny, backend, monkeypatch):
    monkeypatch.setattr(compiled, "BACKEND", backend)
    S = tiny.cfg.image_size
    cams = _cameras(6, S)
    frame = NormalizationFrame.from_cameras(np.stack([c.c2w for c in cams]))
    rng = np.random.default_rng(0)
    images = [rng.random((3, S, S)).astype(np.float32) for _ in range(3)]
    eager = TorchRenderer(tiny, 4, frame=frame)
    comp = CompiledTorchRenderer(tiny, 4, frame=frame)
    assert list(comp.compile_log) == [f"encode [1, 9, {S}, {S}]"]
    for i, image in enumerate(images):
        eager.add_view(image, cams[i])
        comp.add_view(image, cams[i])
        targets = cams[4 : 4 + 1 + i % 2]
        assert comp.compile(targets) >= 0.0
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        got, want = comp.render(targets), eager.render(targets)
        assert got.shape == want.shape and float(np.abs(want).max()) > 0.1
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        # the step after compile(): no new graph (a warm step), also for the encoder
        comp.remove_view(comp.cache.view_ids[-1])
        comp.add_view(image, cams[i])
        comp.render(targets)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
        assert comp.compile(targets) == 0.0  # that shape family is compiled
    assert set(comp.compile_log) == {
        f"encode [1, 9, {S}, {S}]",
        "render N=1 T=1",
        "render N=2 T=2",
        "render N=3 T=1",
    }
    assert comp.info()["backend"] == "torch-compile-fp32"


def test_a_failing_compile_is_one_viewrt_error(tiny, monkeypatch):
    monkeypatch.setattr(compiled, "BACKEND", "no-such-backend")
    with pytest.raises(ViewrtError, match=r"torch.compile \(no-such-backend\) failed"):
        CompiledTorchRenderer(tiny, 2)


def test_no_cxx_compiler_is_said_before_any_compile(monkeypatch):
    from torch._inductor import config

    with config.patch({"cpp.cxx": (None, "no-such-c++")}):  # torch's own config patching
        assert "no-such-c++ not found" in compiled.compile_unavailable()
        monkeypatch.setattr(compiled, "BACKEND", "eager")
        assert compiled.compile_unavailable() is None  # dynamo's eager backend compiles no C++
