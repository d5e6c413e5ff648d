"""View-by-view evaluation (``viewrt infer``): add a scene's views one at a time, render its
targets after each, and write images, metrics and latencies per step. Torch-free: it
drives any object with the renderer interface (add_view, render, reset, info,
last_timings), made by a factory ``frame -> renderer`` that the caller supplies.

Output of one scene (``out_dir``)::

    view_000/images/target_{k}_pred.png, target_{k}_gt.png   # k: position in the targets
    view_000/metrics.json    # PSNR/SSIM per target and mean, latency by component,
    view_001/...             # cache views/bytes, peak RSS
    summary.csv, summary.json, steps.png, contact_sheet.png

With a list file each scene goes to ``OUT/<scene_name>/`` and ``OUT/summary.{csv,json}``
and ``OUT/steps.png`` cover all scenes (failed ones are listed with their error).

Decisions (recorded in summary.json too):

* Metrics are computed on the images exactly as written: the prediction and the ground
  truth are quantized to 8 bits (:func:`viewrt.geometry.image_to_uint8`) first, so every
  number can be recomputed from the PNGs. LPIPS is not computed (``"lpips": null`` with
  the reason, :data:`viewrt.metrics.LPIPS_NOTE`). An infinite PSNR (identical images) is
  written as ``null``: JSON has no infinity.
* Scene normalization: an offline run knows every camera up front, so the frame is
  computed from the cameras of all input and target views, as upstream does, and handed
  to the renderer before the first view is encoded.
* Latency of a step is the renderer's own per-component timing (``last_timings``) of the
  ``add_view`` and the ``render`` calls. One add + render + reset runs first as a
  warm-up and is discarded; this is a single run, not a benchmark (see ``viewrt bench``).
* Peak memory is the process's peak resident set size so far (``ru_maxrss``; device
  memory is not included).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from viewrt.errors import ViewrtError

ECHO_FAILURES = 3  # failed scenes echoed one by one in a list run; the rest only in summary.json
DEFAULT_TARGETS = 2
SYNTHETIC_FRAMES = 8
FRAME_SOURCE = "all input and target cameras of the scene (known up front; as upstream)"
UNTRAINED = "built-in, untrained"
UNTRAINED_BANNER = " - UNTRAINED WEIGHTS: predictions are noise"
METRICS_NOTE = "PSNR and SSIM are computed on the 8-bit images as written to disk (prediction and ground truth)"

__all__ = ["run_scene", "run_list", "select_frames", "SceneSkipped", "BackendUnavailable"]


class SceneSkipped(ViewrtError):
    """The evaluation index lists the scene as null, or not at all (upstream skips it)."""


class BackendUnavailable(ViewrtError):
    """The renderer could not be made (export, backend, device): no scene can run."""


# --------------------------------------------------------------------------- frame choice


def default_targets(n_frames: int, count: int = DEFAULT_TARGETS) -> list[int]:
    """``count`` frames evenly spaced inside the sequence: for 2 targets, the frames nearest
    1/3 and 2/3 of the way (8 frames: 2 and 5), so inputs lie on both sides of them; the
    last ``count`` frames where the sequence is too short to spread them (3 frames: 1, 2)."""
    if n_frames < count + 1:
        raise ViewrtError(
            f"need at least {count + 1} frames for {count} default targets and one input view, got {n_frames}"
        )
    picks = sorted(
        {int(math.floor(i * (n_frames - 1) / (count + 1) + 0.5)) for i in range(1, count + 1)}
    )
    return (
        picks if len(picks) == count else list(range(n_frames - count, n_frames))
    )  # too few frames to spread


def select_frames(
    scene,
    views: int | None = None,
    targets: Sequence[int] | None = None,
    index: dict | None = None,
    max_views: int | None = None,
) -> dict:
    """Choose the input frames (added in order) and the target frames of a scene.

    With an evaluation ``index``: a scene it lists gets its inputs from the entry's
    context by upstream's rule (:func:`viewrt.data.select_index_frames`: ``views`` of
    2 from ``[0, 3, 6, 9]`` is ``[0, 9]``; more views than the context lists are spread
    between its first and last frame) and the entry's targets; a scene it lists as null
    or does not list is skipped, as upstream. Without an index the targets are
    ``targets`` or :func:`default_targets`, and the inputs are the first ``views`` frames
    that are not targets (default: all of them, at most ``max_views``).

    Args:
        scene: a :class:`viewrt.data.Scene`.
        views: number of input views (>= 1), or None.
        targets: target frame indices, or None.
        index: an evaluation index from :func:`viewrt.data.load_eval_index`, or None.
        max_views: the renderer's cache capacity (None: no limit).
    Returns:
        ``{"inputs": [...], "targets": [...], "selection": str}``.
    Raises:
        SceneSkipped: an index is given and lists the scene as null, or not at all.
        ViewrtError: more views than the scene (or the cache) has, an index out of range,
            or targets given together with an index entry; the message names the scene.
    """
    n = len(scene.frames)
    where = f"scene {scene.name!r} ({scene.path})"
    if views is not None and views < 1:
        raise ViewrtError(f"--views must be at least 1, got {views}")
    if index is not None:
        from viewrt.data import select_index_frames

        if targets is not None:
            raise ViewrtError(
                f"{where}: --targets and the evaluation index both choose targets; pass one of them"
            )
        entry = index.get(scene.name)
        if entry is None:
            how = "lists it as null" if scene.name in index else "does not list it"
            raise SceneSkipped(f"{where}: the evaluation index {how} (skipped, as upstream)")
        inputs, chosen = select_index_frames(entry["context"], views), list(entry["target"])
        selection = "evaluation index (upstream's rule)"
    else:
        chosen = list(targets) if targets is not None else default_targets(n)
        rest = [i for i in range(n) if i not in chosen]
        if views is not None and views > len(rest):
            raise ViewrtError(
                f"--views {views}: {where} has {n} frames, {len(chosen)} of them targets {chosen}: at most {len(rest)} input views"
            )
        count = (
            views
            if views is not None
            else len(rest)
            if max_views is None
            else min(len(rest), max_views)
        )
        inputs = rest[:count]
        selection = "first frames that are not targets"
        if not inputs:
            raise ViewrtError(
                f"{where}: no frame left as an input view (targets {chosen} of {n} frames)"
            )
    for label, idx in (("input", inputs), ("target", chosen)):
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise ViewrtError(
                f"{where}: {label} frame(s) {bad} out of range; the scene has {n} frames (0..{n - 1})"
            )
    if max_views is not None and len(inputs) > max_views:
        raise ViewrtError(
            f"{where}: {len(inputs)} input views exceed the cache capacity of {max_views} views (re-export with a larger --max-views)"
        )
    return {"inputs": inputs, "targets": chosen, "selection": selection}


# --------------------------------------------------------------------------- helpers


def _jsonable(value: Any) -> Any:
    """Python scalars for numpy ones; non-finite floats as None (JSON has no inf/NaN)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(_jsonable(data), indent=1, allow_nan=False))


def mean(values: Sequence[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else math.nan


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process so far, in bytes (None if unknown)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # Linux: KiB
    except (ImportError, OSError):
        try:
            import psutil

            info = psutil.Process().memory_info()
            return int(getattr(info, "peak_wset", info.rss))
        except Exception:  # noqa: BLE001 - memory is a nice-to-have, never fatal
            return None


def _progress(iterable, **kw):
    from tqdm import tqdm

    return tqdm(
        iterable, disable=None, dynamic_ncols=True, **kw
    )  # disable=None: off when not a TTY


def _clear_previous(out_dir: Path) -> None:
    """Remove the step folders an earlier run wrote (only view_NNN/ holding metrics.json)."""
    import shutil

    for p in out_dir.glob("view_[0-9][0-9][0-9]"):
        if p.is_dir() and (p / "metrics.json").is_file():
            shutil.rmtree(p)


def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "scene"


# --------------------------------------------------------------------------- one scene


def _load_images(scene, frames: Sequence[int], size: int, check_intrinsics: bool = True) -> dict:
    from viewrt.data import load_frame
    from viewrt.geometry import Camera

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
    import numpy as np
    from PIL import Image

    from viewrt.data import load_scene
    from viewrt.geometry import NormalizationFrame, image_to_uint8, uint8_to_image
    from viewrt.metrics import LPIPS_NOTE, psnr, ssim

    if not hasattr(scene, "frames"):
        scene = load_scene(scene)
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
    is_instance = hasattr(renderer, "add_view")
    if size is None:
        if not is_instance:
            raise ViewrtError("run_scene: pass size= when renderer is a factory")
        size = int(renderer.size)

    t_load = time.perf_counter()
    data = _load_images(
        scene, [*inputs, *targets], size, check_intrinsics
    )  # every image error before any work
    load_ms = (time.perf_counter() - t_load) * 1e3
    target_cams = [data[t][1] for t in targets]
    gt_u8 = [image_to_uint8(data[t][0]) for t in targets]
    gt = [uint8_to_image(g) for g in gt_u8]  # scored against the ground truth as written

    if is_instance:
        r, owned = renderer, False
        r.reset()
        frame_source = "the renderer's own"
    else:
        frame = NormalizationFrame.from_cameras(
            np.stack([data[i][1].c2w for i in [*inputs, *targets]])
        )
        try:
            r = renderer(frame)
        except BackendUnavailable:
            raise
        except ViewrtError as e:
            raise BackendUnavailable(str(e)) from None
        owned, frame_source = True, FRAME_SOURCE

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _clear_previous(out_dir)
    except OSError as e:
        raise ViewrtError(f"cannot write to {out_dir}: {e}") from None

    steps: list[dict] = []
    sheet: list[
        tuple[list[np.ndarray], np.ndarray, list[float]]
    ] = []  # (8-bit predictions, added view, PSNRs) per step
    untrained = (extra or {}).get("weights") == UNTRAINED
    try:
        if warmup:
            first = data[inputs[0]]
            r.add_view(first[0], first[1])
            r.render(target_cams[:1])
            r.reset()
        bar = (
            _progress(inputs, desc=f"{scene.name}", unit="view", leave=False)
            if progress
            else inputs
        )
        for step, frame_idx in enumerate(bar):
            image, cam = data[frame_idx]
            r.add_view(image, cam)
            add_t = dict(r.last_timings)
            pred = r.render(target_cams)
            render_t = dict(r.last_timings)
            info = r.info()
            pred_u8 = [image_to_uint8(p) for p in pred]
            step_dir = out_dir / f"view_{step:03d}"
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
            add_total = float(add_t.get("total", sum(add_t.values())))
            render_total = float(render_t.get("total", sum(render_t.values())))
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
                "latency_ms": {
                    "add_view": add_t,
                    "render": render_t,
                    "total": add_total + render_total,
                },
                "cache": {
                    "views": info.get("views"),
                    "bytes_used": info.get("bytes_used"),
                    "bytes_reserved": info.get("bytes_reserved"),
                    "bytes_per_view": info.get("bytes_per_view"),
                },
                "peak_rss_bytes": peak_rss_bytes(),
            }
            _write_json(step_dir / "metrics.json", record)
            steps.append(record)
            sheet.append((pred_u8, image_to_uint8(image), [x["psnr"] for x in per_target]))
        info = r.info()
    finally:
        if owned and hasattr(r, "close"):
            r.close()

    summary = {
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
        "frame_source": info.get("frame_source", frame_source) if is_instance else frame_source,
        "frame": info.get("frame"),
        "metrics_note": METRICS_NOTE,
        "lpips": None,
        "lpips_note": LPIPS_NOTE,
        "latency_note": "renderer per-component timings of one run after one discarded warm-up add+render"
        if warmup
        else "renderer per-component timings of one run, no warm-up",
        "memory_note": "peak_rss_bytes: process peak resident set size so far (host memory only)",
        "image_load_ms": load_ms,
        "steps": [_step_row(s) for s in steps],
        "final": _step_row(steps[-1]),
    }
    _write_json(out_dir / "summary.json", summary)
    _write_csv(out_dir / "summary.csv", summary["steps"])
    _plot_steps(
        summary["steps"],
        out_dir / "steps.png",
        f"{scene.name} ({summary['renderer']})" + (UNTRAINED_BANNER if untrained else ""),
    )
    _contact_sheet(sheet, gt_u8, targets, inputs, out_dir / "contact_sheet.png", untrained)
    return _jsonable(summary)


def _step_row(step: dict) -> dict:
    """The flat per-step record of summary.json / summary.csv."""
    row = {
        "views": step["views"],
        "added_frame": step["added_frame"],
        "psnr_mean": step["psnr_mean"],
        "ssim_mean": step["ssim_mean"],
    }
    for t in step["targets"]:
        row[f"psnr_t{t['target']}"] = t["psnr"]
    for t in step["targets"]:
        row[f"ssim_t{t['target']}"] = t["ssim"]
    lat = step["latency_ms"]
    row["add_view_ms"] = lat["add_view"].get("total")
    row["render_ms"] = lat["render"].get("total")
    row["step_ms"] = lat["total"]
    for call, prefix in (("add_view", "add"), ("render", "render")):
        for comp, ms in lat[call].items():
            if comp != "total":
                row[f"{prefix}.{comp}_ms"] = ms
    row["cache_views"] = step["cache"]["views"]
    row["cache_bytes_used"] = step["cache"]["bytes_used"]
    row["cache_bytes_reserved"] = step["cache"]["bytes_reserved"]
    row["peak_rss_bytes"] = step["peak_rss_bytes"]
    return row


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in _jsonable(r).items()})


# --------------------------------------------------------------------------- figures


def _plot_steps(rows: list[dict], path: Path, title: str) -> None:
    """PSNR, SSIM and stacked latency by component against the number of cached views."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in rows if r.get("views") is not None]
    views = [r["views"] for r in rows]
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax_p, ax_s, ax_l = fig.subplots(1, 3)

    def val(r, key):
        v = r.get(key)
        return math.nan if v is None or not math.isfinite(float(v)) else float(v)

    for ax, metric, label in ((ax_p, "psnr", "PSNR (dB)"), (ax_s, "ssim", "SSIM")):
        per_target = sorted({k for r in rows for k in r if k.startswith(f"{metric}_t")})
        for k in per_target:
            ax.plot(
                views,
                [val(r, k) for r in rows],
                lw=0.8,
                alpha=0.5,
                marker=".",
                label=k.split("_")[1],
            )
        ax.plot(
            views,
            [val(r, f"{metric}_mean") for r in rows],
            lw=2,
            color="k",
            marker="o",
            label="mean",
        )
        ax.set_xlabel("views in cache")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        got = [
            v
            for r in rows
            for k in (*per_target, f"{metric}_mean")
            if not math.isnan(v := val(r, k))
        ]
        if (
            got and metric == "psnr"
        ):  # honest axes: from a 10 dB floor (or below the data), at least 15 dB tall
            lo = min(10.0, math.floor(min(got)) - 1.0)
            ax.set_ylim(lo, max(lo + 15.0, math.ceil(max(got)) + 1.0))
        elif got:
            ax.set_ylim(min(0.0, min(got)), 1.0)
        if ax.get_legend_handles_labels()[0]:  # no 'no artists with labels' warning
            ax.legend(fontsize=7)
    comps = []
    for r in rows:
        comps += [k for k in r if k.endswith("_ms") and "." in k and k not in comps]
    bottom = [0.0] * len(rows)
    for c in comps:
        h = [0.0 if math.isnan(val(r, c)) else val(r, c) for r in rows]
        ax_l.bar(views, h, bottom=bottom, label=c[:-3])
        bottom = [b + x for b, x in zip(bottom, h)]
    ax_l.set_xlabel("views in cache")
    ax_l.set_ylabel("latency of the step (ms)")
    ax_l.set_title("add_view + render, by component", fontsize=9)
    if ax_l.get_legend_handles_labels()[0]:  # no 'no artists with labels' warning
        ax_l.legend(fontsize=6, ncol=2)
    ax_l.grid(alpha=0.3, axis="y")
    for ax in (ax_p, ax_s, ax_l):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100)


def _contact_sheet(
    sheet: list,
    gt_u8: list,
    targets: Sequence[int],
    inputs: Sequence[int],
    path: Path,
    untrained: bool = False,
) -> None:
    """Rows = steps; columns = the view added at that step, then GT and prediction (captioned
    with its PSNR) per target; a red banner on top when the weights are untrained."""
    import numpy as np
    from PIL import Image, ImageDraw

    size = gt_u8[0].shape[0]
    cell = min(max(size, 96), 256)
    pad, label_w, cap_h = 4, 64, 14
    head_h = 18 + (16 if untrained else 0)
    cols = 1 + 2 * len(targets)
    W = label_w + cols * (cell + pad) + pad
    H = head_h + len(sheet) * (cell + cap_h + pad) + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)

    def tile(arr: np.ndarray) -> Image.Image:
        im = Image.fromarray(arr)
        if im.size[0] == cell:
            return im
        return im.resize(
            (cell, cell),
            Image.Resampling.NEAREST if cell > im.size[0] else Image.Resampling.LANCZOS,
        )

    heads = ["added view"] + [
        f"{kind} t{k} (frame {t})" for k, t in enumerate(targets) for kind in ("GT", "pred")
    ]
    if untrained:
        draw.rectangle((0, 0, W, 15), fill=(200, 0, 0))
        draw.text(
            (4, 2),
            "UNTRAINED WEIGHTS: the predictions are noise (export a trained checkpoint or the demo preset)",
            fill=(255, 255, 255),
        )
    for c, text in enumerate(heads):
        draw.text((label_w + pad + c * (cell + pad), head_h - 15), text, fill=(0, 0, 0))
    gt_tiles = [tile(g) for g in gt_u8]
    for row, (preds, added, psnrs) in enumerate(sheet):
        y = head_h + pad + row * (cell + cap_h + pad)
        draw.text((4, y + cell // 2 - 12), f"{row + 1} view{'s' if row else ''}", fill=(0, 0, 0))
        draw.text((4, y + cell // 2 + 2), f"+frame {inputs[row]}", fill=(90, 90, 90))
        x0 = label_w + pad
        canvas.paste(tile(added), (x0, y))
        for k, p in enumerate(preds):
            canvas.paste(gt_tiles[k], (x0 + (1 + 2 * k) * (cell + pad), y))
            canvas.paste(tile(p), (x0 + (2 + 2 * k) * (cell + pad), y))
            v = psnrs[k]
            cap = "PSNR inf" if v is None or not math.isfinite(v) else f"PSNR {v:.2f} dB"
            draw.text((x0 + (2 + 2 * k) * (cell + pad), y + cell + 1), cap, fill=(0, 0, 0))
    canvas.save(path)


# --------------------------------------------------------------------------- lists


def run_list(
    renderer,
    scenes: Sequence[str | Path],
    out_dir: str | Path,
    size: int,
    *,
    views: int | None = None,
    targets: Sequence[int] | None = None,
    index: dict | None = None,
    max_views: int | None = None,
    extra: dict | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    roots=None,
    check_intrinsics: bool = True,
) -> dict:
    """Run scenes in turn into ``out_dir/<scene_name>/``; a failing scene is recorded and
    the others still run. Writes ``out_dir/summary.{json,csv}`` and ``out_dir/steps.png``
    (means over the scenes that ran, per number of views).

    Args:
        renderer: a factory ``frame -> renderer`` (see :func:`run_scene`).
        scenes: scene JSON paths.
        out_dir: output folder.
        size: image side of the export.
        views, targets, index, max_views: frame choice, see :func:`select_frames`.
        extra: more fields for every summary.
        progress: progress bars (only on a terminal).
        echo: called with one line per scene (of the failed scenes, the first
            :data:`ECHO_FAILURES` only; every message is in summary.json).
        roots: a :class:`viewrt.data.DataRoots` for scene and image paths written on
            another machine (default: the fallback only).
        check_intrinsics: see :func:`run_scene`.
    Returns:
        The overall summary, with ``n_failed`` and ``failed`` ([{"scene", "error"}]).
    Raises:
        BackendUnavailable: the renderer cannot be made (no scene could run).
    """
    from viewrt.data import load_scene
    from viewrt.metrics import LPIPS_NOTE

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, used, all_steps = [], set(), []
    bar = _progress(list(scenes), desc="scenes", unit="scene") if progress else list(scenes)
    for path in bar:
        rec = {"scene": str(path), "scene_json": str(path)}  # the name once the file is read
        try:
            scene = load_scene(path, roots)
            rec["scene"] = scene.name
            name = _safe_name(scene.name)
            base, k = name, 2
            while name in used:
                name, k = f"{base}_{k}", k + 1
            used.add(name)
            sel = select_frames(scene, views, targets, index, max_views)
            s = run_scene(
                renderer,
                scene,
                out_dir / name,
                sel["inputs"],
                sel["targets"],
                size=size,
                progress=progress,
                extra={**(extra or {}), "selection": sel["selection"]},
                check_intrinsics=check_intrinsics,
            )
        except BackendUnavailable:
            raise
        except SceneSkipped as e:
            rec.update(status="skipped", error=str(e))
        except ViewrtError as e:
            rec.update(status="failed", error=str(e))
        else:
            f = s["final"]
            rec.update(
                status="ok",
                out_dir=s["out_dir"],
                views=f["views"],
                psnr_mean=f["psnr_mean"],
                ssim_mean=f["ssim_mean"],
                step_ms_mean=mean(r["step_ms"] for r in s["steps"]),
                peak_rss_bytes=f["peak_rss_bytes"],
            )
            all_steps.append(s["steps"])
        records.append(rec)
        n_bad = sum(r["status"] == "failed" for r in records)
        if echo is not None and (rec["status"] != "failed" or n_bad <= ECHO_FAILURES):
            more = rec["status"] == "failed" and n_bad == ECHO_FAILURES
            echo(scene_line(rec) + (" [any later failures: only in summary.json]" if more else ""))
    ok = [r for r in records if r["status"] == "ok"]
    failed = [
        {"scene": r["scene"], "scene_json": r["scene_json"], "error": r["error"]}
        for r in records
        if r["status"] == "failed"
    ]
    summary = {
        **(extra or {}),
        "n_scenes": len(records),
        "n_ok": len(ok),
        "n_failed": len(failed),
        "n_skipped": sum(r["status"] == "skipped" for r in records),
        "psnr_mean": mean(r["psnr_mean"] for r in ok if r["psnr_mean"] is not None),
        "ssim_mean": mean(r["ssim_mean"] for r in ok),
        "means_note": "over scenes that ran, at each scene's last step (all its input views)",
        "lpips": None,
        "lpips_note": LPIPS_NOTE,
        "metrics_note": METRICS_NOTE,
        "failed": failed,
        "scenes": records,
    }
    _write_json(out_dir / "summary.json", summary)
    _write_csv(
        out_dir / "summary.csv",
        [
            {
                k: r.get(k)
                for k in (
                    "scene",
                    "status",
                    "views",
                    "psnr_mean",
                    "ssim_mean",
                    "step_ms_mean",
                    "peak_rss_bytes",
                    "out_dir",
                    "scene_json",
                    "error",
                )
            }
            for r in records
        ],
    )
    if all_steps:
        _plot_steps(
            _mean_rows(all_steps),
            out_dir / "steps.png",
            f"mean over {len(all_steps)} scene(s)"
            + (UNTRAINED_BANNER if (extra or {}).get("weights") == UNTRAINED else ""),
        )
    return _jsonable(summary)


def _mean_rows(per_scene: list[list[dict]]) -> list[dict]:
    """Per number of views, the mean of every numeric field over the scenes that reached it."""
    by_views: dict[int, list[dict]] = {}
    for rows in per_scene:
        for r in rows:
            by_views.setdefault(r["views"], []).append(r)
    out = []
    for v in sorted(by_views):
        group = by_views[v]
        keys = [k for k in group[0] if k.endswith("_mean") or k.endswith("_ms")]
        out.append(
            {"views": v, **{k: mean(r[k] for r in group if r.get(k) is not None) for k in keys}}
        )
    return out


def scene_line(rec: dict) -> str:
    if rec["status"] != "ok":
        return f"{rec['scene']}: {rec['status']}: {rec['error']}"
    psnr = "inf" if rec["psnr_mean"] is None else f"{rec['psnr_mean']:.2f}"
    return (
        f"{rec['scene']}: {rec['views']} views, PSNR {psnr} dB, SSIM {rec['ssim_mean']:.4f}, "
        f"{rec['step_ms_mean']:.1f} ms per step (add + render); wrote {rec['out_dir']}"
    )
