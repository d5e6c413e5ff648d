"""``viewrt bench``: the torch-free harness (viewrt.bench) composed with the
PyTorch baselines (viewrt.models.baselines)."""

from __future__ import annotations

from pathlib import Path

import click

from viewrt.bench.harness import (
    BenchConfig,
    parse_backends,
    parse_int_list,
    run_bench,
    runtime_names,
)
from viewrt.cli._errors import cli_errors, finite_float, require_report_extra
from viewrt.errors import ViewrtError
from viewrt.runtime import backends as registry

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
    """The bench vocabulary: the runtime's configurations from its registry (and their
    quantized columns), then the PyTorch baselines."""
    return [*runtime_names(), *baseline_names()]


@click.command("bench")
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Output folder."
)
@click.option(
    "--views",
    default="1,2,4,8,16,32,48,64",
    show_default=True,
    help="Cached-view counts N (comma-separated).",
)
@click.option(
    "--targets", default="1,8", show_default=True, help="Target-view counts (comma-separated)."
)
@click.option(
    "--backends",
    default=None,
    help="Comma-separated: runtime configurations of the backend registry (viewrt.runtime.backends: "
    f"{', '.join(registry.CONFIGS)}, and any registered), their quantized columns (e.g. ort-int8, "
    "with --quantized-export) and the PyTorch baselines of viewrt.models.baselines "
    "(default: all available; an unknown name lists them all).",
)
@click.option(
    "--repeats",
    type=int,
    default=5,
    show_default=True,
    help="Timed repetitions per point (median reported).",
)
@click.option(
    "--warmup", type=int, default=2, show_default=True, help="Untimed repetitions before them."
)
@click.option(
    "--max-seconds-per-point",
    type=FINITE_NONNEGATIVE,
    default=20.0,
    show_default=True,
    help="Budget of a full-recompute point; over it: 1 target scaled, or extrapolated from FLOPs (0: no budget).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads for PyTorch and ONNX Runtime (default: theirs).",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Device of the PyTorch backends (the runtime backends name their own).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic scene.")
@click.option(
    "--attention-budget-mib",
    type=FINITE_POSITIVE,
    default=256.0,
    show_default=True,
    help="The runtime's attention memory budget on ONNX Runtime (targets per decoder call follow from it).",
)
@click.option(
    "--quantized-export",
    type=click.Path(file_okay=False),
    default=None,
    help="An int8/fp8 export of the same model (viewrt calib): adds the openvino-int8 and ort-int8 columns (or -fp8).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@cli_errors
def bench(
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
    quiet,
):
    """Add-view latency of the runtime vs PyTorch eager and full-recompute baselines
    (LVSM decoder-only, Efficient-LVSM without cache), with memory, component breakdown
    and achieved GFLOP/s; writes results.csv/json, summary.md and plots to OUT."""
    require_report_extra("viewrt bench")  # before anything is written
    cfg = BenchConfig(
        Path(export_dir),
        Path(out_dir),
        parse_int_list(views, "--views"),
        parse_int_list(targets, "--targets"),
        parse_backends(backends, backend_names()),
        repeats,
        warmup,
        max_seconds_per_point,
        threads,
        device,
        seed,
        attention_budget_mib,
        Path(quantized_export) if quantized_export else None,
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
