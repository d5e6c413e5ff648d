"""``viewrt infer`` on a token-window export (the streaming geometry family): a frame sequence
through a streaming session, frame by frame (viewrt.evaluation.stream), on a runtime backend
or PyTorch eager (the reference's own cache, viewrt.models.stream_baselines, imported when
``--backend torch`` runs).

The steps, one function each: the session factory is made and one session opened and
closed (the export, backend, device, window and pinned count work), and the sequence is
found, both before anything is written; then, under the folder lock, a synthetic sequence is
generated where none was given, and the frames run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

import viewrt.runtime as vrt
import viewrt.runtime.backends as registry
from viewrt.contract.manifest import Manifest
from viewrt.data import DataRoots, load_sequence, make_synthetic_sequence
from viewrt.data.sequence import FrameSequence
from viewrt.errors import ViewrtError
from viewrt.evaluation import UNTRAINED
from viewrt.evaluation.stream import StreamSettings, run_sequence
from viewrt.folders import check_apart, locked_folder

SYNTHETIC_SEQUENCE_FRAMES = 24  # frames of the generated sequence when none is given


@dataclass(frozen=True)
class StreamRequest:
    """What ``viewrt infer`` was asked for on a token-window export."""

    export_dir: Path
    out: Path
    backend: str
    device: str | None = None
    window: int | None = None  # frames attended in full (None: the export's)
    pinned: int | None = None  # first frames pinned (None: the export's)
    threads: int | None = None  # CPU threads of the backend (None: its default)
    frames: Path | None = None  # the sequence (None: a synthetic one into OUT/_scene)
    max_frames: int | None = None  # the first N frames only
    synthetic_frames: int = SYNTHETIC_SEQUENCE_FRAMES
    roots: DataRoots = field(default_factory=DataRoots.parse)
    check_intrinsics: bool = True
    progress: bool = True


def weights_label(manifest: Manifest) -> tuple[str, bool]:
    """(what made the export's weights, whether they are untrained)."""
    return (manifest.checkpoint, False) if manifest.checkpoint else (UNTRAINED, True)


def _image_size(manifest: Manifest) -> int:
    return int(manifest.config["image_size"])


def _runtime_opener(req: StreamRequest):
    """() -> an open runtime streaming session of the requested backend."""

    def open_session():
        try:
            return vrt.open(
                req.export_dir,
                req.backend,
                device=req.device,
                window=req.window,
                pinned=req.pinned,
                threads=req.threads,
            )
        except ViewrtError as e:
            raise ViewrtError(f"--backend {req.backend}: {e}") from None

    return open_session


def _torch_opener(req: StreamRequest, manifest: Manifest):
    """() -> a PyTorch eager streaming session of the export's preset and weights."""
    from viewrt.models.stream_baselines import open_reference, reference_model

    model = reference_model(manifest, req.export_dir)
    return lambda: open_reference(model, manifest, req.window, req.pinned, req.device, req.threads)


def session_opener(req: StreamRequest, manifest: Manifest):
    """() -> an open streaming session for ``req.backend`` (a runtime configuration or
    "torch")."""
    if req.backend in registry.names():
        return _runtime_opener(req)
    return _torch_opener(req, manifest)


def _read_sequence(req: StreamRequest) -> FrameSequence | None:
    if req.frames is None:
        return None
    return load_sequence(req.frames, req.roots)


def _trimmed(seq: FrameSequence, n: int | None) -> FrameSequence:
    if n is None or n >= len(seq):
        return seq
    pick = slice(0, n)
    return FrameSequence(
        name=seq.name,
        source=seq.source,
        image_paths=seq.image_paths[pick],
        c2ws=None if seq.c2ws is None else seq.c2ws[pick],
        fxfycxcy=None if seq.fxfycxcy is None else seq.fxfycxcy[pick],
        depth_paths=None if seq.depth_paths is None else seq.depth_paths[pick],
        tried=None if seq.tried is None else seq.tried[pick],
    )


def _prefill_count(info: dict, manifest: Manifest) -> int:
    """Frames the session takes together first: its scale frames (pinned)."""
    for key in ("scale_frames", "pinned"):
        if isinstance(info.get(key), int):
            return int(info[key])
    return int(manifest.config.get("scale_frames", 0))


def infer_stream(req: StreamRequest, manifest: Manifest) -> None:
    """Run one frame sequence through a streaming session into ``req.out``.

    Raises:
        ViewrtError: a backend that cannot open the export, a bad window or pinned count, a
            missing or unreadable sequence, frames of mixed sizes, a sequence shorter than
            the scale frames, or what the session refuses.
    """
    open_session = session_opener(req, manifest)
    probe = open_session()  # the export, backend and window work: before anything is written
    info = dict(probe.info())
    probe.close()
    seq = _read_sequence(req)
    weights, untrained = weights_label(manifest)
    size = _image_size(manifest)
    prefill = _prefill_count(info, manifest)
    frames = req.frames and Path(req.frames)
    check_apart(
        req.out,
        {"the export": req.export_dir},
        {"the frames' folder": frames and (frames if frames.is_dir() else frames.parent)},
    )
    with locked_folder(req.out, "--out", clean_on_error=True):
        if seq is None:
            path = make_synthetic_sequence(
                req.out / "_scene", "synthetic", n_frames=req.synthetic_frames, size=size, seed=0
            )
            seq = load_sequence(path)
        seq = _trimmed(seq, req.max_frames)
        if len(seq) < prefill:
            raise ViewrtError(
                f"{seq.source}: {len(seq)} frame(s); the export takes its first {prefill} "
                "(scale) frames together, so a sequence needs at least that many"
            )
        settings = StreamSettings(
            size=size,
            prefill=prefill,
            weights=weights,
            untrained=untrained,
            title=f"{manifest.preset} on {req.backend}",
            check_intrinsics=req.check_intrinsics,
            progress=req.progress,
            extra={
                "export_dir": str(req.export_dir),
                "preset": manifest.preset,
                "precision": manifest.precision,
                "backend": req.backend,
                "window": info.get("window", req.window),
                "pinned": info.get("pinned", req.pinned),
            },
        )
        session = open_session()
        try:
            summary = run_sequence(session, seq, req.out, settings)
        finally:
            session.close()
    _echo_summary(req, summary)


def _echo_summary(req: StreamRequest, s: dict) -> None:
    parts = [f"{s['sequence']}: {s['frames']} frames"]
    if s["step_ms_median"] is not None:
        parts.append(f"step {s['step_ms_median']:.2f} ms (median)")
    errs = s.get("mean_errors") or {}
    if errs.get("rotation_error_deg") is not None:
        parts.append(
            f"rotation {errs['rotation_error_deg']:.2f} deg, translation {errs['translation_error']:.3g} (mean, first frame aligned)"
        )
    if errs.get("depth_abs_rel") is not None:
        parts.append(f"depth AbsRel {errs['depth_abs_rel']:.3f}")
    click.echo("; ".join(parts) + f"; wrote {req.out}")
    if s["untrained"]:
        click.echo(
            f"note: {req.export_dir} holds untrained weights: poses and depth test the pipeline and are "
            "not meaningful (every output says so)"
        )
