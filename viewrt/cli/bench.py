"""``viewrt bench``: the torch-free harness (viewrt.bench) composed with the runtime
(its ``open`` and registry lookups, handed to the harness as a RuntimeAccess: only
viewrt/cli imports viewrt.runtime) and the PyTorch baselines (viewrt.models.baselines,
imported when the command runs: see viewrt/cli/__init__.py)."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

import viewrt.runtime as vrt
import viewrt.runtime.backends as registry
from viewrt.bench.harness import BenchConfig, RuntimeAccess, run_bench, runtime_names
from viewrt.cli._errors import cli_errors, finite_float, require_report_extra
from viewrt.cli.bench_stream import STREAM_BASELINES, StreamBenchRequest, bench_stream
from viewrt.cli.options import (
    IntList,
    backends_option,
    device_option,
    export_dir_argument,
    int_list_option,
    out_option,
    seed_option,
    threads_option,
)
from viewrt.contract.manifest import load_manifest
from viewrt.errors import ViewrtError
from viewrt.folders import check_apart
from viewrt.runtime.estimate import echo_estimate

FINITE_POSITIVE, FINITE_NONNEGATIVE = finite_float(True), finite_float(False)


def baseline_names() -> tuple[str, ...]:
    """The PyTorch baselines' names (viewrt.models.baselines.BASELINES); none where torch
    is not installed (a runtime-only install benches the runtime alone)."""
    try:
        from viewrt.models.baselines import BASELINES  # imports torch: only when a run asks
    except ImportError:
        return ()
    return tuple(BASELINES)


def backend_names() -> list[str]:
    """The bench vocabulary, read when the command runs: the runtime's configurations from
    its registry (and their quantized columns), then the PyTorch baselines."""
    return [*runtime_names(registry.configs()), *baseline_names(), *STREAM_BASELINES]


def runtime_access() -> RuntimeAccess:
    """The runtime as the harness uses it: open, the registry's configurations and
    availability check, the one-line memory estimate."""
    return RuntimeAccess(
        open=vrt.open,
        configs=registry.configs,
        unavailable=registry.unavailable,
        estimate=echo_estimate,
    )


def _refuse_other_family(ctx, manifest, stream: bool) -> None:
    """One line naming the options given on the command line that the export's family does
    not take."""
    mine = ("frame_counts", "windows", "pinned")
    theirs = ("views", "targets", "attention_budget_mib", "quantized_export", "gemm_size")
    names = theirs if stream else mine
    given = [
        "--" + n.replace("_", "-").replace("frame-counts", "frames")
        for n in names
        if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE
    ]
    if given:
        raise ViewrtError(
            f"{', '.join(given)} do(es) not apply to a {manifest.family} export ({manifest.memory} memory)"
        )
    if not stream and ctx.params.get("backends"):
        bad = [b for b in ctx.params["backends"] if b in STREAM_BASELINES]
        if bad:
            raise ViewrtError(
                f"{', '.join(bad)}: baselines of token-window exports, this export is {manifest.family}"
            )


@click.command("bench")
@export_dir_argument()
@out_option()
@int_list_option("--views", "1,2,4,8,16,32,48,64", "Cached-view counts N (comma-separated).")
@int_list_option("--targets", "1,8", "Target-view counts (comma-separated).")
@backends_option(
    backend_names,
    "Comma-separated: runtime configurations of the backend registry (viewrt.runtime.backends, "
    "and any registered), their quantized columns (e.g. ort-int8, with --quantized-export) and "
    "the PyTorch baselines of viewrt.models.baselines (default: all available; an unknown name "
    "lists them all).",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Timed repetitions per point (median reported).",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Untimed repetitions before them.",
)
@click.option(
    "--max-seconds-per-point",
    type=FINITE_NONNEGATIVE,
    default=20.0,
    show_default=True,
    help="Budget of a full-recompute point; over it: 1 target scaled, or extrapolated from FLOPs (0: no budget).",
)
@threads_option("CPU threads for PyTorch and ONNX Runtime (default: theirs).")
@device_option(
    "Device of the PyTorch backends (the runtime backends name their own).",
    choices=("cpu", "cuda"),
    default="cpu",
)
@seed_option(help="Seed of the synthetic scene.")
@click.option(
    "--attention-budget-mib",
    type=FINITE_POSITIVE,
    default=256.0,
    show_default=True,
    help="The runtime's attention memory budget for backends that hold the attention scores (ort-plain, "
    "openvino-plain, int8 exports on ONNX Runtime): targets per decoder call follow from it.",
)
@click.option(
    "--quantized-export",
    type=click.Path(file_okay=False),
    default=None,
    help="An int8/fp8 export of the same model (viewrt calib): adds the openvino-int8 and ort-int8 columns (or -fp8).",
)
@click.option(
    "--gemm-size",
    type=click.IntRange(min=16),
    default=2048,
    show_default=True,
    help="Side of the large square GEMM of the roofline probes (each precision's peak is the best "
    "GEMM rate of numpy, torch, ONNX Runtime and OpenVINO at this size and at the model's MLP shape).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--frames",
    "frame_counts",
    type=IntList(),
    default=None,
    help="Token-window exports: frames-seen counts reported (comma-separated; default 8,16,32,64).",
)
@click.option(
    "--windows",
    type=IntList(),
    default=None,
    help="Token-window exports: window sizes to run (comma-separated; default: the export's).",
)
@click.option(
    "--pinned",
    type=click.IntRange(min=1),
    default=None,
    help="Token-window exports: pinned (scale) frames (default: the export's).",
)
@click.pass_context
@cli_errors
def bench(
    ctx,
    export_dir,
    out_dir,
    views,
    targets,
    backends,
    repeats,
    warmup,
    max_seconds_per_point,
    threads,
    device,
    seed,
    attention_budget_mib,
    quantized_export,
    gemm_size,
    quiet,
    frame_counts,
    windows,
    pinned,
):
    """Add-view latency of the runtime vs PyTorch (eager, torch.compile) and
    full-recompute baselines (LVSM decoder-only, Efficient-LVSM without cache), with
    memory, component breakdown, compile times and achieved GFLOP/s against each
    precision's measured GEMM peak; writes results.csv/json, summary.md and plots to OUT.

    On a token-window export (a streaming model, e.g. gct-stream): per-frame step latency of
    the runtime against PyTorch eager streaming (torch-stream) and full causal recompute
    (torch-recompute), by frames seen (--frames) and window (--windows), and memory per cached
    frame; results.csv/json, summary.md, latency_vs_frames.png, latency_vs_window.png."""
    require_report_extra("viewrt bench")  # before anything is written
    manifest = load_manifest(export_dir, verify=False)
    check_apart(out_dir, {"the export": export_dir, "the quantized export": quantized_export})
    stream = manifest.memory == "token-window"
    _refuse_other_family(ctx, manifest, stream)
    if stream:
        load_manifest(export_dir)  # verified now
        req = StreamBenchRequest(
            export_dir=Path(export_dir),
            out=Path(out_dir),
            frames=frame_counts or [8, 16, 32, 64],
            windows=windows,
            pinned=pinned,
            backends=backends,
            repeats=repeats,
            warmup=warmup,
            max_seconds_per_point=max_seconds_per_point,
            threads=threads,
            device=device,
            seed=seed,
            progress=not quiet,
        )
        click.echo(bench_stream(req, manifest))
        return
    cfg = BenchConfig(
        export_dir=Path(export_dir),
        out=Path(out_dir),
        views=views,
        targets=targets,
        backends=backends,
        repeats=repeats,
        warmup=warmup,
        max_seconds_per_point=max_seconds_per_point,
        threads=threads,
        device=device,
        seed=seed,
        attention_budget_mib=attention_budget_mib,
        quantized_export=Path(quantized_export) if quantized_export else None,
        runtime=runtime_access(),
        gemm_size=gemm_size,
    )

    def make_baselines(manifest):
        from viewrt.models.baselines import TorchBaselines

        if manifest.family != "efficient-lvsm":
            raise ViewrtError(
                f"{export_dir}: holds a {manifest.family!r} export; the PyTorch baselines need an Efficient-LVSM export"
            )
        return TorchBaselines(manifest, device, threads)

    _, text = run_bench(cfg, make_baselines, progress=not quiet)
    click.echo(text)
