"""The renderer's cache rules with a real backend: the non-keyframe rule at every fill
level, capacity = min(manifest, backend), a failed encode changes nothing, API type errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import viewrt.contract.names as N
import viewrt.runtime as vrt
from viewrt.contract.manifest import load_manifest
from viewrt.data import synthetic_cameras
from viewrt.errors import ViewrtError
from viewrt.geometry import input_view, plucker
from viewrt.runtime.backends import create
from viewrt.runtime.renderer import Renderer

ATOL = 1e-4


def _scene(model, n, seed=None):
    size = model.cfg.image_size
    rng = np.random.default_rng(seed)
    c2ws, k = synthetic_cameras(n + 2, size, int(rng.integers(1 << 30)))
    images = rng.random((n, 3, size, size), dtype=np.float32)
    cams = [vrt.Camera(c, k) for c in c2ws]
    return images, cams[:n], cams[n:], vrt.NormalizationFrame.from_cameras(c2ws)


def _reference(model, images, cams, targets, frame, idx):
    s = model.cfg.image_size
    views = np.stack(
        [input_view(images[i], frame.apply(cams[i].c2w), cams[i].fxfycxcy) for i in idx]
    )
    rays = np.stack([plucker(frame.apply(c.c2w), c.fxfycxcy, s, s) for c in targets])
    with torch.no_grad():
        return model(torch.from_numpy(views)[None], torch.from_numpy(rays)[None])[0].numpy()


@pytest.mark.parametrize("keyframes_before", [0, 1, 2, 5])
def test_non_keyframe_takes_part_in_the_next_render_whatever_comes_before(
    tiny_export, keyframes_before
):
    """The issue's failing input (2 keyframes, non-keyframe N, keyframe, render) at
    several fill levels of a max-8 cache: N is in the render, then dropped."""
    out_dir, model = tiny_export
    images, cams, targets, frame = _scene(model, keyframes_before + 2)
    with vrt.open(out_dir, frame=frame) as r:
        for i in range(keyframes_before):
            r.add_view(images[i], cams[i])
        nk = keyframes_before
        r.add_view(images[nk], cams[nk], keyframe=False)
        r.add_view(images[nk + 1], cams[nk + 1])
        got = r.render(targets)
        want = _reference(model, images, cams, targets, frame, list(range(keyframes_before + 2)))
        assert np.abs(want).max() > 0.01 and np.abs(got - want).max() <= ATOL
        without = _reference(
            model, images, cams, targets, frame, [i for i in range(keyframes_before + 2) if i != nk]
        )
        assert np.abs(r.render(targets) - without).max() <= ATOL  # then dropped


def test_capacity_is_the_smaller_of_manifest_and_backend(tiny_export):
    """A backend that admits fewer views than the export (e.g. TensorRT engines built with
    --max-views 4 from an export of 8) bounds the renderer: the 5th view is refused."""
    out_dir, model = tiny_export
    m = load_manifest(out_dir)
    be = create("ort", m)
    be.bounds[N.PAST_TOKENS] = 4 * m.tokens_per_view  # what the engine profile says
    images, cams, targets, frame = _scene(model, 5)
    with Renderer(m, be, frame=frame) as r:
        assert r.max_views == 4
        for i in range(4):
            r.add_view(images[i], cams[i])
        with pytest.raises(ViewrtError, match=r"cache full \(4 of 4 views\)"):
            r.add_view(images[4], cams[4])
        assert (
            np.abs(
                r.render(targets) - _reference(model, images, cams, targets, frame, [0, 1, 2, 3])
            ).max()
            <= ATOL
        )
    with pytest.raises(ViewrtError, match=r"max_views must be in 1..4 \(the ort backend's\)"):
        Renderer(m, be, max_views=5)


def test_failed_encode_into_an_evicted_slot_changes_nothing(tiny_export, monkeypatch):
    out_dir, model = tiny_export
    images, cams, targets, frame = _scene(model, 4)
    with vrt.open(out_dir, max_views=3, window=3, frame=frame) as r:
        for i in range(3):
            r.add_view(images[i], cams[i])
        before = r.info()
        kv = [r.backend.download(b) for b in r.cache.buffers]
        real_run = r.backend._run

        def failing(graph, inputs, outputs):
            real_run(graph, inputs, outputs)  # writes the free slot ...
            raise RuntimeError("device lost")  # ... then fails

        monkeypatch.setattr(r.backend, "_run", failing)
        with pytest.raises(RuntimeError):
            r.add_view(images[3], cams[3])  # would evict view 0
        monkeypatch.setattr(r.backend, "_run", real_run)
        assert r.info() == before
        T = r.cache.T
        for b, k0 in zip(r.cache.buffers, kv):
            assert np.array_equal(r.backend.download(b)[:, : 3 * T], k0[:, : 3 * T])
        got = r.render(targets)
        assert (
            np.abs(got - _reference(model, images, cams, targets, frame, [0, 1, 2])).max() <= ATOL
        )


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda r, c: r.render(42), "expected a list of cameras"),
        (lambda r, c: r.render("cam"), "expected a list of cameras"),
        (lambda r, c: r.remove_view("0"), "view id must be an integer"),
        (lambda r, c: r.add_view(np.zeros((2, 2), np.float32), c), "image: got shape"),
        (lambda r, c: r.add_view([[1]], c), "image: expected a float array"),
        (lambda r, c: r.add_view("img", c), "image: expected a float array"),
        (
            lambda r, c: r.add_view(np.zeros((3, 32, 32), np.float32), c, keyframe="no"),
            "keyframe must be True or False",
        ),
    ],
)
def test_api_type_mistakes_are_clear_errors(tiny_export, call, pattern):
    out_dir, model = tiny_export
    images, cams, targets, frame = _scene(model, 1)
    with vrt.open(out_dir, frame=frame) as r:
        r.add_view(images[0], cams[0])
        before = r.info()
        with pytest.raises(ViewrtError, match=pattern):
            call(r, cams[0])
        assert r.info() == before


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(window="2"), "window must be an integer"),
        (dict(max_views=2.5), "max_views must be an integer"),
        (dict(pinned=True), "pinned must be an integer"),
        (dict(backend=3), "backend must be a name"),
        (dict(frame="x"), "frame: expected"),
        (dict(attention_budget_mib=-1), "attention_budget_mib"),
        (dict(inference_precision="bf16"), "takes no option inference_precision"),
    ],
)
def test_open_type_mistakes_are_clear_errors(tiny_export, kwargs, pattern):
    with pytest.raises(ViewrtError, match=pattern):
        vrt.open(tiny_export[0], **kwargs)


def test_a_closed_renderer_refuses_work(tiny_export):
    out_dir, model = tiny_export
    images, cams, targets, frame = _scene(model, 1)
    r = vrt.open(out_dir, frame=frame)
    r.add_view(images[0], cams[0])
    r.close()
    for call in (
        lambda: r.add_view(images[0], cams[0]),
        lambda: r.render(targets),
        lambda: r.remove_view(0),
        r.reset,
    ):
        with pytest.raises(ViewrtError, match="the renderer is closed"):
            call()
    assert r.info()["views"] == 1  # info still answers


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(threads="2"), "threads must be a positive integer"),
        (dict(threads=0), "threads must be a positive integer"),
        (dict(threads=-1), "threads must be a positive integer"),
        (dict(device=0), "device must be a string"),
        (dict(pinned=17), "pinned = 17 exceeds the cache capacity of 8 views"),
    ],
)
def test_open_option_values_are_checked(tiny_export, kwargs, pattern):
    with pytest.raises(ViewrtError, match=pattern):
        vrt.open(tiny_export[0], **kwargs)


def test_frame_from_camera_pairs_or_matrices_and_bad_frames(tiny_export):
    """A frame given as (c2w, fxfycxcy) pairs equals one given as c2w matrices; a ragged or
    malformed frame is one ViewrtError (it was a bare numpy ValueError)."""
    out_dir, model = tiny_export
    _, cams, _, _ = _scene(model, 3)
    pairs = [(c.c2w, c.fxfycxcy) for c in cams]
    with vrt.open(out_dir, frame=pairs) as a, vrt.open(out_dir, frame=[c.c2w for c in cams]) as b:
        assert a.info()["frame"] == b.info()["frame"]
    for bad in ([np.eye(3)], [(np.eye(4), [1.0, 1.0]), np.eye(4)[:3]], [[1, 2, 3]]):
        with pytest.raises(ViewrtError, match="frame|camera"):
            vrt.open(out_dir, frame=bad)


def test_a_configuration_is_not_contradicted_under_its_name(tiny_export):
    """openvino-f32 with inference_precision bf16 ran bf16 under the f32 name: refused; an
    option the configuration does not fix, and the device (a default), may be given."""
    import viewrt.runtime.backends as registry

    pytest.importorskip("openvino")
    with pytest.raises(
        ViewrtError, match=r"openvino-f32 runs with inference_precision 'f32', not 'bf16'"
    ):
        vrt.open(tiny_export[0], "openvino-f32", inference_precision="bf16")
    backend, opts = registry.resolve("openvino-plain", inference_precision="f32", threads=1)
    assert backend == "openvino" and opts == {
        "fused_attention": False,
        "inference_precision": "f32",
        "threads": 1,
    }
    assert registry.resolve("ort", device="cuda:1") == ("ort", {"device": "cuda:1"})
