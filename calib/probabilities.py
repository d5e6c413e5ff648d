"""How much of the decoder's attention an int8 P would lose, by cached views.

``python -m viewrt.calib.probabilities FP32_EXPORT INT8_EXPORT [--views 4,16,64]``: on one
held-out synthetic scene (seed 1000), the fp32 decoder's cross-attention probabilities P
(every Softmax over the cached tokens, as extra graph outputs) for one target, and for each
the per-tensor scale the int8 export gave P (its QuantizeLinear after that Softmax, if any).
Prints, per layer and N, the share of each row's probability mass below half a step (what
QuantizeLinear rounds to 0), averaged over rows. This is the evidence behind keeping the
decoder's P·V in float (docs/calib.md, "Long caches").
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

import viewrt.runtime as vrt
from viewrt.data import load_frame, load_scene, load_scene_list, make_synthetic_list
from viewrt.geometry import NormalizationFrame, plucker


def _p_scales(int8_dir: Path) -> dict[str, float]:
    """``{tensor: per-tensor scale}`` of every QuantizeLinear of the int8 decoder."""
    m = onnx.load(str(Path(int8_dir) / "decoder.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {
        n.input[0]: float(inits[n.input[1]])
        for n in m.graph.node
        if n.op_type == "QuantizeLinear" and inits.get(n.input[1], np.zeros(2)).size == 1
    }


def lost_mass(fp32_dir, int8_dir, views=(4, 16, 64)) -> list[dict]:
    """Rows ``{"views", "softmax", "keys", "scale", "lost"}`` (see the module docstring)."""
    import onnxruntime as ort

    scales = _p_scales(int8_dir)
    m = onnx.load(str(Path(fp32_dir) / "decoder.onnx"))
    soft = [n.output[0] for n in m.graph.node if n.op_type == "Softmax"]
    m.graph.output.extend(
        onnx.helper.make_tensor_value_info(s, onnx.TensorProto.FLOAT, None) for s in soft
    )
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    top = max(views)
    rows = []
    with vrt.open(fp32_dir, "ort") as r, tempfile.TemporaryDirectory() as work:
        M, S, T = r.manifest, r.size, r.manifest.tokens_per_view
        lst = make_synthetic_list(Path(work), 1, n_views=top + 2, size=S, seed=1000, prefix="p")
        frames = [load_frame(f, S) for f in load_scene(load_scene_list(lst)[0]).frames]
        r.frame = NormalizationFrame.from_cameras(np.stack([c for _, _, c in frames]))
        for image, k, c2w in frames[:top]:
            r.add_view(image, vrt.Camera(c2w, k))
        rays = plucker(r.frame.apply(frames[-1][2]), frames[-1][1], S, S)[None, None]
        for n in views:
            idx = np.linspace(0, top - 1, n).round().astype(int)
            feeds = {M.target_input: rays.astype(np.float32)}
            for name, buf in zip(M.past_names, r.cache.buffers):
                x = buf.host[:, : top * T].reshape(1, top, T, *buf.host.shape[2:])[:, idx]
                feeds[name] = np.ascontiguousarray(x.reshape(1, n * T, *buf.host.shape[2:]))
            for s, p in zip(soft, sess.run(soft, feeds)):
                if p.shape[-1] != n * T or s not in scales:
                    continue  # cross-attention softmaxes whose P the int8 export quantized
                lost = float((p * (p < scales[s] / 2)).sum(-1).mean())
                rows.append(
                    {"views": n, "softmax": s, "keys": n * T, "scale": scales[s], "lost": lost}
                )
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fp32_export")
    ap.add_argument("int8_export")
    ap.add_argument("--views", default="4,16,64")
    a = ap.parse_args()
    for row in lost_mass(a.fp32_export, a.int8_export, tuple(int(v) for v in a.views.split(","))):
        print(
            f"N={row['views']:3d} {row['softmax']:12s} keys {row['keys']:6d} scale {row['scale']:.2e} "
            f"(P_max {row['scale'] * 127:.4f}): mass rounded to 0 {row['lost']:.3f}"
        )
