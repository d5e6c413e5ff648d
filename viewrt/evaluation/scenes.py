"""A list of scenes, each run by :func:`viewrt.evaluation.scene.run_scene` into its own
folder; a failing scene is recorded and the others still run (``viewrt infer --list``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from viewrt.data import load_scene
from viewrt.errors import ViewrtError
from viewrt.evaluation.frames import SceneSkipped, select_frames
from viewrt.evaluation.scene import BackendUnavailable, progress_bar, run_scene
from viewrt.evaluation.writers import (
    METRICS_NOTE,
    UNTRAINED,
    UNTRAINED_BANNER,
    jsonable,
    mean,
    plot_steps,
    write_csv,
    write_json,
)
from viewrt.metrics import LPIPS_NOTE

ECHO_FAILURES = 3  # failed scenes echoed one by one in a list run; the rest only in summary.json
LIST_CSV_FIELDS = (
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
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, used, all_steps = [], set(), []
    bar = progress_bar(list(scenes), desc="scenes", unit="scene") if progress else list(scenes)
    for path in bar:
        rec = {"scene": str(path), "scene_json": str(path)}  # the name once the file is read
        try:
            scene = load_scene(path, roots)
            rec["scene"] = scene.name
            name = _unique_name(scene.name, used)
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
            rec.update(_scene_record(s))
            all_steps.append(s["steps"])
        records.append(rec)
        _echo_scene(echo, rec, records)
    return _write_list_summary(out_dir, records, all_steps, extra or {})


def _unique_name(scene_name: str, used: set) -> str:
    """A folder name for the scene: its name made safe, numbered when taken (added to ``used``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", scene_name).strip("._") or "scene"
    base, k = name, 2
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def _scene_record(s: dict) -> dict:
    """The fields of a scene that ran, from its summary, for the list's records."""
    f = s["final"]
    return dict(
        status="ok",
        out_dir=s["out_dir"],
        views=f["views"],
        psnr_mean=f["psnr_mean"],
        ssim_mean=f["ssim_mean"],
        step_ms_mean=mean(r["step_ms"] for r in s["steps"]),
        peak_rss_bytes=f["peak_rss_bytes"],
    )


def _echo_scene(echo, rec: dict, records: list[dict]) -> None:
    """One line for the scene just run (failures only up to :data:`ECHO_FAILURES`)."""
    n_bad = sum(r["status"] == "failed" for r in records)
    if echo is not None and (rec["status"] != "failed" or n_bad <= ECHO_FAILURES):
        more = rec["status"] == "failed" and n_bad == ECHO_FAILURES
        echo(scene_line(rec) + (" [any later failures: only in summary.json]" if more else ""))


def _write_list_summary(out_dir: Path, records: list, all_steps: list, extra: dict) -> dict:
    """Write ``summary.{json,csv}`` (and ``steps.png`` where a scene ran); the summary."""
    ok = [r for r in records if r["status"] == "ok"]
    failed = [
        {"scene": r["scene"], "scene_json": r["scene_json"], "error": r["error"]}
        for r in records
        if r["status"] == "failed"
    ]
    summary = {
        **extra,
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
    write_json(out_dir / "summary.json", summary)
    write_csv(out_dir / "summary.csv", [{k: r.get(k) for k in LIST_CSV_FIELDS} for r in records])
    if all_steps:
        plot_steps(
            _mean_rows(all_steps),
            out_dir / "steps.png",
            f"mean over {len(all_steps)} scene(s)"
            + (UNTRAINED_BANNER if extra.get("weights") == UNTRAINED else ""),
        )
    return jsonable(summary)


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
