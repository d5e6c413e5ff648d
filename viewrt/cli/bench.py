"""``viewrt bench``: the torch-free harness (viewrt.bench) composed with the
PyTorch baselines (viewrt.models.baselines)."""

from __future__ import annotations

from pathlib import Path

import click

from viewrt.bench.harness import (
    QUANTIZED,
    BenchConfig,
    parse_backends,
    parse_int_list,
    run_bench,
)
from viewrt.cli._errors import cli_errors, finite_float, require_report_extra
from viewrt.errors import ViewrtError
from viewrt.runtime.backends import CONFIGS

FINITE_POSITIVE, FINITE_NONNEGATIVE = finite_float(True), finite_float(False)

# The bench vocabulary: runtime configurations, then the PyTorch baselines (names kept here so
# that `--help` needs no torch; tests check it equals models.baselines.BASELINES).
BASELINE_NAMES = ("torch-fp32", "torch-bf16", "torch-cat", "efflvsm-nocache", "lvsm")
BACKEND_NAMES = [*CONFIGS, *QUANTIZED, *BASELINE_NAMES]


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
    help=f"Comma-separated, of: {', '.join(BACKEND_NAMES)} (default: all available).",
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
        parse_backends(backends, BACKEND_NAMES),
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
