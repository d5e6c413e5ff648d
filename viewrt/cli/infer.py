"""``viewrt infer``: the CLI over the view-by-view evaluation (viewrt.evaluation):
renderers from the runtime registry, or PyTorch eager from the export's preset and weights."""

from __future__ import annotations

from pathlib import Path

import click

from viewrt.cli._errors import cli_errors, require_report_extra
from viewrt.errors import ViewrtError
from viewrt.evaluation import (
    DEFAULT_TARGETS,
    SYNTHETIC_FRAMES,
    UNTRAINED,
    BackendUnavailable,
    mean,
    parse_targets,
    run_list,
    run_scene,
    scene_line,
    select_frames,
)
from viewrt.folders import locked_folder
from viewrt.runtime import backends as registry


def _renderer_factory(
    export_dir: Path, backend: str, device: str | None, precision: str | None = None
):
    """(factory frame -> renderer, manifest) for a backend; the torch model is built once."""
    from viewrt.contract.manifest import load_manifest

    manifest = load_manifest(export_dir)
    if precision is not None and backend != "openvino":
        raise ViewrtError(
            f"--precision applies to --backend openvino; {backend} computes in the export's precision"
        )
    if backend in registry.names():
        import viewrt.runtime as vrt

        def open_renderer(frame):
            try:
                return vrt.open(
                    export_dir, backend, device=device, frame=frame, precision=precision
                )
            except ViewrtError as e:
                raise BackendUnavailable(f"--backend {backend}: {e}") from None

        return open_renderer, manifest
    if backend != "torch":
        raise ViewrtError(
            f"unknown backend {backend!r}; expected one of {', '.join(BackendChoice().choices)}"
        )
    family = manifest.family
    if family != "efficient-lvsm":
        raise ViewrtError(
            f"{export_dir}: the torch backend renders Efficient-LVSM exports, this one is {family!r}"
        )
    from viewrt.models import build_model
    from viewrt.models.checkpoint import weights_digest
    from viewrt.models.torch_renderer import TorchRenderer

    preset, checkpoint = manifest.preset, manifest.checkpoint
    model, _ = build_model(preset, checkpoint)
    digest, want = weights_digest(model), manifest.weights_sha256
    if digest != want:
        src = f"checkpoint {checkpoint}" if checkpoint else "the built-in weights"
        raise ViewrtError(
            f"{export_dir}: preset {preset!r} with {src} gives weights {digest[:12]}, but the export was made from "
            f"weights {str(want)[:12]}; the torch backend cannot reproduce this export"
        )
    dev = device or "cpu"
    import torch

    try:
        torch.device(dev)
    except RuntimeError:
        raise ViewrtError(f"--device {dev!r}: not a torch device (cpu, cuda, cuda:N)") from None
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ViewrtError(
            f"--device {dev}: this PyTorch has no CUDA device (it is a CPU build, or no GPU is visible)"
        )
    return (lambda frame: TorchRenderer(model, manifest.max_views, frame, device=dev)), manifest


def _report_against_fp32(factory, factory_fp32, scene, sel: dict, size: int, out: Path) -> None:
    """Reduced precision (OpenVINO bf16/f16): the same views on f32, max abs image error and
    PSNR against it per step, into summary.json ("precision_vs_fp32") and one line."""
    import json

    import numpy as np

    from viewrt.evaluation import load_images, write_json
    from viewrt.evaluation.precision import against_fp32
    from viewrt.geometry import NormalizationFrame

    data = load_images(scene, [*sel["inputs"], *sel["targets"]], size)
    frame = NormalizationFrame.from_cameras(
        np.stack([data[i][1].c2w for i in [*sel["inputs"], *sel["targets"]]])
    )
    cmp = against_fp32(
        lambda: factory(frame),
        lambda: factory_fp32(frame),
        [data[i] for i in sel["inputs"]],
        [data[t][1] for t in sel["targets"]],
    )
    path = out / "summary.json"
    summary = json.loads(path.read_text())
    summary["precision_vs_fp32"] = cmp
    write_json(path, summary)
    click.echo(
        f"{cmp['precision']} vs {cmp['reference_precision']} (same backend, float images): max abs {cmp['max_abs']:.2e}, "
        f"PSNR {cmp['psnr_db_min']:.1f} dB (worst step); per step in {path}"
    )


def _echo(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line)  # does not break a progress bar on the terminal


def _infer(
    export_dir,
    scene_json,
    list_file,
    index_file,
    views,
    targets,
    backend,
    device,
    out_dir,
    data_roots=(),
    check_intrinsics=True,
    precision=None,
):
    from viewrt.data import DataRoots, load_eval_index, load_scene, load_scene_list

    if scene_json and list_file:
        raise ViewrtError("pass either --scene or --list, not both")
    if views is not None and views < 1:
        raise ViewrtError(f"--views must be at least 1, got {views}")
    target_list = parse_targets(targets)
    roots = DataRoots.parse(data_roots)
    out = Path(out_dir)
    require_report_extra("viewrt infer")  # before anything is written
    factory, manifest = _renderer_factory(Path(export_dir), backend, device, precision)
    probe = factory(None)  # the backend and device work, before anything is written
    if hasattr(probe, "close"):
        probe.close()
    if views is not None and views > manifest.max_views:
        raise ViewrtError(
            f"--views {views} exceeds the cache capacity of the export {export_dir} ({manifest.max_views} views; "
            "re-export with a larger --max-views)"
        )
    index = load_eval_index(index_file) if index_file else None
    scenes = load_scene_list(list_file) if list_file else None
    scene = (
        load_scene(scene_json, roots) if scene_json is not None else None
    )  # a bad scene file: one error, nothing written
    from viewrt.runtime.estimate import echo_estimate

    echo_estimate(export_dir, views, device=device or "cpu")  # the memory estimate first

    # a failed single-scene run leaves no half-written folder (a list run keeps its summary of the failures)
    def clean(e: BaseException) -> bool:
        return not (list_file and (out / "summary.json").exists() and isinstance(e, ViewrtError))

    with locked_folder(out, "--out", clean_on_error=clean):
        from viewrt.data import load_scene, make_synthetic_scene
        from viewrt.failures import summarize_failures

        size = manifest.image_size
        checkpoint = manifest.checkpoint
        extra = {
            "export_dir": str(export_dir),
            "preset": manifest.preset,
            "precision": manifest.precision,
            "weights": checkpoint or UNTRAINED,
            "backend": backend,
            "index": str(index_file) if index_file else None,
        }
        note = (
            ""
            if checkpoint
            else f"note: {export_dir} holds the built-in untrained weights: the renders test the pipeline "
            "and look like noise; export a real checkpoint (viewrt export --checkpoint ...) for meaningful images"
        )
        if list_file:
            summary = run_list(
                factory,
                scenes,
                out,
                size,
                views=views,
                targets=target_list,
                index=index,
                max_views=manifest.max_views,
                extra={**extra, "list": str(list_file)},
                echo=_echo,
                roots=roots.for_list(list_file),
                check_intrinsics=check_intrinsics,
            )
            click.echo(
                f"{summary['n_ok']} of {summary['n_scenes']} scene(s) ran ({summary['n_skipped']} skipped); wrote {out}/summary.json"
            )
            if note:
                click.echo(note)
            if summary["n_failed"]:
                raise ViewrtError(
                    summarize_failures(
                        summary["failed"], summary["n_scenes"], str(out / "summary.json")
                    )
                )
            return
        if scene is None:
            n_frames = max(
                SYNTHETIC_FRAMES,
                (views or 0) + (len(target_list) if target_list else DEFAULT_TARGETS),
            )
            scene_json = make_synthetic_scene(
                out / "_scene", "synthetic", n_views=n_frames, size=size, seed=0
            )
            extra["scene_source"] = f"synthetic scene generated into {scene_json.parent}"
            scene = load_scene(scene_json, roots)
        sel = select_frames(scene, views, target_list, index, manifest.max_views)
        s = run_scene(
            factory,
            scene,
            out,
            sel["inputs"],
            sel["targets"],
            size=size,
            extra={**extra, "selection": sel["selection"]},
            check_intrinsics=check_intrinsics,
        )
        f = s["final"]
        click.echo(
            scene_line(
                {
                    "status": "ok",
                    "scene": s["scene"],
                    "views": f["views"],
                    "psnr_mean": f["psnr_mean"],
                    "ssim_mean": f["ssim_mean"],
                    "step_ms_mean": mean(r["step_ms"] for r in s["steps"]),
                    "out_dir": out,
                }
            )
        )
        if backend == "openvino" and s.get("precision_in_use") != "fp32":
            _report_against_fp32(
                factory,
                _renderer_factory(Path(export_dir), backend, device, "f32")[0],
                scene,
                sel,
                size,
                out,
            )
        if note:
            click.echo(note)


class BackendChoice(click.Choice):
    """``--backend``: the names of the runtime's backend registry, read when the command
    runs (so a backend registered after import counts), then "torch"."""

    def __init__(self):
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        return (*registry.names(), "torch")

    @choices.setter
    def choices(self, _value) -> None:
        pass  # the registry is the one list


@click.command("infer")
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option(
    "--scene",
    "scene_json",
    type=click.Path(dir_okay=False),
    default=None,
    help="Scene JSON (LVSM RealEstate10K format). Default: a synthetic scene generated into OUT/_scene.",
)
@click.option(
    "--list",
    "list_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="List file, one scene JSON per line: scenes run in turn into OUT/<scene_name>/.",
)
@click.option(
    "--index",
    "index_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Evaluation index (pixelSplat): inputs from a scene's context views (upstream's rule), targets its targets; "
    "scenes it lists as null or not at all are skipped. See docs/data.md.",
)
@click.option(
    "--views",
    type=int,
    default=None,
    help="Input views to add, one at a time. Default: every frame that is not a target (at most the export's max_views); "
    "with --index, the scene's context views.",
)
@click.option(
    "--targets",
    default=None,
    help="Target frame indices, comma-separated (e.g. 2,5). Default: 2 frames at 1/3 and 2/3 of the sequence; "
    "the inputs are then the first frames that are not targets.",
)
@click.option(
    "--backend",
    type=BackendChoice(),
    default="ort",
    show_default=True,
    help="ort: ONNX Runtime; openvino: OpenVINO CPU; trt: TensorRT engines (viewrt build); torch: PyTorch eager from "
    "the export's preset and weights (and the other runtime configurations: ort-cuda, ort-trt, openvino-f32).",
)
@click.option(
    "--precision",
    type=click.Choice(["f32", "bf16", "f16"]),
    default=None,
    help="openvino only: inference precision (default: OpenVINO's for this CPU, bf16 with AMX or AVX512-BF16). "
    "Below f32, the max abs image error and PSNR against f32 are reported too.",
)
@click.option(
    "--device",
    default=None,
    help="Device: cpu, cuda[:N] (ort, torch), tensorrt[:N] (ort). Default: cpu (ort, torch), cuda:0 (trt).",
)
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Output folder."
)
@click.option(
    "--data-root",
    "data_roots",
    multiple=True,
    metavar="OLD=NEW",
    help="Data moved from another machine: read paths starting with OLD (list lines, image_path) under NEW. "
    "Repeatable. Without it, missing absolute paths are looked for under the list's or scene's own root.",
)
@click.option(
    "--no-intrinsics-check",
    is_flag=True,
    help="Accept intrinsics that do not look like a pinhole camera for the image (unusual lenses).",
)
def infer(
    export_dir,
    scene_json,
    list_file,
    index_file,
    views,
    targets,
    backend,
    precision,
    device,
    out_dir,
    data_roots,
    no_intrinsics_check,
):
    """Add views one at a time and render the targets after each: images, PSNR/SSIM,
    latency by component, cache size and peak memory per step.

    Writes OUT/view_NNN/images/target_K_{pred,gt}.png and OUT/view_NNN/metrics.json per
    step, and OUT/summary.csv, summary.json, steps.png, contact_sheet.png. With --list,
    one such folder per scene (OUT/<scene_name>/) and an overall OUT/summary.*; a scene
    that fails is reported there and the others still run (exit status 1 at the end).
    Metrics are computed on the 8-bit images as written; LPIPS is not computed. The scene
    normalization frame comes from all input and target cameras.
    """
    cli_errors(_infer)(
        export_dir,
        scene_json,
        list_file,
        index_file,
        views,
        targets,
        backend,
        device,
        out_dir,
        data_roots,
        not no_intrinsics_check,
        precision,
    )
