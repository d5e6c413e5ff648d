"""`viewrt build` / `make engines`: TensorRT engines for an export folder, recorded in its
manifest (files, checksums, profiles, TensorRT version, GPU)."""

from __future__ import annotations

import json
from pathlib import Path

from viewrt.errors import ViewrtError
from viewrt.checksum import sha256_file
from viewrt.export.onnx_export import MANIFEST
from viewrt.export.trt_build import build_all, estimate_memory, trt_available


def read_export(export_dir: Path) -> dict:
    """The manifest of an export folder, with its graphs' checksums verified."""
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        raise ViewrtError(f"{path}: no manifest (export a model there with `viewrt export`)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ViewrtError(f"{path}: unreadable manifest ({e})") from None
    for g in ("encoder", "decoder"):
        f = Path(export_dir) / manifest["graphs"][g]["file"]
        if not f.is_file() or sha256_file(f) != manifest["graphs"][g]["sha256"]:
            raise ViewrtError(f"{f}: missing or does not match the manifest's checksum; re-export")
    return manifest


def build_engines(export_dir: Path, precision: str | None = None, max_views: int | None = None, max_targets: int = 8,
                  tf32: bool = False) -> dict:
    """Build encoder.engine and decoder.engine and record them in the manifest.

    Args:
        export_dir: an export folder.
        precision: "fp32" or "fp16" (default: the graphs' precision).
        max_views: largest cache the decoder profile admits (default: the manifest's).
        max_targets: most targets per decoder call.
        tf32: allow TF32 for fp32 tensors (cleared by default; recorded per engine).
    Returns: the engines record written to the manifest.
    Raises: ViewrtError when TensorRT or a GPU is absent (saying which), or the build fails.
    """
    export_dir = Path(export_dir)
    manifest = read_export(export_dir)
    precision = precision or manifest["precision"]
    max_views = manifest["max_views"] if max_views is None else max_views
    if not 1 <= max_views <= manifest["max_views"]:
        raise ViewrtError(f"--max-views must be in 1..{manifest['max_views']} (the export's), got {max_views}")
    est = estimate_memory(manifest, max_views, max_targets)
    print(f"[build] engines for {max_views} views x {max_targets} targets will need about {est['total_mib']} MiB "
          f"of device memory (KV cache {est['cache_mib']} MiB)")
    ok, reason = trt_available()  # probed once per process (viewrt.devices)
    if not ok:
        raise ViewrtError(f"TensorRT engines not built: {reason}")
    engines = build_all(export_dir, manifest, precision, max_views, max_targets, tf32)
    manifest["engines"] = engines
    (export_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return engines
