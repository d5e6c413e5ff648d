"""An 8-bit K/V cache: scales calibrated from the cache contents, Q/DQ at the cache boundary.

The encoder (the cache's writer) ends each ``present_*`` output with a QuantizeLinear, so the
graph output, and with it the runtime's cache buffer, is int8; the decoder (the reader)
starts each ``past_*`` input with a DequantizeLinear, so everything after it is what the
graph computed before. The same scale and zero point initializers sit in both graphs and are
recorded in the manifest (``quantization.kv_cache``).

Granularity: one scale per (layer, K or V, head): a 1-D scale of ``heads`` values on the
head axis (axis 2 of ``[1, tokens, heads, head_dim]``), zero point 0. Per head because the
heads of one layer differ in range (k_norm's gain and to_kv's rows are per channel), and the
scale must hold for every token the cache will ever hold, so it cannot depend on the token
axis (a per-token scale would be a runtime-computed, dynamic Q/DQ, which TensorRT refuses).

Method: absmax (``amax / 127``) over every cached token of the calibration scenes. Why not a
percentile: an int8 cache element is stored once and read by every later render; a K that is
clipped changes the attention logits of exactly the token that stands out, and a clipped V
changes what that token contributes. With per-head scales the rounding step is already
``amax_head / 127`` (at most 0.4% of the head's range), so clipping buys little. The K/V come
out of LayerNorm, to_kv and k_norm, so their range is bounded by the weights, not by the
scene: a scale from a few scenes holds for others (the report's K/V error says how well).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import viewrt.contract.names as N
from viewrt.errors import ViewrtError

HEAD_AXIS = 2  # [1, tokens, heads, head_dim]


@dataclass(frozen=True)
class KVFormat:
    """One 8-bit cache type: ``name`` (the ``--kv`` value), ``onnx_type``, ``np_dtype`` (the
    manifest's kv_dtype), ``qmax`` (largest magnitude the type holds)."""

    name: str
    onnx_type: int
    np_dtype: str
    qmax: float


KV_FORMATS = {
    "int8": KVFormat("int8", TensorProto.INT8, "int8", 127.0),
}


def kv_format(name: str) -> KVFormat:
    """The row of ``--kv NAME``; ViewrtError for an unknown one (fp8: see docs/calib.md)."""
    if name == "fp8":
        raise ViewrtError(
            "--kv fp8: no CPU backend of this runtime binds a float8 cache (ONNX Runtime's Python "
            "binding refuses float8 buffers: 'Numpy_type 259 can't be converted to MLDataType'); "
            "use --kv int8"
        )
    if name not in KV_FORMATS:
        raise ViewrtError(
            f"--kv: unknown cache type {name!r}; expected one of {', '.join(KV_FORMATS)}"
        )
    return KV_FORMATS[name]


def kv_scales(samples: list[dict], past_names: list[str], fmt: KVFormat) -> dict[str, np.ndarray]:
    """Per-head absmax scales of each cache tensor over the calibration samples.

    Args:
        samples: decoder feeds holding ``past_*`` float32 ``[1, tokens, heads, head_dim]``.
        past_names: the reader's cache inputs (``past_key.0`` ...).
        fmt: the cache type (its ``qmax``).
    Returns: ``{past name: float32 [heads]}``, ``amax / qmax`` (a floor of 1e-8 / qmax for a
        head that is all zeros, so every scale is positive).
    Raises: ViewrtError when no sample holds a cache tensor.
    """
    out = {}
    for name in past_names:
        amax = [np.abs(s[name]).max(axis=(0, 1, 3)) for s in samples if name in s]
        if not amax:
            raise ViewrtError(f"no calibration sample holds '{name}'")
        out[name] = (np.maximum(np.max(amax, axis=0), 1e-8) / fmt.qmax).astype(np.float32)
    return out


def quantize_kv(x: np.ndarray, scale: np.ndarray, fmt: KVFormat) -> np.ndarray:
    """QuantizeLinear of a ``[1, tokens, heads, head_dim]`` float tensor with a per-head
    scale (round half to even, saturate), as the graphs do."""
    q = np.rint(x / scale[None, None, :, None])
    return np.clip(q, -fmt.qmax - 1, fmt.qmax).astype(fmt.np_dtype)


def dequantize_kv(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """DequantizeLinear of a cache tensor: float32 ``q * scale`` per head."""
    return q.astype(np.float32) * scale[None, None, :, None]


def fake_quantize_feeds(
    feeds: list[dict], scales: dict[str, np.ndarray], fmt: KVFormat
) -> list[dict]:
    """The decoder feeds with every ``past_*`` rounded through the cache type, so that the
    decoder's own calibration sees the K/V it will read."""
    return [
        {
            k: dequantize_kv(quantize_kv(v, scales[k], fmt), scales[k]) if k in scales else v
            for k, v in f.items()
        }
        for f in feeds
    ]


def _scale_inits(tensor: str, scale: np.ndarray, fmt: KVFormat) -> tuple[str, str, list]:
    s, z = f"{tensor}.kv_scale", f"{tensor}.kv_zero_point"
    zp = helper.make_tensor(z, fmt.onnx_type, [scale.size], [0] * scale.size)
    return s, z, [numpy_helper.from_array(scale.astype(np.float32), s), zp]


def add_kv_qdq(
    writer: onnx.ModelProto, reader: onnx.ModelProto, scales: dict, fmt: KVFormat
) -> None:
    """Put the cache's Q/DQ into the two graphs, in place.

    Writer: each ``present_*`` output is now a QuantizeLinear (axis 2, the per-head scale,
    zero point 0) of what the graph computed (renamed ``<name>.float``); the output's type
    becomes the cache type. Reader: each ``past_*`` input is of the cache type and feeds only
    a DequantizeLinear (same scale and zero point), whose output replaces it everywhere.

    Args:
        writer, reader: the encoder and decoder ModelProtos (edited in place).
        scales: ``{past name: float32 [heads]}`` from :func:`kv_scales`.
        fmt: the cache type.
    Raises: ViewrtError when a scale has no matching graph tensor.
    """
    outputs = {o.name: o for o in writer.graph.output}
    inputs = {i.name: i for i in reader.graph.input}
    dq_nodes = []
    for past, scale in scales.items():
        present = N.kv_name("present", *N.parse_kv_name(past)[1:])
        if present not in outputs or past not in inputs:
            raise ViewrtError(f"cache tensor {present}/{past}: not in the encoder/decoder graphs")
        # writer: rename the float result, quantize it into the graph output
        inner = f"{present}.float"
        for n in writer.graph.node:
            n.output[:] = [inner if o == present else o for o in n.output]
            n.input[:] = [inner if i == present else i for i in n.input]
        s, z, inits = _scale_inits(present, scale, fmt)
        writer.graph.initializer.extend(inits)
        writer.graph.node.append(
            helper.make_node(
                "QuantizeLinear",
                [inner, s, z],
                [present],
                name=f"{present}.kv_quantize",
                axis=HEAD_AXIS,
            )
        )
        outputs[present].type.tensor_type.elem_type = fmt.onnx_type
        # reader: dequantize the cache input right where the graph starts
        deq = f"{past}.dequantized"
        for n in reader.graph.node:
            n.input[:] = [deq if i == past else i for i in n.input]
        s, z, inits = _scale_inits(past, scale, fmt)
        reader.graph.initializer.extend(inits)
        dq_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [past, s, z],
                [deq],
                name=f"{past}.kv_dequantize",
                axis=HEAD_AXIS,
            )
        )
        inputs[past].type.tensor_type.elem_type = fmt.onnx_type
    nodes = dq_nodes + list(reader.graph.node)  # topological order: the DQ first
    del reader.graph.node[:]
    reader.graph.node.extend(nodes)


def kv_record(scales: dict[str, np.ndarray], fmt: KVFormat, calibration: dict) -> dict:
    """The manifest's ``quantization.kv_cache`` entry: type, granularity, method, and the
    scales per cache tensor (by the writer's ``present_*`` name; the reader's ``past_*``
    DequantizeLinear holds the same values)."""
    return {
        "dtype": fmt.np_dtype,
        "format": "QDQ at the cache boundary (Q at present_* outputs, DQ at past_* inputs)",
        "symmetric": True,
        "granularity": "per (layer, K/V, head): axis 2 of [1, tokens, heads, head_dim]",
        "method": f"absmax over every cached token of the calibration scenes, scale = amax / {fmt.qmax:g}",
        "scales_in_graphs": True,
        "scales": {
            N.kv_name("present", *N.parse_kv_name(k)[1:]): [float(v) for v in s]
            for k, s in scales.items()
        },
        "calibration": calibration,
    }


def kv_scales_of(manifest) -> dict[str, np.ndarray] | None:
    """``{present name: float32 [heads]}`` of a manifest with an 8-bit cache, else None."""
    rec = (manifest.quantization or {}).get("kv_cache")
    if not rec:
        return None
    return {k: np.asarray(v, np.float32) for k, v in rec["scales"].items()}


def cached_kv(renderer, tokens: int) -> list[np.ndarray]:
    """The first ``tokens`` of every cache buffer of a renderer on the CPU, as float32 (an
    8-bit cache dequantized with its manifest's scales), in the writer's output order."""
    scales = kv_scales_of(renderer.manifest)
    out = []
    for name, buf in zip(renderer.manifest.present_names, renderer.cache.buffers):
        x = buf.host[:, :tokens]
        out.append(dequantize_kv(x, scales[name]) if scales else np.asarray(x, np.float32))
    return out
