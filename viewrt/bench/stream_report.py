"""Report writers of the streaming benchmark (viewrt.bench.stream): results.csv,
results.json, summary.md and the plots (latency_vs_frames.png, latency_vs_window.png), in
the shape of the first family's report. Torch-free; they read only the results dict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

# matplotlib is imported lazily (_plots).

CSV_FIELDS = [
    "backend",
    "kind",
    "window",
    "pinned",
    "frames_seen",
    "status",
    "reps",
    "warmup",
    "median_ms",
    "min_ms",
    "max_ms",
    "q1_ms",
    "q3_ms",
    "flops",
    "gflops",
    "cache_bytes_per_frame",
    "rss_bytes",
    "peak_rss_bytes",
    "note",
]

UNTRAINED_NOTE = "weights: {w} (latency and memory do not depend on training; the predictions do)"


def _num(row, key="median_ms"):
    v = row.get(key) if row else None
    return v if isinstance(v, (int, float)) else None


def _lookup(res: dict) -> dict:
    return {(r["backend"], r["window"], r["frames_seen"]): r for r in res["rows"]}


def _header(res: dict) -> list[str]:
    m = res["machine"]
    flags = ", ".join(m.get("cpu_flags", [])) or "unknown"
    return [
        f"# viewrt bench: {res['preset']} ({res['precision']}), streaming",
        "",
        f"- export: `{res['export_dir']}`; {UNTRAINED_NOTE.format(w=res['weights'])}",
        f"- machine: {m.get('cpu')}, {m.get('usable_cores', m.get('logical_cores'))} usable cores; "
        f"CPU flags: {flags}",
        f"- {res['cpu_isa']}",
        f"- pinned (scale) frames: {res['pinned']}, processed together by one prefill; windows: "
        f"{', '.join(map(str, res['windows']))}; {res['repeats']} timed repetition(s) after "
        f"{res['warmup']} warm-up; {res['timing']}",
        f"- load average before/after: {m.get('load_average_before')} / {m.get('load_average_after')}",
        "",
    ]


def _latency_table(res: dict, L: dict, window: int) -> list[str]:
    backends = res["backends"]
    out = [
        f"## Step latency, window {window} (ms, median; frames seen = the frame's index + 1)",
        "",
        "| frames seen | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    for n in res["frames"]:
        cells = []
        for b in backends:
            r = L.get((b, window, n))
            v = _num(r)
            cells.append("" if v is None else f"{v:.2f}" + ("*" if r.get("note") else ""))
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    rt = [b for b in backends if res["kinds"].get(b) == "runtime"]
    others = [b for b in backends if res["kinds"].get(b) != "runtime"]
    if rt and others:
        n = max(res["frames"])
        fast = min(rt, key=lambda b: _num(L.get((b, window, n))) or float("inf"))
        base = _num(L.get((fast, window, n)))
        if base:
            ratios = [f"{b} {v / base:.1f}x" for b in others if (v := _num(L.get((b, window, n))))]
            out += [
                "",
                f"At {n} frames, {fast} is faster than: {', '.join(ratios)} (their time / its time).",
            ]
    return [*out, ""]


def _window_table(res: dict, L: dict) -> list[str]:
    if len(res["windows"]) < 2:
        return []
    n = max(res["frames"])
    inc = [b for b in res["backends"] if res["kinds"].get(b) != "recompute"]
    out = [
        f"## Step latency by window, at {n} frames (ms, median)",
        "",
        "| window | " + " | ".join(inc) + " |",
        "|---|" + "---|" * len(inc),
    ]
    for w in res["windows"]:
        cells = [f"{v:.2f}" if (v := _num(L.get((b, w, n)))) is not None else "" for b in inc]
        out.append(f"| {w} | " + " | ".join(cells) + " |")
    return [*out, ""]


def _memory_section(res: dict) -> list[str]:
    mem = res["memory_per_frame"]
    if not mem:
        return []
    out = [
        "## Memory per cached frame",
        "",
        "Resident growth per `add_frame` while the window fills (the session's first stream, its first "
        "add left out: it also allocates the step's working memory) against the bytes "
        "a frame takes in the caches (K/V of every cached layer plus the camera head's token). RSS "
        "counts whole pages, so small frames show as 0 or a page.",
        "",
        "| session | cache bytes/frame | RSS growth/add (mean, filling) | RSS growth/add (mean, all) | page |",
        "|---|---|---|---|---|",
    ]
    for key, m in mem.items():
        out.append(
            f"| {key} | {m['cache_bytes_per_frame']:,} | {m['mean_rss_delta_per_add_bytes']:,.0f} | "
            f"{m['mean_rss_delta_all_adds_bytes']:,.0f} | {m['rss_page_bytes']:,} |"
        )
    return [*out, ""]


def summary_markdown(res: dict) -> str:
    L = _lookup(res)
    lines = _header(res)
    lines += ["## Backends", ""]
    lines += [f"- **{b}** ({res['kinds'][b]}): {res['descriptions'][b]}" for b in res["backends"]]
    lines += [f"- {b}: skipped, {why}" for b, why in res["skipped"].items()]
    lines.append("")
    for w in res["windows"]:
        lines += _latency_table(res, L, w)
    lines += _window_table(res, L)
    lines += _memory_section(res)
    notes = [
        f"{r['backend']} W={r['window']} n={r['frames_seen']}: {r['note']}"
        for r in res["rows"]
        if r["note"]
    ]
    if notes:
        lines += ["## Notes", "", "*: see the note.", "", *[f"- {x}" for x in notes], ""]
    return "\n".join(lines)


def _plots(res: dict, out: Path) -> None:
    from matplotlib.figure import Figure

    cmap = {b: f"C{i % 10}" for i, b in enumerate(res["backends"])}
    L = _lookup(res)
    wins = res["windows"]
    fig = Figure(figsize=(6 * len(wins), 4.5), layout="constrained")
    axes = fig.subplots(1, len(wins), squeeze=False)[0]
    for ax, w in zip(axes, wins):
        for b in res["backends"]:
            curve = res["curves"].get(f"{b} W={w}")
            if curve:
                ys = curve["median_ms_by_frame"]
                pts = [(i + 1, y) for i, y in enumerate(ys) if y is not None]
                ax.plot(*zip(*pts), "-", lw=1, color=cmap[b], label=b)
            else:
                pts = [(n, _num(L.get((b, w, n)))) for n in res["frames"]]
                pts = [(n, y) for n, y in pts if y is not None]
                if pts:
                    ax.plot(*zip(*pts), "s--", color=cmap[b], label=f"{b} (full recompute)")
        ax.axvline(res["pinned"] + w, color="grey", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("frames seen")
        ax.set_ylabel("step latency (ms, median)")
        ax.set_title(f"{res['preset']}, window {w} (dotted: window full)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"weights: {res['weights']}", fontsize=8)
    fig.savefig(out / "latency_vs_frames.png", dpi=100)
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    n = max(res["frames"])
    for b in res["backends"]:
        pts = [(w, _num(L.get((b, w, n)))) for w in wins]
        pts = [(w, y) for w, y in pts if y is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", color=cmap[b], label=b)
    ax.set_xlabel("window (frames)")
    ax.set_ylabel(f"step latency at {n} frames (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.suptitle(f"{res['preset']}; weights: {res['weights']}", fontsize=8)
    fig.savefig(out / "latency_vs_window.png", dpi=100)


def write_csv(path: Path, rows: list[dict]) -> None:
    """results.csv: one row per (backend, window, frames seen)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def write_stream_outputs(res: dict, out: Path) -> str:
    """Write results.csv, results.json, summary.md and the plots; return summary.md."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", res["rows"])
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    text = summary_markdown(res)
    (out / "summary.md").write_text(text)
    _plots(res, out)
    return text
