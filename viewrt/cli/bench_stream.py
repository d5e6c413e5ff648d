"""``viewrt bench`` on a token-window export (the streaming geometry family): the torch-free
harness (viewrt.bench.stream) given what it runs: the runtime's configurations (opened here
through viewrt.runtime.open) and the PyTorch baselines of viewrt.models.stream_baselines
(imported when the command runs: eager streaming with the reference's own cache, and full
causal recompute)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

import viewrt.runtime as vrt
import viewrt.runtime.backends as registry
from viewrt.bench.stream import (
    RecomputeBackend,
    StreamBackend,
    StreamBenchConfig,
    StreamModel,
    check_config,
    run_stream_bench,
)
from viewrt.bench.stream_report import summary_markdown
from viewrt.cli.infer_stream import weights_label
from viewrt.contract.manifest import Manifest
from viewrt.cpuinfo import cpu_flags
from viewrt.data import synthetic_sequence
from viewrt.errors import ViewrtError
from viewrt.folders import locked_folder

# name -> (kind, description)
STREAM_BASELINES = {
    "torch-stream": (
        "eager",
        "PyTorch eager streaming fp32, the reference's own preallocated window cache",
    ),
    "torch-recompute": (
        "recompute",
        "PyTorch fp32 full causal recompute: forward_batch over every frame so far (window mask)",
    ),
}


@dataclass(frozen=True)
class StreamBenchRequest:
    """What ``viewrt bench`` was asked for on a token-window export."""

    export_dir: Path
    out: Path
    frames: list[int]
    windows: list[int] | None
    pinned: int | None
    backends: list[str] | None
    repeats: int
    warmup: int
    max_seconds_per_point: float
    threads: int | None
    device: str
    seed: int
    progress: bool


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _select(req: StreamBenchRequest, manifest: Manifest) -> tuple[list[str], dict[str, str]]:
    """(backends to run, {backend: why not} of the default set). Raises ViewrtError for a
    backend asked for by name that cannot run here."""
    names = req.backends
    default = names is None
    if default:
        names = [*registry.configs(), *(STREAM_BASELINES if _torch_available() else ())]
    selected, skipped = [], {}
    for b in names:
        if b in STREAM_BASELINES:
            why = None if _torch_available() else "torch is not installed"
        elif b in registry.configs():
            why = registry.unavailable(b, manifest, threads=req.threads)
        else:
            why = (
                "not a backend of a token-window export (runtime configurations, "
                + ", ".join(STREAM_BASELINES)
                + ")"
            )
        if why is None:
            selected.append(b)
        else:
            skipped[b] = why
    if skipped and not default:
        raise ViewrtError("cannot run " + "; ".join(f"{b}: {why}" for b, why in skipped.items()))
    if not selected:
        raise ViewrtError(
            "no backend can run here: " + "; ".join(f"{b}: {w}" for b, w in skipped.items())
        )
    return selected, skipped


def _runtime_backend(req: StreamBenchRequest, name: str) -> StreamBackend:
    def open_session(window: int, pinned: int):
        return vrt.open(req.export_dir, name, window=window, pinned=pinned, threads=req.threads)

    return StreamBackend(name, "runtime", registry.configs()[name].description, open_session)


def _torch_backends(req: StreamBenchRequest, manifest: Manifest, names: list[str]):
    """The PyTorch baselines asked for: (incremental, recompute)."""
    import torch

    from viewrt.models.stream_baselines import TorchStreamSession, recompute_last, reference_model

    if req.threads is not None:
        torch.set_num_threads(req.threads)
    model = reference_model(manifest, req.export_dir).to(req.device)
    inc, rec = [], []
    if "torch-stream" in names:
        inc.append(
            StreamBackend(
                "torch-stream",
                "eager",
                STREAM_BASELINES["torch-stream"][1],
                lambda w, p: TorchStreamSession(model, w, p, req.device),
            )
        )
    if "torch-recompute" in names:

        def run(images: np.ndarray, window: int, pinned: int):
            return recompute_last(model, torch.from_numpy(images).to(req.device), window, pinned)

        rec.append(RecomputeBackend("torch-recompute", STREAM_BASELINES["torch-recompute"][1], run))
    return inc, rec


def _model_facts(manifest: Manifest, pinned: int) -> StreamModel:
    from viewrt.models.gct_stream import GCTStreamConfig, count_flops

    side = manifest.contract.side_caches(manifest.header)
    itemsize = manifest.np_kv_dtype.itemsize
    cfg = GCTStreamConfig(**{**manifest.config, "depth_taps": tuple(manifest.config["depth_taps"])})
    return StreamModel(
        preset=manifest.preset,
        precision=manifest.precision,
        image_size=int(manifest.image_size),
        pinned=pinned,
        max_positions=int(manifest.max_positions),
        default_window=max(1, int(manifest.max_frames) - pinned + 1),
        kv_bytes_per_frame=int(manifest.kv_bytes_per_entry),
        side_bytes_per_frame=sum(g.bytes_per_entry(itemsize) for g in side.values()),
        flops=lambda cached, n: count_flops(cfg, cached, n),
        weights=weights_label(manifest)[0],
        config=dict(manifest.config),
    )


def bench_stream(req: StreamBenchRequest, manifest: Manifest) -> str:
    """Run the streaming benchmark into ``req.out``; returns summary.md.

    Raises:
        ViewrtError: a bad option, a backend that cannot run, a window the export cannot
            hold (when every backend refuses it), checked before anything is measured.
    """
    pinned = req.pinned or int(manifest.scale_frames)
    if pinned > int(manifest.scale_frames):
        raise ViewrtError(
            f"--pinned {pinned}: the export's prefill takes at most {manifest.scale_frames} frames"
        )
    selected, skipped = _select(req, manifest)
    model = _model_facts(manifest, pinned)
    inc = [_runtime_backend(req, b) for b in selected if b in registry.configs()]
    rec: list[RecomputeBackend] = []
    if any(b in STREAM_BASELINES for b in selected):
        t_inc, rec = _torch_backends(req, manifest, selected)
        inc += t_inc
    cfg = StreamBenchConfig(
        export_dir=req.export_dir,
        out=req.out,
        frames=req.frames,
        windows=req.windows,
        repeats=req.repeats,
        warmup=req.warmup,
        max_seconds_per_point=req.max_seconds_per_point,
        seed=req.seed,
        progress=req.progress,
    )
    windows = check_config(cfg, model)  # before the frames are rendered and the folder made
    runtime = [b for b in selected if b in registry.configs()]
    if runtime and max(windows) > model.default_window:
        raise ViewrtError(
            f"--windows {max(windows)}: the export's runtime cache holds {pinned} pinned frames and a "
            f"window of at most {model.default_window} (max_frames {manifest.max_frames}); "
            f"runtime backends {', '.join(runtime)} cannot run it"
        )
    images = synthetic_sequence(max(req.frames), model.image_size, req.seed)[0].astype(np.float32)
    click.echo(f"CPU flags: {', '.join(cpu_flags()) or 'unknown'}", err=True)
    with locked_folder(req.out, "--out", clean_on_error=True):
        res = run_stream_bench(cfg, model, inc, rec, images, skipped)
    return summary_markdown(res)
