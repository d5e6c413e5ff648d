"""Validation right after export: structure, TensorRT 10.3 op support, and numbers.

Structure: the ONNX checker; input/output names, dtypes, static dims and dynamic axes equal
the spec. Numbers: Polygraphy's Comparator runs the ONNX Runtime runner and a PyTorch
(CPU) runner on fresh random inputs at several cache lengths and target counts and checks
every output within an absolute tolerance: 1e-4 for fp32 graphs (images and K/V), 1e-2 for
fp16 images; fp16 K/V are held to 1e-2 times their peak magnitude (at least 1e-2), since
storing a value of 8 in fp16 alone rounds it by up to 0.004.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import torch

import viewrt.contract.names as N
from viewrt.contract.manifest import Manifest
from viewrt.contract.tensors import GraphSignature as GraphSpec
from viewrt.errors import ViewrtError
from viewrt.export.trt_ops import check_trt_compatible

# Lazy: polygraphy (optional), imported where used.

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
}


def check_structure(path: Path, spec: GraphSpec, opset: int) -> None:
    """ONNX checker, spec equality of every graph input/output, TensorRT 10.3 op check.

    Raises: ViewrtError naming the first tensor that differs or the unsupported ops.
    """
    model = onnx.load(str(path), load_external_data=False)
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        raise ViewrtError(f"{path.name}: ONNX checker failed: {str(e).splitlines()[0]}") from None
    for kind, got, want in (
        ("input", model.graph.input, spec.inputs),
        ("output", model.graph.output, spec.outputs),
    ):
        got_names, want_names = [t.name for t in got], [t.name for t in want]
        if got_names != want_names:
            raise ViewrtError(f"{path.name}: {kind}s are {got_names}, expected {want_names}")
        for g, w in zip(got, want):
            dtype = _ONNX_DTYPES.get(
                g.type.tensor_type.elem_type, str(g.type.tensor_type.elem_type)
            )
            shape = tuple(
                d.dim_param if d.dim_param else d.dim_value for d in g.type.tensor_type.shape.dim
            )
            if dtype != w.dtype or shape != tuple(w.shape):
                raise ViewrtError(
                    f"{path.name}: {kind} '{g.name}': got {dtype} {shape}, expected {w.dtype} {tuple(w.shape)}"
                )
    check_trt_compatible(model, opset_range=(opset, opset))


def _torch_runner(fn, output_names: list[str], example_feed: dict):
    """A Polygraphy runner over a PyTorch callable on the CPU (Polygraphy's own
    PytRunner moves inputs to CUDA)."""
    from polygraphy.backend.base import BaseRunner

    class TorchCpuRunner(BaseRunner):
        def __init__(self):
            super().__init__(name="pytorch-cpu", prefix="pytorch-cpu")

        def activate_impl(self):
            pass

        def get_input_metadata_impl(self):
            from polygraphy.common import TensorMetadata

            meta = TensorMetadata()
            for name, value in example_feed.items():
                meta.add(name, value.dtype, tuple(-1 for _ in value.shape))  # any shape
            return meta

        def infer_impl(self, feed_dict):
            start = time.perf_counter()
            with torch.no_grad():
                outs = fn(**{k: torch.from_numpy(v) for k, v in feed_dict.items()})
            self.inference_time = time.perf_counter() - start
            return OrderedDict(
                (n, o.float().contiguous().numpy()) for n, o in zip(output_names, outs)
            )  # Polygraphy needs contiguous arrays

        def deactivate_impl(self):
            pass

    return TorchCpuRunner()


def _random_views(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Posed views with the value ranges of real inputs: rgb in [-1, 1], unit ray
    directions, moments of rays from cameras within the unit ball."""
    rgb = rng.uniform(-1, 1, (n, 3, size, size))
    d = rng.normal(size=(n, 3, size, size))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    o = rng.uniform(-1, 1, (n, 3, 1, 1)) * np.ones_like(d)
    return np.concatenate([rgb, np.cross(o, d, axis=1), d], axis=1).astype(
        np.float32
    )  # [n, 9, S, S]


def _compare(
    runners, feeds: list[dict], atol: float, what: str, scaled: bool = False
) -> tuple[dict[str, float], dict[str, float]]:
    """Run both runners on every feed and check each output within ``atol``, or with
    ``scaled`` within ``atol * max(1, peak |reference|)`` (fp16 K/V, whose scale the
    k_norm weights set).

    Returns: (max abs error per output name over all feeds, tolerance per output name).
    """
    from polygraphy.comparator import Comparator, CompareFunc
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR
    results = Comparator.run(runners, data_loader=feeds)
    (_, ref_iters), (_, ort_iters) = results
    peak: dict[str, float] = {}
    for ref in ref_iters:
        for name in ref.keys():
            a = np.abs(np.asarray(ref[name], np.float64))
            if a.max() == 0:
                raise ViewrtError(
                    f"validation of {what}: reference output '{name}' is all zeros; nothing was compared"
                )
            peak[name] = max(peak.get(name, 0.0), float(a.max()))
    tol = {name: atol * (max(1.0, p) if scaled else 1.0) for name, p in peak.items()}
    passed = bool(
        Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(atol=tol, rtol=0.0))
    )
    errors: dict[str, float] = {}
    for ref, got in zip(ref_iters, ort_iters):
        for name in ref.keys():
            a, b = np.asarray(ref[name], np.float64), np.asarray(got[name], np.float64)
            if not np.isfinite(b).all():
                raise ViewrtError(f"validation of {what}: output '{name}' has non-finite values")
            errors[name] = max(errors.get(name, 0.0), float(np.abs(a - b).max()))
    worst = max(errors, key=lambda n: errors[n] / tol[n])
    if not passed or errors[worst] > tol[worst]:
        raise ViewrtError(
            f"validation of {what} failed: output '{worst}' max abs error {errors[worst]:.3g} > {tol[worst]:.3g} "
            "against PyTorch"
        )
    return errors, tol


def validate_numbers(
    model,
    out_dir: Path,
    manifest: Manifest,
    spec,
    cases: list[tuple[int, int]],
    seed: int | None = None,
) -> dict:
    """Compare ONNX Runtime (CPU) on the exported graphs with the fp32 PyTorch model.

    Args:
        model: the fp32 model the graphs were exported from.
        out_dir: folder holding the graphs named in ``manifest``.
        manifest: the manifest being written (graph files, tensor names, precision).
        spec: the family's export spec (reference functions).
        cases: (cached views, targets) pairs for the decoder.
        seed: random seed; a fresh one is drawn when None (and recorded).
    Returns:
        A record for the manifest: base tolerance ``atol``, the tolerance each output was
        held to (``atol`` x its scale), seed, cases and max abs errors.
    Raises:
        ViewrtError: an output beyond tolerance, non-finite, or a zero reference.
    """
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    seed = secrets.randbits(32) if seed is None else seed
    rng = np.random.default_rng(seed)
    prec = manifest.precision_row
    cfg = model.cfg
    kv_dtype = manifest.np_kv_dtype
    enc, dec = manifest.graphs["encoder"], manifest.graphs["decoder"]
    enc_out = manifest.present_names
    session = lambda name: SessionFromOnnx(str(out_dir / name), providers=["CPUExecutionProvider"])  # noqa: E731

    # Encoder: one fresh view per case, K/V of every layer.
    views = _random_views(rng, max(v for v, _ in cases), cfg.image_size)
    enc_fn = spec.torch_encoder(model)
    enc_feeds = [{N.VIEW: views[i : i + 1]} for i in range(min(3, len(views)))]
    enc_err, enc_tol = _compare(
        [_torch_runner(enc_fn, enc_out, enc_feeds[0]), OnnxrtRunner(session(enc.file))],
        enc_feeds,
        prec.atol_kv,
        "encoder.onnx",
        scaled=prec.kv_atol_scaled,
    )

    # Decoder: K/V of real encoded views (reference numbers), fresh targets per case.
    with torch.no_grad():
        kv_all = enc_fn(torch.from_numpy(views))  # [K0, V0, K1, ...] each [V, T, H, Dh]
    feeds = []
    for n_views, n_targets in cases:
        feed = {N.TARGET_RAYS: _random_views(rng, n_targets, cfg.image_size)[None, :, 3:]}
        for name, t in zip(enc_out, kv_all):  # paired by name: present_key.i -> past_key.i
            feed[N.paired_name(name)] = (
                t[:n_views].reshape(1, -1, *t.shape[2:]).numpy().astype(kv_dtype)
            )
        feeds.append(feed)

    dec_fn = spec.torch_decoder(model, manifest.past_names)
    dec_err, dec_tol = _compare(
        [_torch_runner(dec_fn, [N.IMAGES], feeds[0]), OnnxrtRunner(session(dec.file))],
        feeds,
        prec.atol_images,
        "decoder.onnx",
    )
    return {
        "reference": "PyTorch fp32 (CPU)",
        "backend": "onnxruntime CPUExecutionProvider",
        "atol": prec.atol_images,
        "atol_kv": prec.atol_kv,
        "seed": seed,
        "decoder_cases": [{"views": v, "targets": t} for v, t in cases],
        "max_abs_error": {"encoder_kv": max(enc_err.values()), "images": dec_err[N.IMAGES]},
        "tolerance_rule": "max abs <= atol; "
        + (
            "K/V: <= atol_kv x max(1, peak |reference|)"
            if prec.kv_atol_scaled
            else "K/V: <= atol_kv"
        ),
        "tolerance": {**enc_tol, **dec_tol},
    }
