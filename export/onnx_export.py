"""Export Efficient-LVSM as two ONNX graphs (encoder, cache-consuming decoder) plus the
manifest the runtime reads, validating before anything in the output folder changes.

Graphs are written with the torch.export-based exporter at opset 18, attention as
MatMul -> Softmax -> MatMul (scale on q first), LayerNormalization for LayerNorm and
RMSNorm as plain arithmetic, so TensorRT 10.3 (JetPack 6) can parse them.

fp16 variant: weights and matmuls in fp16; the residual stream, LayerNorm, RMSNorm and
Softmax in fp32 inside the graph (explicit casts, what strongly typed TensorRT 11 needs);
view/target inputs and images stay fp32; the K/V outputs/inputs are fp16, so the cache is
half size.
"""

from __future__ import annotations

import copy
import json
import logging
import platform
import shutil
import sys
import warnings
from dataclasses import fields, replace
from pathlib import Path

import torch
from tqdm import tqdm

import viewrt.contract.names as N
from viewrt import __version__
from viewrt.checksum import sha256_file
from viewrt.contract.manifest import Manifest
from viewrt.contract.memory import host_memory_bytes
from viewrt.contract.precision import EXPORT_PRECISIONS, get_precision
from viewrt.errors import ViewrtError
from viewrt.export.spec import GraphSpec, spec_for
from viewrt.export.validate import check_structure
from viewrt.folders import locked_folder, recover, staging_folder, swap_in
from viewrt.models.checkpoint import weights_digest
from viewrt.models.layers import explicit_attention, mixed_fp16
from viewrt.models.registry import family_of_config

# Lazy: onnx and onnxruntime (their versions for the manifest), imported where used.

OPSET = 18
MANIFEST = N.MANIFEST_FILE
log = logging.getLogger("viewrt.export")


def _export(module, args, path: Path, spec: GraphSpec, dynamic_shapes) -> None:
    big = sum(p.numel() * p.element_size() for p in module.parameters()) > 1.8e9
    # The exporter's own notices (torchvision ops it skips, deprecations) are not ours to show.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with explicit_attention(module), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            opset_version=OPSET,
            optimize=True,
            external_data=big,
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )


def _versions() -> dict:
    import onnx
    import onnxruntime

    return {
        "viewrt": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def _identity(manifest: dict) -> dict:
    return {k: manifest.get(k) for k in ("family", "config", "weights_sha256", "precision")}


def _check_out_dir(out_dir: Path, new_identity: dict, force: bool) -> None:
    path = out_dir / MANIFEST
    if out_dir.exists() and not out_dir.is_dir():
        raise ViewrtError(f"output {out_dir} exists and is not a folder")
    if not path.exists():
        others = (
            sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("."))
            if out_dir.is_dir()
            else []
        )
        if others and not force:
            shown = ", ".join(others[:3]) + (
                f" and {len(others) - 3} more" if len(others) > 3 else ""
            )
            raise ViewrtError(
                f"output {out_dir} is not empty and holds no export ({shown}); "
                "choose an empty or new folder, or pass --force"
            )
        return
    try:
        old = _identity(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError):
        old = None
    if old != new_identity and not force:
        what = (
            "an unreadable manifest"
            if old is None
            else f"a different model ({', '.join(k for k in new_identity if old.get(k) != new_identity[k])} differ)"
        )
        raise ViewrtError(f"output {out_dir} holds {what}; pass --force to overwrite")


def export_model(
    model,
    out_dir: str | Path,
    preset: str,
    max_views: int = 16,
    precision: str = "fp32",
    force: bool = False,
    checkpoint: str | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> Manifest:
    """Export, validate, and only then write encoder.onnx, decoder.onnx, manifest.json.

    Args:
        model: an EfficientLVSM (fp32, eval) to export.
        out_dir: destination folder (created if missing).
        preset: preset name recorded in the manifest.
        max_views: cache capacity the graphs and runtime are sized for (>= 1).
        precision: "fp32" or "fp16".
        force: overwrite a folder that holds another model's export.
        checkpoint: checkpoint path recorded in the manifest (None: built-in weights).
        seed: validation seed (None: fresh random inputs).
        progress: show a progress bar.
    Returns: the Manifest that was written.
    Raises:
        ViewrtError: bad arguments, a folder holding another model, or failed validation
            (in which case nothing in ``out_dir`` has changed).
    """
    if precision not in EXPORT_PRECISIONS:
        raise ViewrtError(
            f"unknown precision {precision!r}; expected one of {', '.join(EXPORT_PRECISIONS)} "
            "(int8/fp8 exports are made from an fp32 export by `viewrt calib`)"
        )
    if max_views < 1:
        raise ViewrtError(f"--max-views must be at least 1, got {max_views}")
    cfg = model.cfg
    fam = spec_for(family_of_config(cfg).name)
    out_dir = Path(out_dir)
    kv_dtype = get_precision(precision).kv_dtype
    header = fam.header(cfg, max_views)
    manifest = {
        "family": fam.family,
        "preset": preset,
        "config": cfg.to_dict(),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "weights_sha256": weights_digest(model),
        "precision": precision,
        "kv_dtype": kv_dtype,
        "opset": OPSET,
        "header": header,
        **fam.records(cfg, checkpoint),
    }
    # validation feeds the decoder a full cache, held by torch, numpy and ONNX Runtime at once
    geo = fam.contract.cache(header)
    need = 4 * geo.bytes_per_entry(get_precision(precision).itemsize) * geo.capacity
    mem = host_memory_bytes()
    if mem is not None and need > mem:
        raise ViewrtError(
            f"--max-views {max_views}: exporting and validating a cache that large needs about {need / 2**30:.1f} GiB, "
            f"more than this machine's {mem / 2**30:.1f} GiB of memory; choose fewer views"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ViewrtError(f"output {out_dir} exists and is not a folder")
    with locked_folder(
        out_dir, "output", clean_on_error=True
    ) as out_dir:  # a failed export leaves no trace
        for line in recover(out_dir, MANIFEST):
            log.warning("%s: %s", out_dir, line)
        _check_out_dir(out_dir, _identity(manifest), force)
        return _export_into(model, out_dir, manifest, fam, precision, max_views, seed, progress)


def _export_into(
    model, out_dir: Path, manifest: dict, fam, precision: str, max_views: int, seed, progress: bool
) -> Manifest:
    cfg, preset, kv_dtype = model.cfg, manifest["preset"], manifest["kv_dtype"]
    specs = fam.signatures(cfg, max_views, kv_dtype)
    files = {g.name: g.file for g in fam.contract.graphs}
    emodel = mixed_fp16(copy.deepcopy(model)) if precision == "fp16" else model
    examples = fam.example_inputs(cfg, max_views, next(emodel.parameters()).dtype)
    modules = fam.modules(emodel)

    tmp = staging_folder(out_dir)
    steps = tqdm(
        total=len(specs) + 3,
        desc=f"export {preset} {precision}",
        disable=not (progress and sys.stderr.isatty()),
        unit="step",
    )
    try:
        for g, spec in specs.items():
            steps.set_postfix_str(files[g])
            args, dynamic = examples[g]
            _export(modules[g], args, tmp / files[g], spec, dynamic)
            steps.update()
        steps.set_postfix_str("checks")
        for g, spec in specs.items():
            check_structure(tmp / files[g], spec, OPSET)
        steps.update()
        manifest["graphs"] = {g: spec.graph_info(files[g]) for g, spec in specs.items()}
        known = {f.name for f in fields(Manifest)}
        record = Manifest(
            **{k: v for k, v in manifest.items() if k in known},
            extra={k: v for k, v in manifest.items() if k not in known},  # a family's records
        )
        record.check_bounds()
        steps.set_postfix_str("parity vs PyTorch")
        record.validation = fam.validate(model, tmp, record, max_views, seed)
        record.variants = fam.write_variants(tmp, record, max_views) or None
        steps.update()
        written = sorted(p.name for p in tmp.iterdir())
        record.files = {
            name: {"sha256": sha256_file(tmp / name), "size_bytes": (tmp / name).stat().st_size}
            for name in written
        }
        record.graphs = {
            g: replace(info, sha256=record.files[info.file]["sha256"])
            for g, info in record.graphs.items()
        }
        for per_graph in (record.variants or {}).values():
            for rec in per_graph.values():
                rec["sha256"] = record.files[rec["file"]]["sha256"]
        record.versions = _versions()
        record.write(tmp)
        # validated: now replace what was there (restorable at any point, see viewrt.folders)
        old = [MANIFEST, *files.values(), *_manifest_files(out_dir / MANIFEST)]
        swap_in(tmp, out_dir, [*written, MANIFEST], MANIFEST, sorted(set(old)))
        steps.update()
    finally:
        steps.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def _manifest_files(path: Path) -> list[str]:
    """Files an existing manifest lists (to move aside with it), [] when unreadable."""
    try:
        return list(json.loads(path.read_text()).get("files", {}))
    except (OSError, ValueError, AttributeError):
        return []
