"""Explicit INT8/FP8 quantization of an fp32 export into a new export folder.

The quantizer is ONNX Runtime's ``quantize_static`` in QDQ format, set up for TensorRT's
explicit-quantization rules (see qdq_check.py): symmetric activations and weights (zero
points 0), int8 or float8e4m3fn, per-channel weights, per-tensor activations, Q/DQ on the
inputs of MatMul/Gemm only (``OpTypesToExcludeOutputQuantization`` keeps their outputs in
float), optionally the attention matmuls too. Why ONNX Runtime's tools and not NVIDIA
ModelOpt or NNCF: onnxruntime is already the runtime's one dependency, its quantizer writes
plain ONNX Q/DQ that TensorRT, OpenVINO and ONNX Runtime all read, and it has float8e4m3fn;
ModelOpt's ONNX extra pins onnxruntime-gpu, which cannot be installed next to the plain
onnxruntime wheel; NNCF's ONNX path writes asymmetric int8 by default and has no FP8.

FP8: ONNX Runtime calibrates float8 only with its "distribution" method, which sets each
scale from the tensor's standard deviation (a Gaussian fit that clips outliers). The default
fp8 method here is "minmax": amax / 448 from ONNX Runtime's MinMax calibrator, handed to
``quantize_static`` as ``TensorQuantOverrides``. Float8 Q/DQ need opset 19, so FP8 graphs
are opset 19 (int8 graphs keep the export's opset 18).

The output folder is a complete export: encoder.onnx, decoder.onnx and a manifest copied
from the fp32 one, with precision, files, checksums and validation replaced and a
``quantization`` record added (:func:`quantization_record`). Without ``kv`` the K/V stay
float32 at the graph boundary (the cache does not shrink); the Q/DQ sit inside the graphs.
With ``kv="int8"`` (kv_cache.py) the cache itself is int8: a QuantizeLinear ends each
encoder K/V output and a DequantizeLinear starts each decoder K/V input, with per-head
scales calibrated on the same scenes; the manifest's ``kv_dtype`` is ``int8``. It combines
with int8 or fp8 matmuls, or stands alone on the fp32 graphs (``precision="fp32"``).
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

import viewrt.runtime as vrt
from viewrt.calib.data import FeedReader, collect, scene_paths
from viewrt.calib.kv_cache import (
    add_kv_qdq,
    cached_kv,
    fake_quantize_feeds,
    kv_format,
    kv_record,
    kv_scales,
)
from viewrt.checksum import sha256_file
from viewrt.contract.manifest import load_manifest
from viewrt.data import synthetic_cameras
from viewrt.errors import ViewrtError
from viewrt.export.qdq_check import check_qdq
from viewrt.metrics import psnr

# Lazy: onnxruntime and onnxruntime.quantization (heavy), ml_dtypes (fp8 only), imported where used.

PRECISIONS = {"int8": "QInt8", "fp8": "QFLOAT8E4M3FN"}
METHODS = {
    "minmax": "MinMax",
    "entropy": "Entropy",
    "percentile": "Percentile",
    "distribution": "Distribution",
}
DEFAULT_METHOD = {"int8": "minmax", "fp8": "minmax"}
# Images vs the fp32 export on held-out validation inputs (random weights or trained):
# PSNR in dB must be at least this. Loose on purpose: the accuracy report holds the real numbers.
MIN_PSNR_VS_FP32 = {"int8": 25.0, "fp8": 20.0, "fp32": 25.0}  # fp32: matmuls kept, int8 cache


def matmul_nodes(onnx_path: Path) -> list[dict]:
    """MatMul/Gemm nodes of a graph with the module they come from.

    Returns: ``[{"node", "module", "attention", "probabilities"}]`` where ``module`` is the
    PyTorch module path the exporter recorded (``self_cross_blocks.0.cross_attn.to_q``;
    attention matmuls name their attention module), ``attention`` is True when both inputs
    are activations (scores and weighted sum) and ``probabilities`` when the first input is
    a Softmax's output (the weighted sum P·V).
    """
    m = onnx.load(str(onnx_path), load_external_data=False)
    consts = {i.name for i in m.graph.initializer}
    softmax_out = {o for n in m.graph.node if n.op_type == "Softmax" for o in n.output}
    out = []
    for n in m.graph.node:
        if n.op_type not in ("MatMul", "Gemm"):
            continue
        md = {p.key: p.value for p in n.metadata_props}
        scopes = md.get("pkg.torch.onnx.name_scopes", "")
        try:
            parts = [s for s in eval_list(scopes) if s]
        except ValueError:
            parts = []
        # the last scope is the op itself (linear_3, matmul_2); the one before is the module
        module = parts[-2] if len(parts) >= 2 else n.name
        module = module[len("model.") :] if module.startswith("model.") else module
        attention = not any(i in consts for i in n.input)
        out.append(
            {
                "node": n.name,
                "module": module,
                "attention": attention,
                "probabilities": attention and n.input[0] in softmax_out,
            }
        )
    return out


def eval_list(text: str) -> list[str]:
    """Parse the exporter's name-scope metadata (a Python list literal of strings)."""
    if not text:
        return []
    value = ast.literal_eval(text)
    if not isinstance(value, list):
        raise ValueError("not a list")
    return [str(v) for v in value]


def _matches(module: str, node: str, patterns: list[str]) -> bool:
    return any(node == p or module == p or module.startswith(p + ".") for p in patterns)


def select_nodes(
    nodes: list[dict], exclude: list[str], attention: bool, probabilities: bool = True
) -> tuple[list[str], list[str]]:
    """(quantized node names, excluded node names) of one graph.

    A pattern excludes a node by its name, its module path, or a module prefix on a dot
    boundary (``self_cross_blocks.3`` excludes every matmul of decoder block 3).
    ``probabilities=False`` keeps the P·V matmuls (a Softmax's output times V) in float.
    """
    quant, excl = [], []
    for n in nodes:
        if (
            (n["attention"] and not attention)
            or (n.get("probabilities") and not probabilities)
            or _matches(n["module"], n["node"], exclude)
        ):
            excl.append(n["node"])
        else:
            quant.append(n["node"])
    return quant, excl


def quantize_graph(
    src: Path, dst: Path, feeds: list[dict], precision: str, method: str, exclude_nodes: list[str]
) -> None:
    """ONNX Runtime static QDQ quantization of one graph (see the module docstring)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    qtype = getattr(QuantType, PRECISIONS[precision])
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's "consider pre-processing" notes
    kwargs = (
        {"calibration_providers": ["CPUExecutionProvider"]} if _has_calibration_providers() else {}
    )
    calibrate = getattr(CalibrationMethod, METHODS[method])
    overrides = {}
    if precision == "fp8" and method == "minmax":
        # ONNX Runtime sets float8 scales from the standard deviation (a Gaussian fit that
        # clips outliers) and calibrates float8 only with "distribution"; here the scales are
        # amax / 448 from its MinMax calibrator, given to quantize_static as overrides (its
        # own distribution pass then sees one sample and is not used).
        overrides = _fp8_minmax_overrides(src, feeds, dst.parent.parent)
        feeds, calibrate = feeds[:1], CalibrationMethod.Distribution
    try:
        with (
            open(os.devnull, "w") as null,
            contextlib.redirect_stdout(null),
        ):  # its calibration progress prints
            quantize_static(
                str(src),
                str(dst),
                FeedReader(feeds),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul", "Gemm"],
                per_channel=True,
                reduce_range=False,
                activation_type=qtype,
                weight_type=qtype,
                nodes_to_exclude=exclude_nodes,
                calibrate_method=calibrate,
                extra_options={
                    "ActivationSymmetric": True,
                    "WeightSymmetric": True,
                    "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"],
                    "CalibTensorRangeSymmetric": True,
                    # one sample per collect call, merged into the running ranges/histograms:
                    # bounded memory, and the decoder's past-token axis differs between samples
                    # (the histogram methods cannot stack outputs of different shapes)
                    "CalibStridedMinMax": 1,
                    **({"TensorQuantOverrides": overrides} if overrides else {}),
                },
                **kwargs,
            )
    finally:
        root.setLevel(level)


FP8_E4M3_MAX = 448.0


def _fp8_minmax_overrides(src: Path, feeds: list[dict], workdir: Path) -> dict:
    """{tensor: [{"scale": amax / 448, "zero_point": 0 (float8)}]} for every MatMul/Gemm
    input, amax from ONNX Runtime's MinMax calibrator over the feeds."""
    import ml_dtypes
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    # the calibrator's augmented copy of the graph goes to a folder of its own, removed after
    # (not next to the quantized graphs, which become the export)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="minmax-") as scratch:
        cal = create_calibrator(
            src,
            ["MatMul", "Gemm"],
            augmented_model_path=str(Path(scratch) / f"{src.stem}.minmax.onnx"),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"symmetric": True},
        )
        for f in feeds:  # one at a time: the past-token axis differs between samples
            cal.collect_data(FeedReader([f]))
        ranges = cal.compute_data()
        del cal  # its inference session holds the augmented file open
    out = {}
    for name, td in ranges.items():
        lo, hi = td.range_value
        amax = max(float(np.abs(lo).max()), float(np.abs(hi).max()), 1e-12)
        out[name] = [
            {
                "scale": np.array(amax / FP8_E4M3_MAX, np.float32),
                "zero_point": np.array(0, ml_dtypes.float8_e4m3fn),
            }
        ]
    return out


def _has_calibration_providers() -> bool:
    from onnxruntime.quantization import quantize_static

    return "calibration_providers" in inspect.signature(quantize_static).parameters


def quantized_tensors(onnx_path: Path) -> dict:
    """Which tensors carry Q/DQ: ``{"activations": [...], "weights": [...]}`` (names)."""
    m = onnx.load(str(onnx_path), load_external_data=False)
    consts = {i.name for i in m.graph.initializer}
    acts = sorted(n.input[0] for n in m.graph.node if n.op_type == "QuantizeLinear")
    weights = sorted(
        n.input[0].removesuffix("_quantized")
        for n in m.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in consts
    )
    return {"activations": acts, "weights": weights}


def quantization_record(
    precision: str,
    method: str | None,
    calibration: dict,
    source: dict,
    graphs: dict,
    versions: dict,
    kv_cache: dict | None = None,
) -> dict:
    """The manifest's ``quantization`` entry (the one place its keys are written).

    Args:
        precision: "int8" or "fp8" matmuls, or "fp32" (matmuls kept, an 8-bit cache only).
        method: calibration method.
        calibration: where the samples came from and how many (CalibrationSet.record plus
            the scene source).
        source: the fp32 export it came from (``dir``, ``weights_sha256``).
        graphs: per graph: quantized and excluded matmul nodes, quantized tensors.
        versions: tool versions (onnxruntime).
        kv_cache: the 8-bit cache's record (:func:`viewrt.calib.kv_cache.kv_record`), or None
            (the cache stays float32).
    """
    qtype = {"int8": "int8", "fp8": "float8e4m3fn", "fp32": None}[precision]
    rec = {
        "precision": precision,
        "type": qtype,
        "format": "QDQ",
        "symmetric": True,
        "weights": "per-channel (output channel)",
        "activations": "per-tensor",
        "op_types": ["MatMul", "Gemm"],
        "method": method or "none (matmuls fp32)",
        "calibration": calibration,
        "tool": f"onnxruntime.quantization.quantize_static {versions.get('onnxruntime', '?')}",
        "source_export": source,
        "graphs": graphs,
    }
    if precision == "fp32":
        rec.update(weights="fp32 (not quantized)", activations="fp32 (not quantized)", op_types=[])
    if kv_cache:
        rec["kv_cache"] = kv_cache
    return rec


def _check_source(export_dir: Path):
    m = load_manifest(export_dir)
    prec = m.precision
    if prec != "fp32":
        raise ViewrtError(
            f"{export_dir}: a {prec} export; calibration starts from an fp32 export (viewrt export --precision fp32)"
        )
    if m.quantization:
        raise ViewrtError(f"{export_dir}: already quantized")
    return m


def validate_quantized(fp32_dir: Path, q_dir: Path, precision: str, seed: int = 0) -> dict:
    """Compare the quantized export with the fp32 one through the runtime on random
    held-out inputs: encoder K/V relative error and images PSNR vs fp32.

    Returns: ``{"psnr_vs_fp32_db", "min_psnr_db", "kv_rel_error_max", "images_max_abs", "cases"}``.
    Raises: ViewrtError when PSNR is below MIN_PSNR_VS_FP32[precision].
    """
    rng = np.random.default_rng(seed + 12345)
    worst, kv_err, max_abs = np.inf, 0.0, 0.0
    with vrt.open(fp32_dir, "ort") as f, vrt.open(q_dir, "ort") as q:
        size = f.size
        n_views = min(4, f.max_views)
        c2ws, fx = synthetic_cameras(n_views + 2, size, seed=seed + 777)
        frame = vrt.NormalizationFrame.from_cameras(c2ws)
        for r in (f, q):
            r.frame = frame
        for i in range(n_views):
            img = rng.random((3, size, size)).astype(np.float32)
            for r in (f, q):
                r.add_view(img, vrt.Camera(c2ws[i], fx))
        T = f.manifest.tokens_per_view
        for a, b in zip(cached_kv(f, n_views * T), cached_kv(q, n_views * T)):
            kv_err = max(kv_err, float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12)))
        targets = [vrt.Camera(c, fx) for c in c2ws[n_views:]]
        a, b = f.render(targets), q.render(targets)
        worst = min(psnr(y, x) for x, y in zip(a, b))
        max_abs = float(np.abs(a - b).max())
    res = {
        "psnr_vs_fp32_db": round(float(worst), 2),
        "min_psnr_db": MIN_PSNR_VS_FP32[precision],
        "kv_rel_error_max": round(kv_err, 5),
        "images_max_abs": round(max_abs, 5),
        "cases": f"{n_views} random views, 2 targets, seed {seed}",
    }
    if not worst >= MIN_PSNR_VS_FP32[precision]:
        raise ViewrtError(
            f"quantized export fails validation: images {worst:.1f} dB PSNR vs fp32, below {MIN_PSNR_VS_FP32[precision]} dB "
            f"for {precision}; exclude sensitive layers (--exclude) or calibrate on more scenes"
        )
    return res


def quantize_export(
    export_dir: str | Path,
    out_dir: str | Path,
    precision: str,
    scenes: str | Path | None = None,
    synthetic: int | None = None,
    method: str | None = None,
    exclude: list[str] | tuple = (),
    attention: bool = True,
    targets: int = 4,
    max_samples: int = 256,
    seed: int = 0,
    progress: bool = False,
    kv: str | None = None,
):
    """Calibrate and quantize an fp32 export into a new export folder.

    Args:
        export_dir: an fp32 export (encoder.onnx, decoder.onnx, manifest.json).
        out_dir: the new export folder; must not exist or be empty.
        precision: "int8" or "fp8" (float8e4m3fn) matmuls, or "fp32" (matmuls kept; only
            with ``kv``).
        scenes: a scene list file (viewrt.data format), or
        synthetic: the number of synthetic scenes to generate instead.
        method: "minmax" (default), "entropy", "percentile" (int8) or "distribution";
            fp8 takes minmax (scales amax / 448) or distribution (ONNX Runtime's own).
        exclude: module paths, prefixes or node names whose matmuls stay fp32 (e.g.
            ``self_cross_blocks.0``, ``image_token_decoder``, ``node_linear_3``).
        attention: quantize the attention matmuls (Q·K^T and P·V) too.
        targets: target views per decoder calibration sample.
        max_samples: cap on calibration samples per graph.
        seed: seed of synthetic scenes and validation inputs.
        progress: progress bars (only on a terminal).
        kv: "int8": an 8-bit K/V cache (kv_cache.py); None: the cache stays float32.
    Returns: the manifest written.
    Raises:
        ViewrtError: unknown precision, method or cache type, fp32 without ``kv``, a missing
            or non-fp32 export, no scenes, an output folder that holds files, or failed
            validation; nothing is written then.
    """
    fmt, method = _check_kv_method(precision, method, kv)
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    src = _check_source(export_dir)
    _check_out(export_dir, out_dir)
    exclude = [e.strip() for e in exclude if e and e.strip()]

    work = Path(tempfile.mkdtemp(prefix="viewrt-calib-"))
    created = not out_dir.exists()
    done = False
    try:
        # synthetic scenes long enough for the decoder samples to reach the largest cache
        n_views = max(12, src.max_views + targets)
        paths, desc = scene_paths(scenes, synthetic, src.image_size, work / "scenes", seed, n_views)
        nodes = {g: matmul_nodes(src.path(g)) for g in src.graphs}
        _check_exclude(nodes, exclude)
        cs = collect(export_dir, paths, targets=targets, max_samples=max_samples, progress=progress)
        if not cs.encoder or not cs.decoder:
            raise ViewrtError(
                "no calibration samples came from the scenes (each needs at least 2 frames)"
            )
        tmp = work / "out"
        tmp.mkdir()
        calibration = {"source": desc, **cs.record}
        scales = kv_scales(cs.decoder, src.past_names, fmt) if fmt else None
        feeds = _calibration_feeds(src, cs, scales, fmt, precision)
        graph_rec = {
            g: _quantize_one(src, g, nodes[g], feeds[g], tmp, precision, method, exclude, attention)
            for g in src.graphs
        }
        if fmt:
            _add_kv_cache(src, tmp, scales, fmt, precision)
        kv_rec = kv_record(scales, fmt, calibration) if fmt else None
        args = (precision, method, calibration, graph_rec, kv_rec)
        manifest = _quantized_manifest(src, export_dir, tmp, *args)
        manifest.write(tmp)
        manifest.validation = {
            "vs": "fp32 export, ONNX Runtime CPU",
            **validate_quantized(export_dir, tmp, precision, seed),
        }
        manifest.write(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(tmp.iterdir()):
            shutil.move(str(f), out_dir / f.name)
        done = True
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if created and not done and out_dir.exists():
            shutil.rmtree(out_dir, ignore_errors=True)


def _check_kv_method(precision: str, method: str | None, kv: str | None):
    """``(cache format or None, method or None)``; ViewrtError for an unknown cache type or
    method, and for fp32 matmuls without an 8-bit cache (nothing to do)."""
    fmt = kv_format(kv) if kv is not None else None
    if precision == "fp32" and fmt is None:
        raise ViewrtError(
            "--precision fp32 keeps every matmul: give --kv int8 (an 8-bit cache) or choose int8/fp8"
        )
    return fmt, (_check_method(precision, method) if precision != "fp32" else None)


def _calibration_feeds(src, cs, scales, fmt, precision: str) -> dict:
    """``{graph: feeds}``: the cache's writer is fed posed views, its reader the cached K/V
    (rounded through the 8-bit cache when there is one: the decoder is calibrated on what it
    will read; fp32 matmuls need no decoder calibration) and target rays."""
    reader = cs.decoder
    if fmt and precision != "fp32":
        reader = fake_quantize_feeds(cs.decoder, scales, fmt)
    return {src.cache.writer: cs.encoder, src.cache.reader: reader}


def _add_kv_cache(src, tmp: Path, scales: dict, fmt, precision: str) -> None:
    """Put the 8-bit cache's Q/DQ into the writer and reader graphs in ``tmp`` and check
    both graphs against TensorRT's rules again."""
    geo = src.cache
    paths = {g: tmp / src.graphs[g].file for g in (geo.writer, geo.reader)}
    models = {g: onnx.load(str(p)) for g, p in paths.items()}
    add_kv_qdq(models[geo.writer], models[geo.reader], scales, fmt)
    for g, p in paths.items():
        onnx.save(models[g], str(p))
        check_qdq(p, f"{g} ({precision}, {fmt.name} K/V cache)")


def _check_method(precision: str, method: str | None) -> str:
    """The calibration method for ``precision`` (its default for None); ViewrtError for an
    unknown precision or method, or a method fp8 does not take."""
    if precision not in PRECISIONS:
        raise ViewrtError(
            f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
        )
    method = method or DEFAULT_METHOD[precision]
    if method not in METHODS:
        raise ViewrtError(
            f"unknown calibration method {method!r}; expected one of {', '.join(METHODS)}"
        )
    if precision == "fp8" and method not in ("minmax", "distribution"):
        raise ViewrtError(f"fp8: calibration --method minmax or distribution, got {method!r}")
    return method


def _check_out(export_dir: Path, out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ViewrtError(f"output {out_dir} exists and is not an empty folder; choose a new --out")
    if out_dir.resolve() == export_dir.resolve():
        raise ViewrtError("--out must differ from the export folder")


def _check_exclude(nodes: dict[str, list[dict]], exclude: list[str]) -> None:
    """ViewrtError naming the ``--exclude`` patterns that match no matmul's module or node."""
    known = {n["module"] for g in nodes for n in nodes[g]} | {
        n["node"] for g in nodes for n in nodes[g]
    }
    unknown = [p for p in exclude if not any(k == p or k.startswith(p + ".") for k in known)]
    if unknown:
        raise ViewrtError(
            f"--exclude: no matmul in module or node {', '.join(unknown)}; "
            f"modules are e.g. {', '.join(sorted({n['module'] for g in nodes for n in nodes[g]})[:4])}"
        )


def _quantize_one(
    src,
    g: str,
    nodes: list[dict],
    feeds: list[dict],
    tmp: Path,
    precision,
    method,
    exclude,
    attention,
) -> dict:
    """Quantize graph ``g`` of the source export into ``tmp`` and check its Q/DQ; returns
    its manifest record (quantized and excluded nodes, quantized tensors)."""
    if precision == "fp32":  # matmuls kept: the graph as exported (an 8-bit cache goes in next)
        shutil.copyfile(src.path(g), tmp / src.graphs[g].file)
        return {
            "quantized_nodes": [],
            "excluded_nodes": [],
            "tensors": {"activations": [], "weights": []},
        }
    # The reader's attention probabilities stay float: a row of P spreads over every cached
    # token (and target), so at a long cache most of its mass is in probabilities far below
    # the largest one, which sets a per-tensor int8 scale; they round to 0 (docs/calib.md,
    # "Long caches"). The writer's attention has a fixed length (one view's tokens).
    probabilities = g != src.cache.reader
    quant, excl = select_nodes(nodes, exclude, attention, probabilities)
    if not quant:
        raise ViewrtError(f"{g}: --exclude leaves no matmul to quantize")
    dst = tmp / src.graphs[g].file
    quantize_graph(src.path(g), dst, feeds, precision, method, excl)
    check_qdq(dst, f"{g} ({precision})")
    return {
        "quantized_nodes": quant,
        "excluded_nodes": excl,
        "float_probabilities": [
            n["node"] for n in nodes if n["probabilities"] and not probabilities
        ],
        "tensors": quantized_tensors(dst),
    }


def _graph_infos(src, files: dict, kv_dtype: str) -> dict:
    """The graphs' records with new checksums; the tensor lists from the family's
    signatures when the cache dtype changes (the K/V inputs and outputs are then 8-bit)."""
    sigs = src.contract.signatures(src.header, kv_dtype) if kv_dtype != src.kv_dtype else None
    out = {}
    for g, info in src.graphs.items():
        sha = files[info.file]["sha256"]
        out[g] = sigs[g].graph_info(info.file, sha) if sigs else replace(info, sha256=sha)
    return out


def _quantized_manifest(
    src,
    export_dir: Path,
    tmp: Path,
    precision: str,
    method: str | None,
    calibration: dict,
    graph_rec,
    kv: dict | None = None,
):
    """The source manifest with the quantized graphs in ``tmp``: files and checksums,
    opset, versions, kv_dtype (the 8-bit cache's, from ``kv``, the :func:`kv_record`) and
    the quantization record (the contract's one writer), bounded and checked again; not yet
    written, not yet validated."""
    import onnxruntime

    files = {}
    for g in src.graphs:
        f = tmp / src.graphs[g].file
        files[f.name] = {"sha256": sha256_file(f), "size_bytes": f.stat().st_size}
    opset = max(
        o.version
        for info in src.graphs.values()
        for o in onnx.load(str(tmp / info.file), load_external_data=False).opset_import
        if o.domain in ("", "ai.onnx")
    )
    versions = {
        **(src.versions or {}),
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
    }
    quant = quantization_record(
        precision,
        method,
        calibration,
        {"dir": str(export_dir.resolve()), "weights_sha256": src.weights_sha256},
        graph_rec,
        versions,
        kv,
    )
    manifest = replace(
        src,
        precision=precision,
        kv_dtype=kv["dtype"] if kv else src.kv_dtype,
        opset=opset,
        versions=versions,
        quantization=quant,
        engines=None,
        variants=None,
        files=files,
        validation=None,
        dir=tmp,
        graphs=_graph_infos(src, files, kv["dtype"] if kv else src.kv_dtype),
    )
    manifest.check_bounds()
    return manifest
