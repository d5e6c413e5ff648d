"""The ONNX Runtime CPU decoder variant (fused MultiHeadAttention): what it contains, that the
ORT CPU backend loads it, and that it renders what the plain decoder renders."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import viewrt.runtime as vrt
from viewrt.contract.manifest import load_manifest
from viewrt.data import synthetic_cameras
from viewrt.errors import ViewrtError


def test_variant_replaces_every_cross_attention(tiny_export):
    out_dir, model = tiny_export
    m = load_manifest(out_dir)
    g = onnx.load(str(m.variant("decoder", "onnxruntime-cpu")), load_external_data=False).graph
    mha = [n for n in g.node if n.op_type == "MultiHeadAttention"]
    assert len(mha) == model.cfg.n_layers and all(n.domain == "com.microsoft" for n in mha)
    plain = onnx.load(str(m.path("decoder")), load_external_data=False).graph
    softmax = lambda gr: sum(n.op_type == "Softmax" for n in gr.node)  # noqa: E731
    assert softmax(plain) - softmax(g) == model.cfg.n_layers  # target self-attention stays plain
    assert not any(
        n.op_type == "MultiHeadAttention" for n in plain.node
    )  # the TensorRT graph is unchanged


def test_ort_cpu_renders_with_the_variant_as_with_the_plain_decoder(tiny_export):
    out_dir, model = tiny_export
    rng = np.random.default_rng()
    size = model.cfg.image_size
    c2ws, k = synthetic_cameras(7, size, int(rng.integers(1 << 30)))
    imgs = rng.random((5, 3, size, size), dtype=np.float32)
    frame = vrt.NormalizationFrame.from_cameras(c2ws)
    got = {}
    for name in ("ort", "ort-plain"):
        with vrt.open(out_dir, name, frame=frame) as r:
            assert r.info()["decoder_graph"] == (
                "decoder_ort_cpu.onnx" if name == "ort" else "decoder.onnx"
            )
            assert r.backend.materializes_attention == (name == "ort-plain")
            for i in range(5):
                r.add_view(imgs[i], vrt.Camera(c2ws[i], k))
            got[name] = r.render([vrt.Camera(c2ws[5], k), vrt.Camera(c2ws[6], k)])
    assert np.abs(got["ort-plain"]).max() > 0.01
    assert np.abs(got["ort"] - got["ort-plain"]).max() <= 1e-4


def test_a_tampered_variant_is_refused(tiny_export, tmp_path):
    import shutil

    dst = tmp_path / "e"
    shutil.copytree(tiny_export[0], dst)
    (dst / "decoder_ort_cpu.onnx").write_bytes(b"\0" * 16)
    with pytest.raises(ViewrtError, match="decoder_ort_cpu.onnx: checksum differs"):
        vrt.open(dst)
    with vrt.open(dst, "ort-plain") as r:  # the plain decoder does not need it
        assert r.info()["decoder_graph"] == "decoder.onnx"
