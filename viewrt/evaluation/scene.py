"""One scene, view by view: add its input views one at a time, render and score its
targets after each, and write every step (``viewrt infer``; see the package docstring
for the files and the decisions)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from viewrt.data import load_frame, load_scene
from viewrt.errors import ViewrtError
from viewrt.evaluation.writers import (
    METRICS_NOTE,
    UNTRAINED,
    UNTRAINED_BANNER,
    contact_sheet,
    jsonable,
    mean,
    peak_rss_bytes,
    plot_steps,
    step_row,
    write_csv,
    write_json,
)
from viewrt.geometry import Camera, NormalizationFrame, image_to_uint8, uint8_to_image
from viewrt.metrics import LPIPS_NOTE, psnr, ssim

FRAME_SOURCE = "all input and target cameras of the scene (known up front; as upstream)"


class BackendUnavailable(ViewrtError):
    """The renderer could not be made (export, backend, device): no scene can run."""


def progress_bar(iterable, **kw):
    """tqdm over ``iterable``, off when stderr is not a terminal."""
    return tqdm(
        iterable, disable=None, dynamic_ncols=True, **kw
    )  # disable=None: off when not a TTY


def load_images(scene, frames: Sequence[int], size: int, check_intrinsics: bool = True) -> dict:
    """``{frame index: (image [3, size, size] float32 in [0, 1], Camera)}`` of a scene's frames.

    Raises: ViewrtError naming the scene and the frame for a missing or unreadable image.
    """
    out = {}
    for i in dict.fromkeys(frames):
        try:
            image, fxfycxcy, c2w = load_frame(
                scene.frames[i], size, check_intrinsics=check_intrinsics
            )
        except ViewrtError as e:
            raise ViewrtError(f"scene {scene.name!r} ({scene.path}) frame {i}: {e}") from None
        out[i] = (image, Camera(c2w, fxfycxcy))
    return out


def run_scene(
    renderer,
    scene,
    out_dir: str | Path,
    inputs: Sequence[int],
    targets: Sequence[int],
    *,
    size: int | None = None,
    warmup: bool = True,
    progress: bool = True,
    extra: dict | None = None,
    check_intrinsics: bool = True,
) -> dict:
    """Add a scene's input views one at a time; after each, render and score the targets.

    Writes ``view_NNN/images/target_{k}_{pred,gt}.png`` and ``view_NNN/metrics.json`` per
    step, then ``summary.csv``, ``summary.json``, ``steps.png`` and ``contact_sheet.png``
    into ``out_dir`` (step folders of an earlier run there are removed first).

    Args:
        renderer: a renderer with the runtime's API (``viewrt.runtime.Renderer``,
            ``TorchRenderer``), which is reset first and keeps its own normalization frame;
            or a factory ``frame -> renderer`` called once with the frame computed from
            all input and target cameras (the renderer it returns is closed at the end).
        scene: a :class:`viewrt.data.Scene` or the path of a scene JSON.
        out_dir: output folder (created).
        inputs: frame indices, added in this order.
        targets: frame indices rendered after every added view.
        size: image side; default the renderer's ``size`` (needed with a factory).
        warmup: run one discarded add + render + reset first, so step 0's latency does not
            include first-call setup.
        progress: show a progress bar over the views (only on a terminal).
        extra: more fields for summary.json (e.g. the export and backend).
        check_intrinsics: check every frame's intrinsics against its image
            (:func:`viewrt.data.check_intrinsics_plausible`); False for an unusual lens.
    Returns:
        The scene summary (what summary.json holds): selection, frame source, per-step
        metrics, latencies and memory, and the final step.
    Raises:
        ViewrtError: a missing or unreadable scene or image (named with scene and frame),
            bad indices, or a renderer error. BackendUnavailable when the factory fails.
    """
    if not hasattr(scene, "frames"):
        scene = load_scene(scene)
    inputs, targets = _checked_frames(scene, inputs, targets)
    is_instance = hasattr(renderer, "add_view")
    if size is None:
        if not is_instance:
            raise ViewrtError("run_scene: pass size= when renderer is a factory")
        size = int(renderer.size)

    t_load = time.perf_counter()
    data = load_images(
        scene, [*inputs, *targets], size, check_intrinsics
    )  # every image error before any work
    load_ms = (time.perf_counter() - t_load) * 1e3
    gt_u8 = [image_to_uint8(data[t][0]) for t in targets]

    r, owned, frame_source = _renderer(renderer, data, [*inputs, *targets])
    try:
        out_dir = _prepare_out(Path(out_dir))
        if warmup:
            first = data[inputs[0]]
            r.add_view(first[0], first[1])
            r.render([data[targets[0]][1]])
            r.reset()
        steps, sheet = _add_views(r, scene, data, inputs, targets, gt_u8, out_dir, progress)
        info = r.info()
    finally:
        if owned and hasattr(r, "close"):
            r.close()

    summary = _scene_summary(
        scene,
        out_dir,
        info,
        steps,
        extra=extra,
        size=size,
        inputs=inputs,
        targets=targets,
        frame_source=info.get("frame_source", frame_source) if is_instance else frame_source,
        warmup=warmup,
        load_ms=load_ms,
    )
    untrained = (extra or {}).get("weights") == UNTRAINED
    write_json(out_dir / "summary.json", summary)
    write_csv(out_dir / "summary.csv", summary["steps"])
    plot_steps(
        summary["steps"],
        out_dir / "steps.png",
        f"{scene.name} ({summary['renderer']})" + (UNTRAINED_BANNER if untrained else ""),
    )
    contact_sheet(sheet, gt_u8, targets, inputs, out_dir / "contact_sheet.png", untrained)
    return jsonable(summary)


def _checked_frames(scene, inputs, targets) -> tuple[list[int], list[int]]:
    """The frame indices as ints, at least one of each, all within the scene."""
    inputs, targets = [int(i) for i in inputs], [int(i) for i in targets]
    if not inputs or not targets:
        raise ViewrtError(
            f"scene {scene.name!r}: need at least one input and one target frame, got inputs {inputs}, targets {targets}"
        )
    n = len(scene.frames)
    bad = [i for i in [*inputs, *targets] if not 0 <= i < n]
    if bad:
        raise ViewrtError(
            f"scene {scene.name!r} ({scene.path}): frame(s) {bad} out of range; the scene has {n} frames"
        )
    return inputs, targets


def _renderer(renderer, data: dict, frames: list[int]):
    """(renderer, whether it is ours to close, frame source): an instance is reset and keeps
    its own frame; a factory is called with the frame of all the scene's cameras."""
    if hasattr(renderer, "add_view"):
        renderer.reset()
        return renderer, False, "the renderer's own"
    frame = NormalizationFrame.from_cameras(np.stack([data[i][1].c2w for i in frames]))
    try:
        return renderer(frame), True, FRAME_SOURCE
    except BackendUnavailable:
        raise
    except ViewrtError as e:
        raise BackendUnavailable(str(e)) from None


def _prepare_out(out_dir: Path) -> Path:
    """Create ``out_dir`` and remove the step folders an earlier run wrote there (only
    view_NNN/ holding metrics.json)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for p in out_dir.glob("view_[0-9][0-9][0-9]"):
            if p.is_dir() and (p / "metrics.json").is_file():
                shutil.rmtree(p)
    except OSError as e:
        raise ViewrtError(f"cannot write to {out_dir}: {e}") from None
    return out_dir


def _add_views(r, scene, data, inputs, targets, gt_u8, out_dir: Path, progress: bool):
    """Add the inputs in turn, render and score the targets after each, write each step.
    Returns (step records, contact-sheet rows: (8-bit predictions, added view, PSNRs))."""
    target_cams = [data[t][1] for t in targets]
    gt = [uint8_to_image(g) for g in gt_u8]  # scored against the ground truth as written
    steps, sheet = [], []
    bar = (
        progress_bar(inputs, desc=f"{scene.name}", unit="view", leave=False) if progress else inputs
    )
    for step, frame_idx in enumerate(bar):
        image, cam = data[frame_idx]
        r.add_view(image, cam)
        add_t = dict(r.last_timings)
        pred = r.render(target_cams)
        render_t = dict(r.last_timings)
        pred_u8 = [image_to_uint8(p) for p in pred]
        step_dir = out_dir / f"view_{step:03d}"
        per_target = _score_targets(step_dir, targets, pred_u8, gt_u8, gt)
        record = {
            "scene": scene.name,
            "step": step,
            "views": step + 1,
            "added_frame": frame_idx,
            "input_frames": inputs[: step + 1],
            "target_frames": targets,
            "targets": per_target,
            "psnr_mean": mean(x["psnr"] for x in per_target),
            "ssim_mean": mean(x["ssim"] for x in per_target),
            "lpips": None,
            "latency_ms": _latency(add_t, render_t),
            "cache": _cache_info(r.info()),
            "peak_rss_bytes": peak_rss_bytes(),
        }
        write_json(step_dir / "metrics.json", record)
        steps.append(record)
        sheet.append((pred_u8, image_to_uint8(image), [x["psnr"] for x in per_target]))
    return steps, sheet


def _score_targets(step_dir: Path, targets, pred_u8, gt_u8, gt) -> list[dict]:
    """Write one step's predictions and ground truths as PNGs; PSNR/SSIM of each target."""
    (step_dir / "images").mkdir(parents=True, exist_ok=True)
    per_target = []
    for k, (t, p8, g8, g) in enumerate(zip(targets, pred_u8, gt_u8, gt)):
        Image.fromarray(p8).save(step_dir / "images" / f"target_{k}_pred.png")
        Image.fromarray(g8).save(step_dir / "images" / f"target_{k}_gt.png")
        p = uint8_to_image(p8)
        per_target.append(
            {
                "target": k,
                "frame": t,
                "psnr": psnr(p, g),
                "ssim": ssim(p, g),
                "pred": f"images/target_{k}_pred.png",
                "gt": f"images/target_{k}_gt.png",
            }
        )
    return per_target


def _latency(add_t: dict, render_t: dict) -> dict:
    add_total = float(add_t.get("total", sum(add_t.values())))
    render_total = float(render_t.get("total", sum(render_t.values())))
    return {"add_view": add_t, "render": render_t, "total": add_total + render_total}


def _cache_info(info: dict) -> dict:
    return {
        "views": info.get("views"),
        "bytes_used": info.get("bytes_used"),
        "bytes_reserved": info.get("bytes_reserved"),
        "bytes_per_view": info.get("bytes_per_view"),
    }


def _scene_summary(
    scene, out_dir, info, steps, *, extra, size, inputs, targets, frame_source, warmup, load_ms
) -> dict:
    """What summary.json of one scene holds."""
    return {
        "scene": scene.name,
        "scene_json": str(scene.path),
        "out_dir": str(out_dir),
        "status": "ok",
        **(extra or {}),
        "renderer": info.get("backend"),
        "device": info.get("device"),
        "precision_in_use": info.get("precision"),
        "image_size": size,
        "input_frames": inputs,
        "target_frames": targets,
        "frame_source": frame_source,
        "frame": info.get("frame"),
        "metrics_note": METRICS_NOTE,
        "lpips": None,
        "lpips_note": LPIPS_NOTE,
        "latency_note": "renderer per-component timings of one run after one discarded warm-up add+render"
        if warmup
        else "renderer per-component timings of one run, no warm-up",
        "memory_note": "peak_rss_bytes: process peak resident set size so far (host memory only)",
        "image_load_ms": load_ms,
        "steps": [step_row(s) for s in steps],
        "final": step_row(steps[-1]),
    }
