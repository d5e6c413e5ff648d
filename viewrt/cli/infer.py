"""``viewrt infer``: the CLI over the view-by-view evaluation (viewrt.evaluation):
renderers from the runtime registry, or PyTorch eager from the export's preset and weights.

The command runs in steps, one function each: the arguments become an :class:`InferRequest`;
the renderer factory is made and probed once (:func:`_open_renderers`) and the inputs are
read (:func:`_read_inputs`), both before anything is written; then, under the folder lock,
a list run (:func:`_run_list`) or a single-scene run (:func:`_run_scene`).

viewrt.models and torch are imported only for ``--backend torch`` (see viewrt/cli/__init__.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

import viewrt.runtime as vrt
import viewrt.runtime.backends as registry
from viewrt.cli._errors import cli_errors, require_report_extra
from viewrt.cli.infer_stream import StreamRequest, infer_stream
from viewrt.cli.options import (
    FrameIndices,
    backend_option,
    device_option,
    export_dir_argument,
    list_option,
    out_option,
    refused_option,
    threads_option,
)
from viewrt.contract.manifest import Manifest, load_manifest
from viewrt.data import (
    DataRoots,
    load_eval_index,
    load_scene,
    load_scene_list,
    make_synthetic_scene,
)
from viewrt.errors import ViewrtError
from viewrt.evaluation import (
    DEFAULT_TARGETS,
    SYNTHETIC_FRAMES,
    UNTRAINED,
    BackendUnavailable,
    load_images,
    mean,
    run_list,
    run_scene,
    scene_line,
    select_frames,
    write_json,
)
from viewrt.evaluation.precision import against_fp32
from viewrt.failures import summarize_failures
from viewrt.folders import check_apart, locked_folder
from viewrt.geometry import NormalizationFrame
from viewrt.runtime.backends.openvino import PRECISIONS as INFERENCE_PRECISIONS
from viewrt.runtime.estimate import echo_estimate


def backend_names() -> list[str]:
    """``--backend`` choices, read when the command runs (a backend registered after import
    counts): the runtime registry's names, then "torch"."""
    return [*registry.names(), "torch"]


@dataclass(frozen=True)
class InferRequest:
    """What ``viewrt infer`` was asked for, parsed (see the command's options)."""

    export_dir: Path
    out: Path
    backend: str
    device: str | None = None
    inference_precision: str | None = None  # the backend's compute precision (openvino)
    views: int | None = None  # input views to add (None: the default selection)
    targets: list[int] | None = None  # target frame indices (None: the default ones)
    scene_json: Path | None = None
    list_file: Path | None = None
    index_file: Path | None = None
    roots: DataRoots = dataclasses.field(default_factory=DataRoots.parse)
    check_intrinsics: bool = True
    threads: int | None = None  # CPU threads of the backend (None: its default)


# --------------------------------------------------------------------------- renderers


def _takes_inference_precision(backend: str) -> bool:
    """Whether a backend name (configuration or torch) has a compute-precision option."""
    if backend not in registry.names():
        return False
    name, _ = registry.resolve(backend)
    return "inference_precision" in registry.backend_class(name).options


def _cache_dtype(req: InferRequest, manifest) -> str | None:
    """The K/V cache dtype the runtime backend will keep (None for torch)."""
    if req.backend not in registry.names():
        return None
    opts = (
        {"inference_precision": req.inference_precision}
        if _takes_inference_precision(req.backend)
        else {}
    )
    return registry.planned_cache_dtype(req.backend, manifest, **opts)


def _runtime_factory(req: InferRequest):
    """frame -> renderer of a runtime backend; a backend that cannot open is BackendUnavailable."""

    def open_renderer(frame):
        try:
            return vrt.open(
                req.export_dir,
                req.backend,
                device=req.device,
                frame=frame,
                inference_precision=req.inference_precision,
                threads=req.threads,
            )
        except ViewrtError as e:
            raise BackendUnavailable(f"--backend {req.backend}: {e}") from None

    return open_renderer


def _torch_device(device: str | None) -> str:
    """The torch device to run on. Raises ViewrtError for a bad or absent device."""
    import torch

    dev = device or "cpu"
    try:
        torch.device(dev)
    except RuntimeError:
        raise ViewrtError(f"--device {dev!r}: not a torch device (cpu, cuda, cuda:N)") from None
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ViewrtError(
            f"--device {dev}: this PyTorch has no CUDA device (it is a CPU build, or no GPU is visible)"
        )
    return dev


def _torch_factory(req: InferRequest, manifest: Manifest):
    """frame -> PyTorch eager renderer of the export's preset and weights (built once).

    Raises: ViewrtError when the export is not Efficient-LVSM, the weights do not reproduce
        the export's, or the device is bad.
    """
    from viewrt.models import build_model
    from viewrt.models.checkpoint import weights_digest
    from viewrt.models.torch_renderer import TorchRenderer

    if manifest.family != "efficient-lvsm":
        raise ViewrtError(
            f"{req.export_dir}: the torch backend renders Efficient-LVSM exports, this one is {manifest.family!r}"
        )
    if manifest.precision_row.quantized or manifest.kv_dtype != "float32":
        raise ViewrtError(
            f"{req.export_dir}: {manifest.precision} export (K/V cache {manifest.kv_dtype}); the torch "
            "backend renders the fp32 model, not these graphs: run the fp32 export with --backend torch, "
            "or this one with ort or openvino"
        )
    preset, checkpoint = manifest.preset, manifest.checkpoint
    model, _ = build_model(preset, checkpoint)
    digest, want = weights_digest(model), manifest.weights_sha256
    if digest != want:
        src = f"checkpoint {checkpoint}" if checkpoint else "the built-in weights"
        raise ViewrtError(
            f"{req.export_dir}: preset {preset!r} with {src} gives weights {digest[:12]}, but the export was made from "
            f"weights {str(want)[:12]}; the torch backend cannot reproduce this export"
        )
    dev = _torch_device(req.device)
    if req.threads:
        import torch

        torch.set_num_threads(req.threads)
    return lambda frame: TorchRenderer(model, manifest.max_views, frame, device=dev)


def _renderer_factory(req: InferRequest, manifest: Manifest):
    """frame -> renderer for the requested backend.

    Raises: ViewrtError for --inference-precision on a backend without that option, or
        what :func:`_torch_factory` raises.
    """
    if req.inference_precision is not None and not _takes_inference_precision(req.backend):
        raise ViewrtError(
            f"--inference-precision applies to a backend with its own compute precision (openvino); "
            f"{req.backend} computes in the export's precision"
        )
    if req.backend in registry.names():
        return _runtime_factory(req)
    return _torch_factory(req, manifest)


def _open_renderers(req: InferRequest):
    """(factory, manifest), after one renderer was opened and closed: the export, backend
    and device work, and ``--views`` fits the cache, before anything is written."""
    manifest = load_manifest(req.export_dir)
    factory = _renderer_factory(req, manifest)
    probe = factory(None)
    if hasattr(probe, "close"):
        probe.close()
    if req.views is not None and req.views > manifest.max_views:
        raise ViewrtError(
            f"--views {req.views} exceeds the cache capacity of the export {req.export_dir} "
            f"({manifest.max_views} views; re-export with a larger --max-views)"
        )
    return factory, manifest


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Inputs:
    index: dict | None  # evaluation index
    scenes: list | None  # scene paths of --list
    scene: object | None  # the --scene (None: a synthetic one is generated into OUT)


def _read_inputs(req: InferRequest) -> _Inputs:
    """The index, list and scene files, read before anything is written (a bad file: one
    error)."""
    return _Inputs(
        index=load_eval_index(req.index_file) if req.index_file else None,
        scenes=load_scene_list(req.list_file) if req.list_file else None,
        scene=load_scene(req.scene_json, req.roots) if req.scene_json is not None else None,
    )


def _summary_extra(req: InferRequest, manifest: Manifest) -> dict:
    """What summary.json records about the run besides the results."""
    return {
        "export_dir": str(req.export_dir),
        "preset": manifest.preset,
        "precision": manifest.precision,
        "weights": manifest.checkpoint or UNTRAINED,
        "backend": req.backend,
        "threads": req.threads,
        "index": str(req.index_file) if req.index_file else None,
    }


def _untrained_note(req: InferRequest, manifest: Manifest) -> str:
    if manifest.checkpoint:
        return ""
    return (
        f"note: {req.export_dir} holds the built-in untrained weights: the renders test the pipeline "
        "and look like noise; export a real checkpoint (viewrt export --checkpoint ...) for meaningful images"
    )


# --------------------------------------------------------------------------- runs


def _echo(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line)  # does not break a progress bar on the terminal


def _run_list(req: InferRequest, factory, manifest: Manifest, inputs: _Inputs, extra: dict):
    """Every scene of --list into OUT/<scene>/. Raises ViewrtError summing up failed scenes."""
    summary = run_list(
        factory,
        inputs.scenes,
        req.out,
        manifest.image_size,
        views=req.views,
        targets=req.targets,
        index=inputs.index,
        max_views=manifest.max_views,
        extra={**extra, "list": str(req.list_file)},
        echo=_echo,
        roots=req.roots.for_list(req.list_file),
        check_intrinsics=req.check_intrinsics,
    )
    click.echo(
        f"{summary['n_ok']} of {summary['n_scenes']} scene(s) ran ({summary['n_skipped']} skipped); "
        f"wrote {req.out}/summary.json"
    )
    if note := _untrained_note(req, manifest):
        click.echo(note)
    if summary["n_failed"]:
        raise ViewrtError(
            summarize_failures(
                summary["failed"], summary["n_scenes"], str(req.out / "summary.json")
            )
        )


def _synthetic_scene(req: InferRequest, size: int) -> Path:
    """A synthetic scene generated into OUT/_scene, long enough for the views and targets;
    returns its scene JSON."""
    n_frames = max(
        SYNTHETIC_FRAMES,
        (req.views or 0) + (len(req.targets) if req.targets else DEFAULT_TARGETS),
    )
    return make_synthetic_scene(
        req.out / "_scene", "synthetic", n_views=n_frames, size=size, seed=0
    )


def _run_scene(req: InferRequest, factory, manifest: Manifest, inputs: _Inputs, extra: dict):
    """One scene (--scene, or a synthetic one) into OUT; a reduced compute precision is
    compared with f32 on the same views."""
    size, scene = manifest.image_size, inputs.scene
    if scene is None:
        scene_json = _synthetic_scene(req, size)
        extra = {**extra, "scene_source": f"synthetic scene generated into {scene_json.parent}"}
        scene = load_scene(scene_json, req.roots)
    sel = select_frames(
        scene,
        views=req.views,
        targets=req.targets,
        index=inputs.index,
        max_views=manifest.max_views,
    )
    s = run_scene(
        factory,
        scene,
        req.out,
        inputs=sel["inputs"],
        targets=sel["targets"],
        size=size,
        extra={**extra, "selection": sel["selection"]},
        check_intrinsics=req.check_intrinsics,
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
                "out_dir": req.out,
            }
        )
    )
    if _takes_inference_precision(req.backend) and s.get("precision_in_use") != "fp32":
        f32 = dataclasses.replace(req, inference_precision="f32")
        _report_against_fp32(
            factory=factory,
            factory_fp32=_renderer_factory(f32, manifest),
            scene=scene,
            sel=sel,
            size=size,
            out=req.out,
        )
    if note := _untrained_note(req, manifest):
        click.echo(note)


def _report_against_fp32(*, factory, factory_fp32, scene, sel: dict, size: int, out: Path):
    """Reduced compute precision (OpenVINO bf16/f16): the same views on f32, max abs image
    error and PSNR against it per step, into summary.json ("precision_vs_fp32") and one line."""
    frames = [*sel["inputs"], *sel["targets"]]
    data = load_images(scene, frames, size)
    frame = NormalizationFrame.from_cameras(np.stack([data[i][1].c2w for i in frames]))
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


def _infer(req: InferRequest) -> None:
    """Check and open everything, then run under the folder lock."""
    require_report_extra("viewrt infer")  # before anything is written
    check_apart(
        req.out,
        {"the export": req.export_dir},
        {
            "the scene's folder": req.scene_json and Path(req.scene_json).parent,
            "the list's folder": req.list_file and Path(req.list_file).parent,
        },
    )
    factory, manifest = _open_renderers(req)
    inputs = _read_inputs(req)
    if inputs.scenes:  # nor any listed scene's own folder
        check_apart(
            req.out,
            {},
            {f"the folder of the listed scene {p}": Path(p).parent for p in inputs.scenes},
        )
    echo_estimate(  # the estimate first, with the K/V cache in the dtype the backend keeps
        req.export_dir,
        req.views,
        # the run's targets: as given, else the default selection's 2 (an index's: up to 8)
        targets=len(req.targets) if req.targets else (8 if req.index_file else 2),
        device=req.device or "cpu",
        cache_dtype=_cache_dtype(req, manifest),
    )
    extra = _summary_extra(req, manifest)

    # a failed single-scene run leaves no half-written folder (a list run keeps its summary of the failures)
    def clean(e: BaseException) -> bool:
        return not (
            req.list_file and (req.out / "summary.json").exists() and isinstance(e, ViewrtError)
        )

    with locked_folder(req.out, "--out", clean_on_error=clean):
        run = _run_list if req.list_file else _run_scene
        run(req, factory, manifest, inputs, extra)


# --------------------------------------------------------------------------- the command


def _precision_hint(value: str) -> str:
    """The one line for the old ``viewrt infer --precision``."""
    ov = {"fp32": "f32", "fp16": "f16"}.get(value, value)
    return (
        f"--precision {value} is the graph precision, which the export fixes (viewrt export, viewrt calib); "
        f"for OpenVINO's compute precision use --inference-precision "
        f"{ov if ov in INFERENCE_PRECISIONS else '|'.join(INFERENCE_PRECISIONS)}"
    )


def _refuse_options(manifest: Manifest, given: dict) -> None:
    """One line naming the options that do not apply to this export's family."""
    bad = [name for name, value in given.items() if value is not None]
    if bad:
        raise ViewrtError(
            f"{', '.join(bad)} do(es) not apply to a {manifest.family} export ({manifest.memory} memory)"
        )


@click.command("infer")
@export_dir_argument()
@click.option(
    "--scene",
    "scene_json",
    type=click.Path(dir_okay=False),
    default=None,
    help="Scene JSON (LVSM RealEstate10K format). Default: a synthetic scene generated into OUT/_scene.",
)
@list_option("List file, one scene JSON per line: scenes run in turn into OUT/<scene_name>/.")
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
    type=click.IntRange(min=1),
    default=None,
    help="Input views to add, one at a time. Default: every frame that is not a target (at most the export's max_views); "
    "with --index, the scene's context views.",
)
@click.option(
    "--targets",
    type=FrameIndices(),
    default=None,
    help="Target frame indices, comma-separated (e.g. 2,5). Default: 2 frames at 1/3 and 2/3 of the sequence; "
    "the inputs are then the first frames that are not targets.",
)
@backend_option(
    backend_names,
    "ort",
    "ort: ONNX Runtime; openvino: OpenVINO CPU; trt: TensorRT engines (viewrt build); torch: PyTorch eager from "
    "the export's preset and weights (and the other runtime configurations: ort-cuda, ort-trt, openvino-f32).",
)
@click.option(
    "--inference-precision",
    type=click.Choice(INFERENCE_PRECISIONS),
    default=None,
    help="openvino only: OpenVINO's compute precision (INFERENCE_PRECISION_HINT; the graph precision is the "
    "export's). Default: OpenVINO's for this CPU, bf16 with AMX or AVX512-BF16. Below f32, the max abs image "
    "error and PSNR against f32 are reported too.",
)
@refused_option("--precision", _precision_hint)
@device_option(
    "Device: cpu, cuda[:N] (ort, torch), tensorrt[:N] (ort). Default: cpu (ort, torch), cuda:0 (trt)."
)
@out_option()
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
@click.option(
    "--frames",
    "frames_path",
    type=click.Path(),
    default=None,
    help="Token-window (streaming) exports: the frame sequence, a scene JSON, a folder holding scene.json, or "
    "a folder of images (sorted by name; no ground truth). Default: a synthetic video sequence with "
    "ground-truth cameras and depth generated into OUT/_scene.",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=None,
    help="Token-window exports: frames attended in full, the current one included (default: the export's).",
)
@click.option(
    "--pinned",
    type=click.IntRange(min=1),
    default=None,
    help="Token-window exports: first (scale) frames kept for the whole stream (default: the export's).",
)
@threads_option("CPU threads of the backend (ONNX Runtime, OpenVINO, torch; default: theirs).")
@click.option(
    "--max-frames",
    type=click.IntRange(min=1),
    default=None,
    help="Token-window exports: run the first N frames of the sequence only.",
)
@cli_errors
def infer(
    export_dir,
    scene_json,
    list_file,
    index_file,
    views,
    targets,
    backend,
    inference_precision,
    device,
    out_dir,
    data_roots,
    no_intrinsics_check,
    frames_path,
    window,
    pinned,
    threads,
    max_frames,
):
    """Add views one at a time and render the targets after each: images, PSNR/SSIM,
    latency by component, cache size and peak memory per step.

    Writes OUT/view_NNN/images/target_K_{pred,gt}.png and OUT/view_NNN/metrics.json per
    step, and OUT/summary.csv, summary.json, steps.png, contact_sheet.png. With --list,
    one such folder per scene (OUT/<scene_name>/) and an overall OUT/summary.*; a scene
    that fails is reported there and the others still run (exit status 1 at the end).
    Metrics are computed on the 8-bit images as written; LPIPS is not computed. The scene
    normalization frame comes from all input and target cameras.

    On a token-window export (a streaming model, e.g. gct-stream), a frame sequence
    (--frames, or --scene) runs frame by frame instead: OUT/poses.{json,npz,csv} (pose_enc,
    c2w, intrinsics, errors per frame), OUT/depth/ (npy + png per frame), trajectory.png
    (against the ground-truth cameras, after aligning the first frame), latency.{json,png}
    and summary.json.
    """
    manifest = load_manifest(export_dir, verify=False)
    if manifest.memory == "token-window":
        _refuse_options(
            manifest,
            {
                "--list": list_file,
                "--index": index_file,
                "--views": views,
                "--targets": targets,
                "--inference-precision": inference_precision,
            },
        )
        if scene_json and frames_path:
            raise ViewrtError("pass either --frames or --scene, not both")
        load_manifest(export_dir)  # verified now
        require_report_extra("viewrt infer")  # before anything is written
        sreq = StreamRequest(
            export_dir=Path(export_dir),
            out=Path(out_dir),
            backend=backend,
            device=device,
            window=window,
            pinned=pinned,
            threads=threads,
            frames=Path(frames_path or scene_json) if (frames_path or scene_json) else None,
            max_frames=max_frames,
            roots=DataRoots.parse(data_roots),
            check_intrinsics=not no_intrinsics_check,
        )
        infer_stream(sreq, manifest)
        return
    _refuse_options(
        manifest,
        {
            "--frames": frames_path,
            "--window": window,
            "--pinned": pinned,
            "--max-frames": max_frames,
        },
    )
    if scene_json and list_file:
        raise ViewrtError("pass either --scene or --list, not both")
    req = InferRequest(
        export_dir=Path(export_dir),
        out=Path(out_dir),
        backend=backend,
        device=device,
        inference_precision=inference_precision,
        views=views,
        targets=targets,
        scene_json=Path(scene_json) if scene_json is not None else None,
        list_file=Path(list_file) if list_file else None,
        index_file=Path(index_file) if index_file else None,
        roots=DataRoots.parse(data_roots),
        check_intrinsics=not no_intrinsics_check,
        threads=threads,
    )
    _infer(req)
