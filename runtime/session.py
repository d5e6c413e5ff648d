"""Opening an export: the manifest says the family's memory kind, and :data:`SESSIONS` says
which runtime session runs it. A family with a new memory kind adds its session class and
one row here; the session class lists the keyword options it takes (``options``), and
:func:`open` passes it those."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import viewrt.runtime.backends as registry
from viewrt.contract.family import TOKEN_WINDOW, VIEW_SLOTS
from viewrt.contract.manifest import Manifest, load_manifest
from viewrt.errors import ViewrtError

if TYPE_CHECKING:
    from viewrt.runtime.renderer import Renderer
    from viewrt.runtime.stream_session import StreamSession

# memory kind -> (module, class) of the session that runs it, imported when used
SESSIONS: dict[str, tuple[str, str]] = {
    VIEW_SLOTS: ("viewrt.runtime.renderer", "Renderer"),
    TOKEN_WINDOW: ("viewrt.runtime.stream_session", "StreamSession"),
}


def session_class(manifest: Manifest):
    """The runtime session class for a manifest's memory kind.

    Raises: ViewrtError when this viewrt has no session for that kind.
    """
    if manifest.memory not in SESSIONS:
        raise ViewrtError(
            f"{manifest.dir}: family {manifest.family!r} keeps its K/V as {manifest.memory!r}; "
            f"this viewrt runs {', '.join(SESSIONS)} only"
        )
    module, cls = SESSIONS[manifest.memory]
    return getattr(importlib.import_module(module), cls)


def open(
    export_dir: str | Path,
    backend: str = "ort",
    max_views: int | None = None,
    window: int | None = None,
    pinned: int | None = None,
    device: str | None = None,
    frame=None,
    threads: int | None = None,
    targets_per_call: int | None = None,
    attention_budget_mib: float | None = None,
    inference_precision: str | None = None,
) -> Renderer | StreamSession:  # noqa: A001 - the runtime's entry point, as in vrt.open
    """Open an export folder: the runtime session of its memory kind (:data:`SESSIONS`):
    view slots: a :class:`~viewrt.runtime.renderer.Renderer` (view-by-view rendering);
    token window: a :class:`~viewrt.runtime.stream_session.StreamSession` (frame by frame).
    Each session takes the options it lists (``options``); another one given (not None)
    is refused in one line.

    Args:
        export_dir: folder with manifest.json and the graphs (and engines for "trt").
        backend: a backend or configuration name from :data:`viewrt.runtime.backends.CONFIGS`
            / ``BACKENDS``: "ort" (ONNX Runtime), "ort-cuda", "ort-trt", "trt" (native
            TensorRT), and where installed "openvino".
        max_views: Renderer: cache capacity (default and maximum: the export's max_views, or
            the backend's where smaller, e.g. TensorRT engines built for fewer views).
        window: Renderer: sliding window size (None: no eviction, a full cache is an error).
            StreamSession: frames attended in full besides the pinned ones, the current one
            included (None: as many as the export's cache holds).
        pinned: Renderer: the first ``pinned`` views are never evicted (default 0).
            StreamSession: the scale frames prefilled together and pinned (default: the
            export's ``scale_frames``).
        device: "cpu" (default for ort), "cuda[:N]", "tensorrt[:N]" (ort's TensorRT EP);
            "cuda:N" for trt.
        frame: Renderer: normalization frame: a NormalizationFrame, cameras (or c2w
            matrices) to compute it from, or None to take it from the first added view.
        threads: ONNX Runtime intra-op threads (OpenVINO: inference threads).
        targets_per_call: Renderer: targets per decoder call (default: chosen by the budget
            below; all at once where attention is fused and materializes nothing).
        attention_budget_mib: Renderer (default 256): ONNX Runtime runs attention as MatMul
            -> Softmax -> MatMul and holds scores and probabilities of targets x T x cached
            tokens x heads floats; targets are split across calls to keep that under this
            budget (e.g. `small` at 32 cached views: 2 targets per call, +7% decode time,
            ~400 MiB less peak memory than 8 at once, measured on 2 CPU cores).
        inference_precision: the compute precision of a backend that takes it ("openvino":
            INFERENCE_PRECISION_HINT; not the graph precision, which is the export's): None
            (OpenVINO's default for the CPU: bf16 with AMX or AVX512-BF16, else f32), "f32",
            "bf16" or "f16"; ``info()["precision"]`` says which is in use.
    Returns: the session (a context manager; close() releases the backend).
    Raises: ViewrtError on a bad folder, a manifest that does not match its graphs, a
        checksum, an unknown or unavailable backend, an option the session does not take,
        or a bad policy.
    """
    if not isinstance(backend, str):
        raise ViewrtError(f"backend must be a name, got {type(backend).__name__}")
    if not isinstance(export_dir, (str, Path)):
        raise ViewrtError(f"export_dir must be a path, got {type(export_dir).__name__}")
    manifest = load_manifest(export_dir)
    cls = session_class(manifest)
    given = {
        "max_views": max_views,
        "window": window,
        "pinned": pinned,
        "frame": frame,
        "targets_per_call": targets_per_call,
        "attention_budget_mib": attention_budget_mib,
    }
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - set(cls.options))
    if unknown:
        raise ViewrtError(
            f"a {manifest.family} export ({manifest.memory}) opens a {cls.__name__}, which takes "
            f"no {', '.join(unknown)} (it takes {', '.join(cls.options)})"
        )
    be = registry.create(
        backend,
        manifest,
        device=device,
        threads=threads,
        inference_precision=inference_precision,
    )
    try:
        return cls(manifest, be, **given)
    except BaseException:
        be.__exit__(None, None, None)
        raise
