"""The files of a frame-by-frame run (``viewrt infer`` on a token-window export): poses
(JSON + NPZ), depth maps (NPY + PNG panels), the trajectory plot against the ground truth,
per-frame latency (JSON + PNG) and the summary.

Every file says which weights made it: a ``weights`` field in JSON and NPZ, a red banner on
the PNG panels and plot titles, and a ``viewrt-weights`` text chunk in every PNG.

Lazy imports: matplotlib (the plots)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin

from viewrt.evaluation.writers import write_csv, write_json
from viewrt.geometry import image_to_uint8

__all__ = [
    "depth_to_rgb",
    "plot_latency",
    "plot_trajectory",
    "write_depth_frame",
    "write_poses",
]

UNTRAINED_LINE = "UNTRAINED WEIGHTS: poses and depth are not meaningful"


def _png_info(weights: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("viewrt-weights", weights)
    return info


def depth_to_rgb(depth: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """A z-depth map as uint8 ``[H, W, 3]``: near is bright yellow, far dark purple (viridis
    reversed), on ``1 / depth`` between the 2nd and 98th percentiles of the positive values
    (or ``lo``/``hi`` depths); 0 or non-finite (no depth) is black."""
    from matplotlib import colormaps

    d = np.asarray(depth, np.float64)
    ok = np.isfinite(d) & (d > 0)
    out = np.zeros((*d.shape, 3), np.uint8)
    if not ok.any():
        return out
    inv = np.zeros_like(d)
    inv[ok] = 1.0 / d[ok]
    a = 1.0 / hi if hi else float(np.percentile(inv[ok], 2))
    b = 1.0 / lo if lo else float(np.percentile(inv[ok], 98))
    t = np.clip((inv - a) / max(b - a, 1e-12), 0.0, 1.0)
    rgb = colormaps["viridis"](t)[..., :3]
    out[ok] = np.rint(rgb[ok] * 255).astype(np.uint8)
    return out


def write_depth_frame(
    folder: Path,
    index: int,
    image: np.ndarray,
    depth: np.ndarray,
    conf: np.ndarray,
    gt_depth: np.ndarray | None,
    weights: str,
    untrained: bool,
) -> dict:
    """``frame_NNNNN_depth.npy`` and ``_conf.npy`` (float32 ``[S, S]``) and a PNG panel
    (input, predicted depth, ground truth where given; the ground truth keeps its own
    range). Returns the written paths relative to ``folder``'s parent."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"frame_{index:05d}"
    np.save(folder / f"{stem}_depth.npy", np.asarray(depth, np.float32))
    np.save(folder / f"{stem}_conf.npy", np.asarray(conf, np.float32))
    tiles = [image_to_uint8(np.clip(image, 0.0, 1.0)), depth_to_rgb(depth)]
    heads = ["input", "depth (pred)"]
    if gt_depth is not None:
        tiles.append(depth_to_rgb(gt_depth))
        heads.append("depth (GT)")
    cell, pad, head = max(96, image.shape[-1]), 4, 14 + (14 if untrained else 0)
    canvas = Image.new("RGB", (len(tiles) * (cell + pad) + pad, head + cell + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if untrained:
        draw.rectangle((0, 0, canvas.width, 13), fill=(200, 0, 0))
        draw.text((3, 1), "UNTRAINED WEIGHTS", fill=(255, 255, 255))
    for k, (tile, text) in enumerate(zip(tiles, heads)):
        x = pad + k * (cell + pad)
        im = Image.fromarray(tile).resize((cell, cell), Image.Resampling.NEAREST)
        canvas.paste(im, (x, head))
        draw.text((x, head - 13), f"{text} {index}", fill=(0, 0, 0))
    png = folder / f"{stem}.png"
    canvas.save(png, pnginfo=_png_info(weights))
    base = folder.name
    return {
        "depth": f"{base}/{stem}_depth.npy",
        "conf": f"{base}/{stem}_conf.npy",
        "png": f"{base}/{stem}.png",
    }


def write_poses(out: Path, frames: list[dict], arrays: dict, meta: dict) -> None:
    """poses.json (per frame, with the run's ``meta``), poses.npz (``arrays`` plus
    ``weights``) and poses.csv (the flat per-frame rows)."""
    write_json(out / "poses.json", {**meta, "frames": frames})
    np.savez(out / "poses.npz", weights=np.array(meta["weights"]), **arrays)
    rows = []
    for f in frames:
        row = {"frame": f["frame"], "file": f["file"], "latency_ms": f["latency_ms"]}
        row.update({k: v for k, v in (f.get("errors") or {}).items()})
        rows.append(row)
    write_csv(out / "poses.csv", rows)


def _title(text: str, untrained: bool) -> str:
    return f"{text}\n{UNTRAINED_LINE}" if untrained else text


def plot_trajectory(
    path: Path,
    pred_c2w: np.ndarray,
    gt_c2w: np.ndarray | None,
    title: str,
    weights: str,
    untrained: bool,
) -> None:
    """Camera centres from above (world x-y) and from the side (x-z), with each camera's
    viewing direction; the prediction after first-frame alignment against the ground
    truth where there is one, else the prediction alone (its own first camera's world)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    series = [("prediction", pred_c2w, "tab:red")]
    if gt_c2w is not None:
        series.insert(0, ("ground truth", gt_c2w, "k"))
    for ax, (i, j, names) in zip(axes, ((0, 1, "xy"), (0, 2, "xz"))):
        for label, c2w, color in series:
            c = c2w[:, :3, 3]
            ax.plot(c[:, i], c[:, j], "-o", ms=3, color=color, label=label, lw=1)
            ax.plot(c[0, i], c[0, j], "s", color=color, ms=7, mfc="none")
            span = float(np.ptp(c[:, [i, j]], axis=0).max()) if len(c) > 1 else 1.0
            f = c2w[:, :3, 2] * 0.08 * max(span, 1e-3)
            ax.quiver(
                c[:, i],
                c[:, j],
                f[:, i],
                f[:, j],
                color=color,
                angles="xy",
                scale_units="xy",
                scale=1,
                width=0.004,
            )
        ax.set_xlabel(f"world {names[0]}")
        ax.set_ylabel(f"world {names[1]}")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("from above (square: first frame)", fontsize=9)
    axes[1].set_title("from the side", fontsize=9)
    fig.suptitle(_title(title, untrained), fontsize=10, color="darkred" if untrained else "k")
    fig.savefig(path, dpi=100, metadata={"viewrt-weights": weights})


def plot_latency(path: Path, rows: list[dict], title: str, weights: str, untrained: bool) -> None:
    """Per-frame latency against the frame index: steps as dots, the scale-frame prefill
    as one bar over the frames it processed together."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.subplots()
    steps = [r for r in rows if r["phase"] == "step"]
    prefill = [r for r in rows if r["phase"] == "prefill"]
    if prefill:
        xs = [r["frame"] for r in prefill]
        ax.bar(
            (min(xs) + max(xs)) / 2,
            prefill[0]["call_ms"],
            width=len(xs) - 0.2,
            color="tab:gray",
            alpha=0.5,
            label=f"prefill of {len(xs)} scale frames (one call)",
        )
    if steps:
        ax.plot(
            [r["frame"] for r in steps],
            [r["latency_ms"] for r in steps],
            "o-",
            ms=3,
            lw=1,
            label="add_frame",
        )
        med = float(np.median([r["latency_ms"] for r in steps]))
        ax.axhline(med, color="tab:blue", lw=0.8, ls="--", label=f"median step {med:.2f} ms")
    ax.set_xlabel("frame")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.suptitle(_title(title, untrained), fontsize=10, color="darkred" if untrained else "k")
    fig.savefig(path, dpi=100, metadata={"viewrt-weights": weights})


def finite_mean(values) -> float | None:
    """Mean of the finite values, None when there is none (JSON has no NaN)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else None
