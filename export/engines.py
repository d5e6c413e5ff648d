"""`viewrt build` / `make engines`: TensorRT engines for an export folder, recorded in its
manifest (files, checksums, profiles, TensorRT version, GPU)."""

from __future__ import annotations

import logging
from pathlib import Path

import viewrt.contract.names as N
from viewrt.contract.manifest import Manifest, load_manifest
from viewrt.errors import ViewrtError
from viewrt.export.trt_build import build_all, trt_available

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
    """Build one TensorRT engine per graph and record them in the manifest.

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
    declared = manifest.contract.dim_limits(manifest.header)
    limits = {N.NUM_TARGETS: max_targets} if N.NUM_TARGETS in declared else {}
    manifest.dynamic_ranges(max_views, limits)  # raises outside the export's range
    ok, reason = trt_available()  # probed once per process (viewrt.devices)
    if not ok:
        raise ViewrtError(f"TensorRT engines not built: {reason}")
    engines = build_all(export_dir, manifest, precision, max_views, limits, tf32)
    manifest.engines = engines
    manifest.write(export_dir)
    return engines
