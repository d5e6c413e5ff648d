"""The gct-stream export (export/gct_stream_spec.py): the manifest says the memory kind and
the camera-head side cache, the weights are labelled untrained, validation ran within
tolerance, the graphs are plain-attention opset 18, and the step graph's position and
retained-token mask are live inputs (changing them changes the outputs), never constants.
Parity at every frame of whole streams is tests/runtime/test_stream_session.py."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import viewrt.contract.names as N
from viewrt.contract.manifest import load_manifest
from viewrt.errors import ViewrtError
from viewrt.export.gct_stream_spec import _feeds


def test_manifest_records(stream_export):
    m = load_manifest(stream_export[0])
    assert m.family == "gct-stream" and m.memory == "token-window"
    assert list(m.graphs) == ["prefill", "step"]
    assert m.extra["weights"] == "untrained"
    geo = m.cache
    assert (geo.tokens_per_entry, geo.retain_tokens, geo.max_positions, geo.capacity) == (
        10,
        6,
        64,
        6,
    )
    cam = m.contract.side_caches(m.header)["camera"]
    assert cam.tokens_per_entry == 1 and cam.n_layers == 2 and cam.dim == N.CAMERA_TOKENS
    v = m.validation
    assert v["max_abs_error"] and all(0 < e <= v["atol"] for e in v["max_abs_error"].values())
    data = json.loads((m.dir / N.MANIFEST_FILE).read_text())
    assert data["memory"] == "token-window" and data["side_caches"]["camera"]["capacity"] == 64


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("memory", "view-slots", "keeps its K/V as 'token-window'"),
        ("side_caches", {}, "side_caches is"),
    ],
)
def test_an_edited_manifest_is_refused(stream_export, tmp_path, field, value, match):
    dst = tmp_path / "e"
    shutil.copytree(stream_export[0], dst)
    path = dst / N.MANIFEST_FILE
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(ViewrtError, match=match):
        load_manifest(dst)


def test_graphs_are_plain_attention_opset_18(stream_export):
    m = load_manifest(stream_export[0])
    for g in m.graphs.values():
        model = onnx.load(str(m.dir / g.file))
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) <= 20
        ops = {n.op_type for n in model.graph.node}
        assert "Softmax" in ops and "Attention" not in ops and "MultiHeadAttention" not in ops


def test_position_and_mask_are_live_inputs(stream_export):
    """Same frame and cache: another position or another retained count gives other
    outputs, so neither is baked into the graph."""
    m = load_manifest(stream_export[0])
    sig = m.contract.signatures(m.header, "float32")["step"]
    T, R = m.header["tokens_per_frame"], m.header["special_tokens"]
    sizes = {N.PAST_TOKENS: 3 * T, N.RETAINED_TOKENS: 2 * R, N.CAMERA_TOKENS: 4}
    sess = ort.InferenceSession(str(m.path("step")), providers=["CPUExecutionProvider"])

    def run(position, kept):
        feed = _feeds({"step": sig}, sizes, {N.POSITION: position, N.RETAINED_FRAMES: kept}, 1)
        return sess.run([N.POSE_ENC], feed["step"])[0]

    base = run(5, 2)
    assert np.abs(base - run(5, 2)).max() == 0  # deterministic
    assert np.abs(base - run(9, 2)).max() > 1e-3  # temporal RoPE from the position input
    assert np.abs(base - run(5, 1)).max() > 1e-5  # the retained mask from retained_frames
