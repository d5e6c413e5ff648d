"""`viewrt build` / `make engines`: TensorRT engines for an export folder, recorded in its
manifest (files, checksums, profiles, TensorRT version, GPU)."""

from __future__ import annotations

import logging
from pathlib import Path

from viewrt.contract.manifest import Manifest, load_manifest
from viewrt.errors import ViewrtError
from viewrt.export.trt_build import build_all, estimate_memory, trt_available

log = logging.getLogger("viewrt.build")


def read_export(export_dir: Path) -> Manifest:
    """The manifest of an export folder, loaded and bounded by the contract's loader, with
    its graphs' checksums verified. Raises ViewrtError."""
    return load_manifest(Path(export_dir), verify=True)


def build_engines(
    export_dir: Path,
    precision: str | None = None,
    max_views: int | None = None,
    max_targets: int = 8,
    tf32: bool = False,
) -> dict:
    """Build encoder.engine and decoder.engine and record them in the manifest.

    Args:
        export_dir: an export folder.
        precision: a precision of the table (default: the graphs' precision).
        max_views: largest cache the decoder profile admits (default: the manifest's).
        max_targets: most targets per decoder call.
        tf32: allow TF32 for fp32 tensors (cleared by default; recorded per engine).
    Returns: the engines record written to the manifest.
    Raises: ViewrtError when TensorRT or a GPU is absent (saying which), or the build fails.
    """
    export_dir = Path(export_dir)
    manifest = read_export(export_dir)
    precision = precision or manifest.precision
    max_views = manifest.max_views if max_views is None else max_views
    manifest.dynamic_ranges(max_views, max_targets)  # raises outside the export's range
    record = manifest.to_dict()
    est = estimate_memory(record, max_views, max_targets)
    ok, reason = trt_available()  # probed once per process (viewrt.devices)
    if not ok:
        raise ViewrtError(f"TensorRT engines not built: {reason}")
    log.info(
        "[build] engines for %d views x %d targets will need about %s MiB of device memory (KV cache %s MiB)",
        max_views,
        max_targets,
        est["total_mib"],
        est["cache_mib"],
    )
    engines = build_all(export_dir, record, precision, max_views, max_targets, tf32)
    manifest.engines = engines
    manifest.write(export_dir)
    return engines
