"""What is OpenVINO's own: precision in use, bounded dynamic axes, shared-memory binding of
the cache (by address), reused infer requests, bf16 against f32. The runtime's parity,
policy and error tests run on OpenVINO through the ``backend`` fixture (test_runtime.py)."""

from __future__ import annotations

import numpy as np
import pytest

ov = pytest.importorskip(
    "openvino", reason="OpenVINO is not installed (pip install 'viewrt[openvino]')"
)

from test_runtime import ATOL, Scene, assert_parity  # noqa: E402

import viewrt.runtime as vrt  # noqa: E402
from viewrt.contract.precision import get_precision  # noqa: E402
from viewrt.errors import ViewrtError  # noqa: E402
from viewrt.runtime.backends.openvino import OpenVinoBackend  # noqa: E402

BF16_ATOL = get_precision("fp32").atol_images_bf16


def test_precision_in_use_is_reported(tiny_export):
    out_dir, _ = tiny_export
    default = (
        ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    )  # this CPU's default
    names = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
    with vrt.open(out_dir, backend="openvino") as r:
        assert r.backend.precision == default and r.info()["precision"] == names[default]
        assert r.backend.info()["requested_precision"] is None
    with vrt.open(out_dir, backend="openvino", inference_precision="f32") as r:
        assert r.backend.precision == "f32" and r.info()["precision"] == "fp32"
        for compiled in r.backend.compiled.values():
            assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    with vrt.open(out_dir) as r:
        assert r.info()["precision"] == "fp32"  # ONNX Runtime: the export's


def test_dynamic_axes_bounded_by_the_manifest(tiny_export):
    out_dir, _ = tiny_export
    m = vrt.load_manifest(out_dir)
    with vrt.open(out_dir, backend="openvino", inference_precision="f32") as r:
        dec = {
            p.get_any_name(): p.get_partial_shape() for p in r.backend.compiled["decoder"].inputs
        }
        past = dec[m.past_names[0]]
        assert (
            past[1].get_min_length() == 1
            and past[1].get_max_length() == m.max_views * m.tokens_per_view
        )
        assert [past[i].get_length() for i in (0, 2, 3)] == [1, m.n_heads, m.head_dim]
        rays = dec[m.target_input]
        assert rays[1].get_max_length() == m.max_targets and rays[2].get_length() == 6
        assert all(p.get_partial_shape().is_static for p in r.backend.compiled["encoder"].inputs)
        # past the bound: the manifest's clear error before OpenVINO sees it
        too_many = np.zeros(
            (1, m.max_views * m.tokens_per_view + 1, m.n_heads, m.head_dim), np.float32
        )
        feed = {n: too_many for n in m.past_names} | {
            m.target_input: np.zeros((1, 1, 6, m.image_size, m.image_size), np.float32)
        }
        with pytest.raises(
            ViewrtError,
            match=rf"input '{m.past_names[0]}': got shape .* expected \(1, '<={m.max_views * m.tokens_per_view}'",
        ):
            r.backend.infer("decoder", feed)


def test_cache_bound_by_address_and_requests_reused(tiny_export):
    """The infer requests hold shared-memory tensors whose data is the cache slot (encoder
    outputs) and the cache prefix (decoder past inputs); requests and tensors are made
    once and reused, with no copy of the cache."""
    out_dir, model = tiny_export
    sc = Scene(model, n_views=4)
    with vrt.open(
        out_dir, max_views=4, frame=sc.frame, backend="openvino", inference_precision="f32"
    ) as r:
        be, m, T = r.backend, r.manifest, r.cache.T
        requests = dict(be.requests)
        row = T * m.n_heads * m.head_dim * 4  # bytes per cached view of one buffer
        for i in range(3):
            r.add_view(sc.images[i], sc.cams[i])
            enc = be.requests["encoder"]
            for name, buf in zip(m.present_names, r.cache.buffers):
                t = enc.get_tensor(name)
                assert t.data.ctypes.data == buf.ptr + i * row and tuple(t.shape) == (
                    1,
                    T,
                    m.n_heads,
                    m.head_dim,
                )
            r.render(sc.targets)
            dec = be.requests["decoder"]
            for name, buf in zip(m.past_names, r.cache.buffers):
                t = dec.get_tensor(name)
                assert t.data.ctypes.data == buf.ptr and tuple(t.shape) == (
                    1,
                    (i + 1) * T,
                    m.n_heads,
                    m.head_dim,
                )
                assert np.shares_memory(t.data, buf.host)
            img = dec.get_tensor(m.image_output)
            assert img.data.ctypes.data == r._images.ptr  # rendered in place into the image buffer
        assert all(be.requests[g] is requests[g] for g in requests)  # never re-created
        memo = [len(b.owner.tensors) for b in r.cache.buffers]
        before = [dict(b.owner.tensors) for b in r.cache.buffers]
        for _ in range(3):
            r.render(sc.targets)  # same N: the same tensor objects, nothing new
        assert [len(b.owner.tensors) for b in r.cache.buffers] == memo
        assert all(
            b.owner.tensors[k] is v for b, d in zip(r.cache.buffers, before) for k, v in d.items()
        )
        assert_parity(r, sc, [0, 1, 2])


def test_bf16_and_default_close_to_f32(tiny_export):
    """bf16 (native or emulated) and OpenVINO's default (with the bf16 K/V cache where it
    computes in bf16) stay within the precision table's bf16 tolerance of f32 (2e-2,
    docs/design.md); f32 is within the fp32 tolerance of PyTorch."""
    out_dir, model = tiny_export
    sc = Scene(model, n_views=3)
    rs = {
        p: vrt.open(out_dir, frame=sc.frame, backend="openvino", inference_precision=p)
        for p in ("f32", "bf16", None)
    }
    try:
        for i in range(3):
            for r in rs.values():
                r.add_view(sc.images[i], sc.cams[i])
            x = rs["f32"].render(sc.targets)
            assert np.abs(x - sc.reference(list(range(i + 1)))).max() <= ATOL
            for p in ("bf16", None):
                assert np.abs(rs[p].render(sc.targets) - x).max() <= BF16_ATOL
    finally:
        for r in rs.values():
            r.close()


def test_open_errors(tiny_export):
    out_dir, _ = tiny_export
    with pytest.raises(ViewrtError, match="precision must be one of"):
        vrt.open(out_dir, backend="openvino", inference_precision="int4")
    with pytest.raises(ViewrtError, match="runs on the CPU"):
        vrt.open(out_dir, backend="openvino", device="cuda:0")
    with pytest.raises(ViewrtError, match="backend .ort. takes no option inference_precision"):
        vrt.open(out_dir, backend="ort", inference_precision="f32")
    with pytest.raises(ViewrtError, match="not active"):
        be = OpenVinoBackend(vrt.load_manifest(out_dir))
        be.run("encoder", {}, {})


def test_unfused_attention_matches_pytorch_and_splits_targets(tiny_export):
    """``openvino-plain`` (fused_attention=False, SNIPPETS_MODE=DISABLE on the decoder): the decoder
    runs attention as Softmax nodes (no Snippets "Subgraph"), it is held to PyTorch within
    the fp32 tolerance at every step, and the renderer splits targets by its attention
    budget as for any backend that materializes scores."""
    out_dir, model = tiny_export
    sc = Scene(model, n_views=3, n_targets=3)
    with vrt.open(
        out_dir, frame=sc.frame, backend="openvino-plain", inference_precision="f32"
    ) as r:
        assert r.backend.materializes_attention and r.backend.info()["fused_attention"] is False
        types = {
            op.get_rt_info()["layerType"].astype(str)
            for op in r.backend.compiled["decoder"].get_runtime_model().get_ordered_ops()
        }
        assert "Softmax" in types and "Subgraph" not in types, types
        enc = r.backend.compiled["encoder"].get_runtime_model().get_ordered_ops()
        assert "Subgraph" in {op.get_rt_info()["layerType"].astype(str) for op in enc}  # fused
        for i in range(3):
            r.add_view(sc.images[i], sc.cams[i])
            assert_parity(r, sc, list(range(i + 1)))
        r.attention_budget = 1  # bytes: one target per decoder call, same images
        assert r._targets_per_call(3) == 1
        assert_parity(r, sc, [0, 1, 2])
    with vrt.open(out_dir, backend="openvino", inference_precision="f32") as r:
        assert not r.backend.materializes_attention and r.backend.info()["fused_attention"]
