"""The files of an evaluation: JSON and CSV records, the per-step plot and the contact
sheet (``viewrt infer``).

Lazy imports: matplotlib (plot_steps), resource and psutil (peak_rss_bytes)."""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

UNTRAINED = "built-in, untrained"
UNTRAINED_BANNER = " - UNTRAINED WEIGHTS: predictions are noise"
METRICS_NOTE = "PSNR and SSIM are computed on the 8-bit images as written to disk (prediction and ground truth)"


def jsonable(value: Any) -> Any:
    """Python scalars for numpy ones; non-finite floats as None (JSON has no inf/NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(jsonable(data), indent=1, allow_nan=False))


def mean(values: Sequence[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else math.nan


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process so far, in bytes (None if unknown)."""
    try:
        import resource  # not on Windows

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # Linux: KiB
    except (ImportError, OSError):
        try:
            import psutil

            info = psutil.Process().memory_info()
            return int(getattr(info, "peak_wset", info.rss))
        except Exception:  # noqa: BLE001 - memory is a nice-to-have, never fatal
            return None


def step_row(step: dict) -> dict:
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


def write_csv(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in jsonable(r).items()})


# --------------------------------------------------------------------------- figures


def plot_steps(rows: list[dict], path: Path, title: str) -> None:
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


def contact_sheet(
    sheet: list,
    gt_u8: list,
    targets: Sequence[int],
    inputs: Sequence[int],
    path: Path,
    untrained: bool = False,
) -> None:
    """Rows = steps; columns = the view added at that step, then GT and prediction (captioned
    with its PSNR) per target; a red banner on top when the weights are untrained."""
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
