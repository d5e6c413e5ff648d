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

import contextlib
import copy
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from viewrt.checksum import sha256_file
from viewrt.errors import ViewrtError
from viewrt.export import spec as S
from viewrt.export.validate import check_structure, validate_numbers
from viewrt.models.layers import mixed_fp16

OPSET = 18
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
ENCODER_FILE, DECODER_FILE = "encoder.onnx", "decoder.onnx"


class EncoderGraph(torch.nn.Module):
    """view [1, 9, H, W] (fp32) -> present K/V per layer [1, T, H, Dh] (cache dtype)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.dtype = next(model.parameters()).dtype

    def forward(self, view):
        return tuple(t for kv in self.model.encode_view(view.to(self.dtype)) for t in kv)


class DecoderGraph(torch.nn.Module):
    """target_rays [1, Vt, 6, H, W] (fp32), past K/V [1, N, H, Dh] -> images fp32."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.dtype = next(model.parameters()).dtype

    def forward(self, target_rays, *past):
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        return self.model.render(target_rays.to(self.dtype), pairs).float()


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the state dict (sorted keys, fp32 bytes): the model's identity."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def _export(module, args, path: Path, spec: S.GraphSpec, dynamic_shapes) -> None:
    from viewrt.models.layers import explicit_attention

    big = sum(p.numel() * p.element_size() for p in module.parameters()) > 1.8e9
    # The exporter's own notices (torchvision ops it skips, deprecations) are not ours to show.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with explicit_attention(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), dynamo=True, opset_version=OPSET, optimize=True, external_data=big,
            input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
            dynamic_shapes=dynamic_shapes, verbose=False,
        )


def _versions() -> dict:
    import onnx
    import onnxruntime

    from viewrt import __version__

    return {"viewrt": __version__, "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def _identity(manifest: dict) -> dict:
    return {k: manifest.get(k) for k in ("family", "config", "weights_sha256", "precision")}


def _check_out_dir(out_dir: Path, new_identity: dict, force: bool) -> None:
    path = out_dir / MANIFEST
    if out_dir.exists() and not out_dir.is_dir():
        raise ViewrtError(f"output {out_dir} exists and is not a folder")
    if not path.exists():
        stale = [f for f in (ENCODER_FILE, DECODER_FILE) if (out_dir / f).exists()]
        if stale and not force:
            raise ViewrtError(f"output {out_dir} holds {', '.join(stale)} without a manifest; pass --force to overwrite")
        return
    try:
        old = _identity(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError):
        old = None
    if old != new_identity and not force:
        what = "an unreadable manifest" if old is None else f"a different model ({', '.join(k for k in new_identity if old.get(k) != new_identity[k])} differ)"
        raise ViewrtError(f"output {out_dir} holds {what}; pass --force to overwrite")


def decoder_cases(max_views: int) -> list[tuple[int, int]]:
    """(cached views, targets) pairs validated after export: 1 view, a few, max."""
    few = min(3, max_views)
    return sorted({(1, 1), (few, 3), (max_views, 2)})


def export_model(model, out_dir: str | Path, preset: str, max_views: int = 16, precision: str = "fp32",
                 force: bool = False, checkpoint: str | None = None, seed: int | None = None, progress: bool = True) -> dict:
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
    Returns: the manifest dict that was written.
    Raises:
        ViewrtError: bad arguments, a folder holding another model, or failed validation
            (in which case nothing in ``out_dir`` has changed).
    """
    if precision not in S.DTYPES:
        raise ViewrtError(f"unknown precision {precision!r}; expected one of {', '.join(S.DTYPES)}")
    if max_views < 1:
        raise ViewrtError(f"--max-views must be at least 1, got {max_views}")
    cfg = model.cfg
    out_dir = Path(out_dir)
    kv_dtype = S.DTYPES[precision]
    manifest = {
        "format": "viewrt-manifest", "format_version": MANIFEST_FORMAT,
        "family": "efficient-lvsm", "preset": preset, "config": cfg.to_dict(),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "weights_sha256": weights_digest(model),
        "precision": precision, "kv_dtype": kv_dtype, "opset": OPSET,
        "image_size": cfg.image_size, "patch_size": cfg.patch_size, "tokens_per_view": cfg.tokens_per_view,
        "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "head_dim": cfg.head_dim, "d_model": cfg.d_model,
        "max_views": max_views, "max_targets": 8,
        "kv_bytes_per_view": {p: cfg.kv_bytes_per_view(S.ITEMSIZE[d]) for p, d in S.DTYPES.items()},
        "cameras": {"convention": "OpenCV c2w (x right, y down, z forward), fxfycxcy in pixels",
                    "input_channels": "[2*rgb-1, o x d, d]", "target_channels": "[o x d, d]"},
    }
    _check_out_dir(out_dir, _identity(manifest), force)

    enc_spec, dec_spec = S.encoder_spec(cfg, kv_dtype), S.decoder_spec(cfg, kv_dtype)
    emodel = mixed_fp16(copy.deepcopy(model)) if precision == "fp16" else model
    T, s = cfg.tokens_per_view, cfg.image_size
    view = torch.rand(1, 9, s, s)
    targets = torch.rand(1, 2, 6, s, s)
    cap = max(2, max_views)  # views the past_tokens axis admits (at least 2: a dynamic axis needs a range)
    example_views = min(3, cap)  # the example must lie in that range, and not be 1 (torch.export specializes 1)
    past = [torch.randn(1, example_views * T, cfg.n_heads, cfg.head_dim, dtype=next(emodel.parameters()).dtype) for _ in range(2 * cfg.n_layers)]
    nt = torch.export.Dim(S.NUM_TARGETS, min=1, max=64)
    pt = torch.export.Dim(S.PAST_TOKENS, min=1, max=cap * T)
    dec_dynamic = {"target_rays": {1: nt}, "past": tuple({1: pt} for _ in past)}

    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    done = False
    steps = tqdm(total=5, desc=f"export {preset} {precision}", disable=not progress, unit="step")
    try:
        steps.set_postfix_str("encoder.onnx")
        _export(EncoderGraph(emodel).eval(), (view,), tmp / ENCODER_FILE, enc_spec, None)
        steps.update()
        steps.set_postfix_str("decoder.onnx")
        _export(DecoderGraph(emodel).eval(), (targets, *past), tmp / DECODER_FILE, dec_spec, dec_dynamic)
        steps.update()
        steps.set_postfix_str("checks")
        for f, sp in ((ENCODER_FILE, enc_spec), (DECODER_FILE, dec_spec)):
            check_structure(tmp / f, sp, OPSET)
        steps.update()
        manifest["graphs"] = {
            "encoder": {"file": ENCODER_FILE, **enc_spec.to_dict()},
            "decoder": {"file": DECODER_FILE, **dec_spec.to_dict()},
        }
        steps.set_postfix_str("parity vs PyTorch")
        manifest["validation"] = validate_numbers(model, tmp, manifest, decoder_cases(max_views), seed)
        steps.update()
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:
            manifest.setdefault("files", {})[name] = {"sha256": sha256_file(tmp / name), "size_bytes": (tmp / name).stat().st_size}
        for g in manifest["graphs"].values():
            g["sha256"] = manifest["files"][g["file"]]["sha256"]
        manifest["versions"] = _versions()
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        for name in [*files, MANIFEST]:  # validated: now replace what was there
            os.replace(tmp / name, out_dir / name)
        steps.update()
        done = True
    finally:
        steps.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not done:  # a failed export leaves no trace, not even the folder
            with contextlib.suppress(OSError):
                out_dir.rmdir()
    return manifest

