"""The benchmark of a streaming family (token-window exports, e.g. gct-stream), torch-free:
per-frame step latency by frames seen and by window size, for every backend the caller
hands in, and memory per cached frame.

What runs is passed in (``viewrt bench`` builds it; this module imports neither the runtime
nor the models):

* incremental backends (:class:`StreamBackend`, kind "runtime" or "eager"): an ``open(window,
  pinned)`` returning a streaming session (``prefill``, ``add_frame``, ``reset``, ``info``,
  ``close``): the runtime's configurations, and PyTorch eager streaming with the reference's
  own cache;
* recompute backends (:class:`RecomputeBackend`): ``run(images [F, 3, S, S], window,
  pinned)``, one full causal forward over every frame so far (the newest frame's prediction
  is what a streaming step gives).

Method (recorded in results.json):

* Frames are a synthetic video sequence (:func:`viewrt.data.synthetic_sequence`), real and
  distinct.
* Incremental: per window, a stream of ``max(frames)`` frames (the pinned frames in one
  prefill, then one ``add_frame`` each, keyframes), timed per call with
  ``time.perf_counter``; ``warmup`` streams untimed, then ``repeats`` streams (a ``reset``
  between them); the per-frame median over the repeats is the curve, and its values at the
  requested frame counts are the table's rows.
* Recompute: at each requested frame count ``n``, ``forward_batch`` over ``n`` frames: one
  untimed run (warm-up and time estimate), then ``repeats`` timed ones (fewer when over
  ``max_seconds_per_point``, said in the row's note).
* Memory: during the first stream of each runtime session (a warm-up one where there is
  one: the first stream writes the cache's pages), resident memory before and after each
  ``add_frame``; the mean growth per added frame while the window fills (the first add left
  out: it also allocates the step's working memory) is set against the cache bytes a
  frame takes (the manifest's ``kv_bytes_per_frame`` plus the camera cache's token), with the
  page size that limits the resolution of the measurement.

Outputs in OUT: results.csv, results.json, summary.md, latency_vs_frames.png,
latency_vs_window.png.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import viewrt.bench.cpu as cpu
from viewrt.bench.harness import latency_stats
from viewrt.bench.memory import Memory, loadavg, machine_info, rss_page_bytes
from viewrt.bench.stream_report import CSV_FIELDS, write_stream_outputs
from viewrt.errors import ViewrtError

__all__ = [
    "RecomputeBackend",
    "StreamBackend",
    "StreamBenchConfig",
    "StreamModel",
    "run_stream_bench",
]


@dataclass(frozen=True)
class StreamBackend:
    """An incremental backend: ``open(window, pinned)`` -> an open streaming session."""

    name: str
    kind: str  # "runtime" or "eager"
    description: str
    open: Callable[[int, int], object]


@dataclass(frozen=True)
class RecomputeBackend:
    """A full-recompute backend: ``run(images [F, 3, S, S] float32, window, pinned)``."""

    name: str
    description: str
    run: Callable[[np.ndarray, int, int], object]


@dataclass(frozen=True)
class StreamModel:
    """What the bench needs to know of the export.

    Attributes:
        preset, precision: the export's, for the report.
        image_size: frame side in pixels.
        pinned: pinned (scale) frames, processed together by the prefill.
        max_positions: absolute frame positions a stream may reach.
        default_window: the export's window for ``pinned``.
        kv_bytes_per_frame: cache bytes one full frame takes (all cached layers, K and V).
        side_bytes_per_frame: bytes of other caches per frame (the camera head's token).
        flops: ``(frames_cached, n_frames) -> {"step", "prefill"}`` FLOPs, or None.
        weights: what made the weights (the untrained label where so).
        config: the model config, for the report.
    """

    preset: str
    precision: str
    image_size: int
    pinned: int
    max_positions: int
    default_window: int
    kv_bytes_per_frame: int
    side_bytes_per_frame: int = 0
    flops: Callable[[int, int], dict] | None = None
    weights: str = ""
    config: dict = field(default_factory=dict)


@dataclass
class StreamBenchConfig:
    """What to measure.

    Attributes:
        export_dir: the export (for the report).
        out: output folder.
        frames: frames-seen counts reported (each > pinned, <= max_positions).
        windows: window sizes (None: the export's).
        repeats: timed streams (incremental) or forwards (recompute) per point.
        warmup: untimed ones before them.
        max_seconds_per_point: budget of a recompute point (0: none).
        seed: seed of the synthetic sequence.
        progress: a progress bar on a terminal.
    """

    export_dir: Path
    out: Path
    frames: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    windows: list[int] | None = None
    repeats: int = 3
    warmup: int = 1
    max_seconds_per_point: float = 20.0
    seed: int = 0
    progress: bool = True


def check_config(cfg: StreamBenchConfig, model: StreamModel) -> list[int]:
    """The windows to run, after checking every option. Raises ViewrtError (one line)."""
    if cfg.repeats < 1 or cfg.warmup < 0:
        raise ViewrtError(
            f"--repeats must be >= 1 and --warmup >= 0, got {cfg.repeats}, {cfg.warmup}"
        )
    if not cfg.frames:
        raise ViewrtError("--frames: give at least one frame count")
    lo, hi = model.pinned + 1, model.max_positions
    bad = [n for n in cfg.frames if not lo <= n <= hi]
    if bad:
        raise ViewrtError(
            f"--frames {','.join(map(str, bad))}: each count must be in {lo}..{hi} (more than the {model.pinned} "
            f"pinned frames the prefill takes, at most the export's {hi} positions)"
        )
    windows = cfg.windows or [model.default_window]
    if any(w < 1 for w in windows):
        raise ViewrtError(f"--windows: each window must be >= 1, got {windows}")
    return sorted(set(windows))


class _Run:
    """One benchmark run (see the module docstring)."""

    def __init__(self, cfg, model, incremental, recompute, images):
        self.cfg, self.model = cfg, model
        self.incremental, self.recompute = incremental, recompute
        self.images = images  # float32 [N, 3, S, S]
        self.rows: list[dict] = []
        self.curves: dict[str, dict] = {}
        self.memory: dict[str, dict] = {}
        self.skipped: dict[str, str] = {}
        self.precisions: dict[str, str] = {}
        self.mem = Memory()

    def _flops(self, cached: int) -> float | None:
        if self.model.flops is None:
            return None
        return float(self.model.flops(cached, 1)["step"])

    def _row(self, backend, kind, window, n, times, note="", **extra) -> dict:
        row = {k: "" for k in CSV_FIELDS}
        row.update(
            backend=backend, kind=kind, window=window, pinned=self.model.pinned, frames_seen=n
        )
        row.update(status="measured", reps=len(times), warmup=self.cfg.warmup, note=note, **extra)
        row.update(latency_stats(times))
        cached = min(n - 1, self.model.pinned + window - 1)
        fl = self._flops(cached) if kind != "recompute" else None
        if fl:
            row["flops"] = fl
            row["gflops"] = fl / row["median_ms"] / 1e6
        self.rows.append(row)
        return row

    def _stream_once(self, session, track_memory: bool) -> tuple[list[float], list[int]]:
        """One stream of max(frames) frames: per-frame ms (prefill frames: None) and RSS deltas."""
        p, n_max = self.model.pinned, max(self.cfg.frames)
        session.reset()
        session.prefill(self.images[:p])
        times, deltas = [None] * p, []
        for t in range(p, n_max):
            before = self.mem.rss() if track_memory else 0
            t0 = time.perf_counter()
            session.add_frame(self.images[t])
            times.append((time.perf_counter() - t0) * 1e3)
            if track_memory:
                deltas.append(self.mem.rss() - before)
        return times, deltas

    def run_incremental(self, b: StreamBackend, window: int, bar) -> None:
        key = f"{b.name} W={window}"
        gc.collect()
        try:
            session = b.open(window, self.model.pinned)
        except ViewrtError as e:
            self.skipped[key] = f"cannot open: {e}"
            bar.update()
            return
        try:
            self.precisions[b.name] = dict(session.info()).get("precision", "")
            runs, deltas = [], []
            for r in range(self.cfg.warmup + self.cfg.repeats):
                if r == self.cfg.warmup:
                    self.mem.reset_peak()
                # the session's first stream writes its buffers' pages: its RSS growth
                times, d = self._stream_once(session, r == 0 and b.kind == "runtime")
                deltas = deltas or d
                if r >= self.cfg.warmup:
                    runs.append(times)
            per_frame = [
                None if runs[0][t] is None else float(np.median([x[t] for x in runs]))
                for t in range(len(runs[0]))
            ]
            self.curves[key] = {
                "backend": b.name,
                "window": window,
                "median_ms_by_frame": per_frame,
            }
            for n in self.cfg.frames:
                self._row(
                    b.name,
                    b.kind,
                    window,
                    n,
                    [x[n - 1] for x in runs],
                    cache_bytes_per_frame=self.model.kv_bytes_per_frame
                    + self.model.side_bytes_per_frame,
                    rss_bytes=self.mem.rss(),
                    peak_rss_bytes=self.mem.peak(),
                )
            if deltas:
                self._memory(b.name, window, deltas, session)
        finally:
            session.close()
            del session
            gc.collect()
        bar.update()

    def _memory(self, name: str, window: int, deltas: list[int], session) -> None:
        m = self.model
        per_frame = m.kv_bytes_per_frame + m.side_bytes_per_frame
        page = rss_page_bytes(per_frame)
        # adds that fill the window write new pages; the first also allocates the step's
        # working memory (the engine's arena), so it is left out
        grow = deltas[1 : max(2, window)] or deltas
        self.memory[f"{name} W={window}"] = {
            "cache_bytes_per_frame": per_frame,
            "kv_bytes_per_frame": m.kv_bytes_per_frame,
            "side_bytes_per_frame": m.side_bytes_per_frame,
            "mean_rss_delta_per_add_bytes": float(np.mean(grow)),
            "mean_rss_delta_all_adds_bytes": float(np.mean(deltas)),
            "rss_page_bytes": page,
            "adds_counted": len(grow),
            "session_info": {
                k: v for k, v in dict(session.info()).items() if isinstance(v, (int, float, str))
            },
        }

    def run_recompute(self, b: RecomputeBackend, window: int, bar) -> None:
        """Each frame count: one untimed run (warm-up, and the time estimate), then up to
        ``repeats`` timed runs within the budget; over it, the warm-up's time alone."""
        budget = self.cfg.max_seconds_per_point or float("inf")
        gc.collect()
        for n in sorted(self.cfg.frames):
            imgs = self.images[:n]
            t0 = time.perf_counter()
            b.run(imgs, window, self.model.pinned)
            first = time.perf_counter() - t0
            fit = (budget - first) / max(first, 1e-9)
            reps = (
                self.cfg.repeats if fit == float("inf") else max(0, min(self.cfg.repeats, int(fit)))
            )
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                b.run(imgs, window, self.model.pinned)
                times.append((time.perf_counter() - t0) * 1e3)
            note = ""
            if reps == 0:
                times, note = [first * 1e3], "over the budget: the one (first, unwarmed) run"
            elif reps < self.cfg.repeats:
                note = f"{reps} of {self.cfg.repeats} repetitions to fit the budget"
            row = self._row(b.name, "recompute", window, n, times, note, rss_bytes=self.mem.rss())
            row["warmup"] = 1 if reps else 0
        bar.update()


def _results(run: _Run, cfg: StreamBenchConfig, windows, incremental, recompute, wall) -> dict:
    m = run.model
    return {
        "export_dir": str(cfg.export_dir),
        "family": "token-window",
        "preset": m.preset,
        "precision": m.precision,
        "weights": m.weights,
        "model": m.config,
        "pinned": m.pinned,
        "frames": cfg.frames,
        "windows": windows,
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "max_seconds_per_point": cfg.max_seconds_per_point,
        "backends": [b.name for b in incremental] + [b.name for b in recompute],
        "descriptions": {b.name: b.description for b in (*incremental, *recompute)},
        "kinds": {
            **{b.name: b.kind for b in incremental},
            **{b.name: "recompute" for b in recompute},
        },
        "precisions": run.precisions,
        "skipped": run.skipped,
        "machine": run.machine,
        "cpu_isa": cpu.isa_line(run.isa),
        "memory_peak": run.mem.peak_kind,
        "rows": run.rows,
        "curves": run.curves,
        "memory_per_frame": run.memory,
        "wall_seconds": round(wall, 1),
        "timing": "time.perf_counter around each add_frame (incremental) or forward_batch (recompute) call",
    }


def run_stream_bench(
    cfg: StreamBenchConfig,
    model: StreamModel,
    incremental: list[StreamBackend],
    recompute: list[RecomputeBackend],
    images: np.ndarray,
    skipped: dict[str, str] | None = None,
) -> dict:
    """Measure every backend at every window and write the outputs into ``cfg.out``.

    Args:
        cfg: what to measure.
        model: facts of the export.
        incremental, recompute: what runs (see the module docstring).
        images: float32 ``[>= max(frames), 3, S, S]`` in [0, 1], the sequence's frames.
        skipped: backends left out by the caller, with why (for the report).
    Returns:
        The results dict (as results.json).
    Raises:
        ViewrtError: a bad option (checked before any measurement) or too few frames.
    """
    from tqdm import tqdm

    windows = check_config(cfg, model)
    if len(images) < max(cfg.frames):
        raise ViewrtError(f"{len(images)} frames given, --frames needs {max(cfg.frames)}")
    run = _Run(cfg, model, incremental, recompute, np.ascontiguousarray(images, np.float32))
    run.machine = machine_info()
    run.machine["load_average_before"] = loadavg()
    run.isa = cpu.cpu_isa()
    run.skipped.update(skipped or {})
    t_start = time.perf_counter()
    total = len(windows) * (len(incremental) + len(recompute))
    with tqdm(
        total=total,
        desc="bench",
        unit="run",
        disable=not (cfg.progress and sys.stderr.isatty()),
        file=sys.stderr,
    ) as bar:
        for w in windows:
            for b in incremental:
                bar.set_postfix_str(f"{b.name} W={w}")
                run.run_incremental(b, w, bar)
            for b in recompute:
                bar.set_postfix_str(f"{b.name} W={w}")
                run.run_recompute(b, w, bar)
    run.machine["load_average_after"] = loadavg()
    res = _results(run, cfg, windows, incremental, recompute, time.perf_counter() - t_start)
    write_stream_outputs(res, cfg.out)
    return res
