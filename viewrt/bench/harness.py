"""The benchmark harness (torch-free): add-view latency of the runtime and of any other
object with the renderer interface (add_view, remove_view, render, info, last_timings),
plus full-recompute baselines, with memory, a component breakdown and achieved FLOP rates.

The step measured for every backend and every N is the one the upstream README times:
add one input view to N-1 cached views, then render the targets. Unlike upstream, the
views are real and distinct (one synthetic scene, :func:`viewrt.data.make_synthetic_scene`:
inputs are its first views, targets its last ones), every point gets warm-up runs, and the
result is a median with its spread. Timed repetitions at the same N remove the view just
added and add it again, so each one is a genuine add into N-1 cached views.

Backends: the runtime configurations of the registry (each configuration, and one column per
quantized precision a configuration runs), and the baselines a provider brings (``viewrt
bench`` passes :class:`viewrt.models.baselines.TorchBaselines`: PyTorch eager with a
preallocated or ``torch.cat`` cache, the same preallocated step through ``torch.compile``,
Efficient-LVSM without a cache, LVSM decoder-only). The harness does not import the runtime:
``viewrt bench`` hands it the runtime's ``open`` and registry lookups
(:class:`RuntimeAccess`, in :class:`BenchConfig`), as viewrt.evaluation takes renderer
factories. A full-recompute point whose estimated time exceeds the per-point budget is
measured with one target and scaled by the FLOP ratio, or, if even that is too long,
extrapolated from FLOPs at the rate measured at a smaller N; the table marks both.

A renderer with a ``compile(target_cameras) -> seconds`` method (the ``torch-compile``
columns) is compiled for each point's shape before the point's runs: compile time is a
column of its own (``compile_s``), never inside a step.

The roofline (:mod:`viewrt.bench.roofline`): the peak of each precision is the best GEMM
rate any engine present reaches in this run (numpy, torch, ONNX Runtime, OpenVINO; at a
large square size and at the model's MLP shape, before and after the measurements), and
each backend's achieved rate is given against the peak of the precision it computes in.

Outputs in OUT: results.csv, results.json, summary.md, latency_vs_views.png,
speedup.png, components.png (and the scene in OUT/_scene).
"""

from __future__ import annotations

import gc
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

import viewrt.bench.cpu as cpu
import viewrt.bench.roofline as roofline
from viewrt.bench.memory import Memory, loadavg, machine_info, rss_page_bytes
from viewrt.bench.report import COMPONENTS, CSV_FIELDS, write_outputs
from viewrt.contract.manifest import load_manifest
from viewrt.contract.precision import QUANTIZED_PRECISIONS
from viewrt.data import load_frame, load_scene, make_synthetic_scene
from viewrt.errors import ViewrtError
from viewrt.folders import locked_folder
from viewrt.geometry import Camera, NormalizationFrame


@dataclass(frozen=True)
class RuntimeAccess:
    """What the harness uses of the runtime, handed in by ``viewrt bench`` (only
    viewrt/cli imports viewrt.runtime).

    Attributes:
        open: ``viewrt.runtime.open(folder, config, max_views=, frame=, threads=,
            attention_budget_mib=)`` -> a renderer (add_view, remove_view, render, info,
            last_timings, close).
        configs: ``() -> {name: row}``: the registry's configurations; a row has
            ``description`` and ``quantized`` (the quantized precisions it runs).
        unavailable: ``(config, manifest, threads=) -> str | None``: why a configuration
            cannot run here on that export, loading no graph.
        estimate: ``(export_dir, max_views, targets, device) -> None``: prints the one-line
            memory estimate (None: no estimate).
    """

    open: Callable
    configs: Callable[[], dict]
    unavailable: Callable[..., str | None]
    estimate: Callable | None = None


def quantized_configs(configs: dict) -> dict[str, tuple[str, str]]:
    """``{"<configuration>-<precision>": (configuration, precision)}``: the runtime
    configurations (``configs``: the registry's rows by name) that run a second, quantized
    export (``viewrt calib``; ``--quantized-export``), from each row's ``quantized``."""
    return {
        f"{c}-{p}": (c, p)
        for p in QUANTIZED_PRECISIONS
        for c, row in configs.items()
        if p in row.quantized
    }


def runtime_names(configs: dict) -> list[str]:
    """The runtime's bench columns: every configuration, then the quantized ones."""
    return [*configs, *quantized_configs(configs)]


def all_backend_names(configs: dict, baselines=None, quantized: str | None = None) -> list[str]:
    """The bench vocabulary: runtime configurations, those on a quantized export of
    precision ``quantized`` (if any), then the provider's baselines."""
    q = [n for n, (_, p) in quantized_configs(configs).items() if p == quantized]
    return [*configs, *q, *(baselines.names if baselines is not None else ())]


@dataclass
class BenchConfig:
    """What to measure.

    Attributes:
        export_dir: an export folder (manifest.json, encoder.onnx, decoder.onnx).
        out: output folder.
        views: cached-view counts N to measure (each <= the export's max_views).
        targets: target-view counts.
        backends: backend names (None: every available one for ``device``).
        repeats: timed repetitions per point; warmup: untimed ones before them.
        max_seconds_per_point: budget of a full-recompute point (0: none).
        threads: CPU threads for PyTorch and ONNX Runtime (None: their defaults).
        device: "cpu" or "cuda" for the PyTorch backends.
        seed: scene seed.
        attention_budget_mib: the runtime's attention memory budget (see viewrt.runtime.open).
        quantized_export: an int8/fp8 export of the same model (``viewrt calib``), run by the
            ``openvino-int8``/``ort-int8`` (or ``-fp8``) columns.
        runtime: the runtime's open and registry lookups (None: no runtime columns).
        gemm_size: side of the large square GEMM of the roofline probes (the other probe
            is the model's MLP shape).
    """

    export_dir: Path
    out: Path
    views: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 48, 64])
    targets: list[int] = field(default_factory=lambda: [1, 8])
    backends: list[str] | None = None
    repeats: int = 5
    warmup: int = 2
    max_seconds_per_point: float = 20.0
    threads: int | None = None
    device: str = "cpu"
    seed: int = 0
    attention_budget_mib: float = 256.0
    quantized_export: Path | None = None
    runtime: RuntimeAccess | None = None
    gemm_size: int = 2048


# --------------------------------------------------------------------------- statistics


def latency_stats(times_ms: list[float]) -> dict:
    """Median, min, max and quartiles (ms) of repeated timings, the bench tables' columns."""
    a = np.asarray(times_ms, float)
    return {
        "median_ms": float(np.median(a)),
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "q1_ms": float(np.percentile(a, 25)),
        "q3_ms": float(np.percentile(a, 75)),
    }


def _median_components(comps: list[dict]) -> dict:
    return {c: float(np.median([d.get(c, 0.0) for d in comps])) for c in COMPONENTS}


def _step_components(add: dict, render: dict, step_ms: float) -> dict:
    """One step's components from the renderer's last_timings of add_view and render."""
    out = {c: 0.0 for c in COMPONENTS}
    for part in (add, render):
        for k, v in part.items():
            if k != "total":
                out[k if k in out else "other"] += float(v)
    out["other"] += max(0.0, step_ms - sum(out.values()))
    return out


# --------------------------------------------------------------------------- the benchmark


class Bench:
    """One benchmark run.

    Args:
        cfg: what to measure.
        baselines: a provider of non-runtime backends (see viewrt.models.baselines.
            TorchBaselines: names, kinds, descriptions, labels, row_notes, precisions, open,
            recompute, flops, unavailable, gemm_rates, sync, device_peak_reset, device_peak,
            machine, notes, close), made by
            ``make_baselines(manifest)`` once the manifest is checked; None: runtime only.
        progress: show a progress bar (on a terminal).
    """

    def __init__(self, cfg: BenchConfig, make_baselines=None, progress: bool = True):
        self.cfg, self.progress = cfg, progress
        self.make_baselines = make_baselines
        self.base = None
        self.rows: list[dict] = []
        self.growth: dict[str, dict] = {}
        self.notes: list[str] = []
        self.steps: dict[str, list] = {}
        self.access = cfg.runtime
        # runtime configurations, by name (none without a RuntimeAccess)
        self.runtime = dict(cfg.runtime.configs()) if cfg.runtime is not None else {}
        self.quantized = quantized_configs(self.runtime)  # name -> (configuration, precision)
        self.compile_logs: dict[str, dict] = {}

    # -- setup ----------------------------------------------------------------------------
    def check(self) -> None:
        """Everything a user can get wrong, before any heavy work."""
        cfg = self.cfg
        if cfg.repeats < 1:
            raise ViewrtError(f"--repeats must be at least 1, got {cfg.repeats}")
        if cfg.warmup < 0:
            raise ViewrtError(f"--warmup must be >= 0, got {cfg.warmup}")
        if cfg.max_seconds_per_point < 0:
            raise ViewrtError(
                f"--max-seconds-per-point must be >= 0 (0: no budget), got {cfg.max_seconds_per_point}"
            )
        if cfg.threads is not None and cfg.threads < 1:
            raise ViewrtError(f"--threads must be >= 1, got {cfg.threads}")
        if cfg.device not in ("cpu", "cuda"):
            raise ViewrtError(f"--device must be cpu or cuda, got {cfg.device!r}")
        self.manifest = m = load_manifest(cfg.export_dir)
        if max(cfg.views) > m.max_views:
            raise ViewrtError(
                f"--views up to {max(cfg.views)} needs an export with max_views >= {max(cfg.views)}; {cfg.export_dir} "
                f"has max_views {m.max_views} (re-export with `viewrt export --max-views {max(cfg.views)}`)"
            )
        self.qmanifest = None
        if cfg.quantized_export is not None:
            q = self.qmanifest = load_manifest(cfg.quantized_export)
            if not q.precision_row.quantized:
                what = (
                    f"{q.precision} matmuls, K/V cache {q.kv_dtype} (viewrt calib --kv alone)"
                    if q.quantization
                    else f"an unquantized {q.precision} export"
                )
                raise ViewrtError(
                    f"--quantized-export {cfg.quantized_export}: {what}; the quantized columns take int8 or fp8 "
                    f"matmuls: make one with `viewrt calib {cfg.export_dir} --out DIR --precision int8` (add --kv int8 "
                    "for the 8-bit cache)"
                )
            src = (q.quantization or {}).get("source_export", {}).get("weights_sha256")
            if src != m.weights_sha256:
                raise ViewrtError(
                    f"--quantized-export {cfg.quantized_export} was quantized from other weights than {cfg.export_dir}"
                )
            if max(cfg.views) > q.max_views:
                raise ViewrtError(
                    f"--views up to {max(cfg.views)}: {cfg.quantized_export} has max_views {q.max_views}"
                )
        if self.make_baselines is not None and (
            cfg.backends is None or set(cfg.backends) - set(self.runtime) - set(self.quantized)
        ):
            self.base = self.make_baselines(m)
            self.notes += self.base.notes
        self.selected, self.skipped = self._available(cfg.backends)
        if cfg.backends is not None and self.skipped:  # asked for by name: say why, before any work
            raise ViewrtError(
                "cannot run " + "; ".join(f"{b}: {why}" for b, why in self.skipped.items())
            )
        if not self.selected:
            raise ViewrtError(
                "no backend can run here: "
                + "; ".join(f"{b}: {why}" for b, why in self.skipped.items())
            )

    def _available(self, names: list[str] | None) -> tuple[list[str], dict[str, str]]:
        """(backends that can run here, {backend: why not} for the others)."""
        if names is None:
            names = all_backend_names(
                self.runtime,
                self.base,
                self.qmanifest.precision if self.qmanifest is not None else None,
            )
        selected, skipped = [], {}
        for b in names:
            why = self._why_not(b)
            if why is None:
                selected.append(b)
            else:
                skipped[b] = why
        return selected, skipped

    def _why_not(self, backend: str) -> str | None:
        """Why a backend cannot run in this bench (packages, machine, export files,
        options; checked from the registry without loading any graph), or None."""
        threads = self.cfg.threads
        if backend in self.quantized:
            config, precision = self.quantized[backend]
            if self.qmanifest is None:
                return "needs --quantized-export DIR (an int8/fp8 export from `viewrt calib`)"
            if self.qmanifest.precision != precision:
                return f"the quantized export is {self.qmanifest.precision}"
            return self.access.unavailable(config, self.qmanifest, threads=threads)
        if backend in self.runtime:
            return self.access.unavailable(backend, self.manifest, threads=threads)
        if self.base is None:
            return "no baselines provider in this run (viewrt bench brings the PyTorch ones)"
        if backend not in self.base.names:
            return (
                "neither a baseline nor a runtime configuration of this run (BenchConfig.runtime)"
            )
        return self.base.unavailable(backend)

    def setup(self) -> None:
        cfg, m = self.cfg, self.manifest
        self.mem = Memory()
        self.machine = machine_info()
        if self.base is not None:
            self.machine.update(self.base.machine())
        self.machine["load_average_before"] = loadavg()
        self.machine["threads"] = (
            cfg.threads or "default (ONNX Runtime: one per physical core; torch: its default)"
        )
        mlp = (
            m.max_targets * m.tokens_per_view,
            m.d_model,
            int(m.config.get("mlp_mult", 4)) * m.d_model,
        )
        self.gemm_shapes = roofline.probe_shapes(cfg.gemm_size, mlp)
        self.peaks_before = self._measure_peaks()
        fp32 = self.peaks_before["fp32"]["gflops"]
        self.rate = fp32 * 1e9  # FLOP/s: the fp32 peak, for the full-recompute budget
        self.isa, self.renders = cpu.cpu_isa(), {}
        self.precisions = dict(self.base.precisions) if self.base is not None else {}
        n_in, n_tg = max(cfg.views), max(cfg.targets)
        path = make_synthetic_scene(
            cfg.out / "_scene", "bench", n_views=n_in + n_tg, size=m.image_size, seed=cfg.seed
        )
        frames = [load_frame(f, m.image_size) for f in load_scene(path).frames]
        cams = [Camera(c2w, k) for _, k, c2w in frames]
        self.images = [img for img, _, _ in frames[:n_in]]
        self.in_cams, self.tg_cams = cams[:n_in], cams[n_in:]
        self.frame = NormalizationFrame.from_cameras(np.stack([c.c2w for c in cams]))
        self.scene_path = path

    def _measure_peaks(self) -> dict:
        """Every engine's GEMM rate per precision (viewrt.bench.roofline.measure)."""
        probe = self.base.gemm_rates if self.base is not None else None
        return roofline.measure(self.gemm_shapes, threads=self.cfg.threads, torch_probe=probe)

    def _sync(self) -> None:
        if self.base is not None:
            self.base.sync()

    def kind(self, backend: str) -> str:
        return "runtime" if self._runtime(backend) else self.base.kinds[backend]

    def _runtime(self, backend: str) -> bool:
        return backend in self.runtime or backend in self.quantized

    # -- FLOPs --------------------------------------------------------------------------------
    def flops(self, backend: str, n: int, t: int) -> dict:
        if self.base is None:
            return {"encode": 0.0, "decode": 0.0, "total": 0.0}
        return self.base.flops(backend, n, t)

    # -- rows ---------------------------------------------------------------------------------
    def _row(
        self,
        backend,
        n,
        t,
        status,
        reps,
        warmup,
        times=None,
        comps=None,
        note="",
        est_ms=None,
        **mem,
    ) -> dict:
        fl = self.flops(backend, n, t)
        row = {k: "" for k in CSV_FIELDS}
        row.update(
            backend=backend,
            n_views=n,
            n_targets=t,
            status=status,
            reps=reps,
            warmup=warmup,
            note=note,
            flops=fl["total"],
        )
        row.update(mem)
        if times:
            row.update(latency_stats(times))
        elif est_ms is not None:
            row["median_ms"] = est_ms
        if comps:
            row.update({f"{c}_ms": v for c, v in comps.items() if c in COMPONENTS})
            if self.kind(backend) != "recompute":
                row["overhead_ms"] = comps["_overhead"]
            if comps["decode"] > 0 and fl["decode"] > 0:
                row["decode_gflops"] = fl["decode"] / comps["decode"] / 1e6
        if row["median_ms"] != "" and fl["total"] > 0:
            row["gflops"] = fl["total"] / row["median_ms"] / 1e6
        self.rows.append(row)
        return row

    # -- incremental backends (runtime and PyTorch eager) -----------------------------------
    def _open(self, backend: str):
        if self._runtime(backend):
            folder, config = (
                (self.cfg.quantized_export, self.quantized[backend][0])
                if backend in self.quantized
                else (self.cfg.export_dir, backend)
            )
            r = self.access.open(
                folder,
                config,
                max_views=max(self.cfg.views),
                frame=self.frame,
                threads=self.cfg.threads,
                attention_budget_mib=self.cfg.attention_budget_mib,
            )
            self.precisions[backend] = r.info()["precision"]
            return r
        return self.base.open(backend, max(self.cfg.views), self.frame)

    def _device_peak_reset(self, backend: str) -> None:
        if not self._runtime(backend):
            self.base.device_peak_reset()

    def _device_peak(self, backend: str):
        if not self._runtime(backend):
            return self.base.device_peak()
        return ""  # device memory of the runtime's GPU backends is not probed here

    def _compile(self, backend: str, r, targets) -> float | str:
        """Compile a compiling renderer (one with ``compile(target_cameras) -> seconds``)
        for this point's shape, before its timed runs: the seconds it took, or "" for a
        renderer that does not compile."""
        if not callable(getattr(r, "compile", None)):
            return ""
        seconds = float(r.compile(targets))
        self.compile_logs[backend] = dict(getattr(r, "compile_log", {}))
        return seconds

    def _drop(self, backend: str, why: str) -> None:
        """A backend that failed during its measurement: a skipped column, with the reason."""
        self.rows = [r for r in self.rows if r["backend"] != backend]
        self.steps = {k: v for k, v in self.steps.items() if not k.startswith(f"{backend} N=")}
        self.renders = {k: v for k, v in self.renders.items() if k[0] != backend}
        self.growth.pop(backend, None)
        self.compile_logs.pop(backend, None)
        if backend in self.selected:
            self.selected.remove(backend)
        self.skipped[backend] = why

    def incremental(self, backend: str, bar) -> None:
        cfg, mem = self.cfg, self.mem
        gc.collect()
        try:
            r = self._open(backend)
        except ViewrtError as e:
            self._drop(backend, f"cannot open: {e}")
            bar.update(len(cfg.views))
            return
        try:
            ids, deltas = [], []
            for n in range(1, max(cfg.views) + 1):
                before = mem.rss()
                ids.append(r.add_view(self.images[n - 1], self.in_cams[n - 1]))
                self._sync()
                deltas.append(mem.rss() - before)
                if n not in cfg.views:
                    continue
                bar.set_postfix_str(f"{backend} N={n}")
                for t in cfg.targets:
                    tg = self.tg_cams[:t]
                    compile_s = self._compile(backend, r, tg)  # outside the timed runs
                    self._device_peak_reset(backend)
                    mem.reset_peak()
                    times, comps, raw = [], [], []
                    for i in range(cfg.warmup + cfg.repeats):
                        r.remove_view(ids[-1])
                        self._sync()
                        t0 = time.perf_counter()
                        ids[-1] = r.add_view(self.images[n - 1], self.in_cams[n - 1])
                        add = dict(r.last_timings)
                        images = r.render(tg)
                        self._sync()
                        step = (time.perf_counter() - t0) * 1e3
                        ren = dict(r.last_timings)
                        if i >= cfg.warmup:
                            times.append(step)
                            c = _step_components(add, ren, step)
                            c["_overhead"] = step - c["encode"] - c["decode"]
                            comps.append(c)
                            raw.append({"step_ms": step, "add": add, "render": ren})
                    self.renders[(backend, n, t)] = np.asarray(
                        images, np.float32
                    )  # for the reduced-precision error
                    med = _median_components(comps)
                    med["_overhead"] = float(np.median([c["_overhead"] for c in comps]))
                    info = r.info()
                    row = self._row(
                        backend,
                        n,
                        t,
                        "measured",
                        cfg.repeats,
                        cfg.warmup,
                        times,
                        med,
                        cache_bytes_manifest=self.manifest.kv_bytes_per_view * n,
                        cache_bytes_used=info["bytes_used"],
                        cache_bytes_reserved=info["bytes_reserved"],
                        rss_bytes=mem.rss(),
                        peak_rss_bytes=mem.peak(),
                        device_peak_bytes=self._device_peak(backend),
                        compile_s=compile_s,
                    )
                    self.steps[f"{backend} N={n} T={t}"] = raw
                    if not self._runtime(backend) and backend in self.base.row_notes:
                        row["note"] = self.base.row_notes[backend]
                bar.update()
            later = (
                deltas[1:] or deltas
            )  # the first add also allocates the encoder's working memory
            n_buf = 2 * self.manifest.n_layers  # one K and one V buffer per layer
            page = rss_page_bytes(max(cfg.views) * self.manifest.kv_bytes_per_view // n_buf)
            self.growth[backend] = {
                # RSS counts whole pages: each buffer's resident extent is known to one page, so the mean over
                # the adds is known to about n_buf * page / adds
                "rss_resolution_bytes_per_view": n_buf * page / len(later),
                "rss_page_bytes": page,
                "rss_delta_per_add_bytes": [int(d) for d in deltas],
                "mean_rss_delta_per_add_bytes": float(np.mean(later)),
                "bytes_per_view": int(r.info()["bytes_per_view"]),
                "manifest_bytes_per_view": int(self.manifest.kv_bytes_per_view),
            }
        finally:
            if hasattr(r, "close"):
                r.close()
            del r
            gc.collect()

    # -- full-recompute baselines -------------------------------------------------------------
    def recompute(self, backend: str, bar) -> None:
        cfg, mem = self.cfg, self.mem
        forward = self.base.recompute(backend, self.images, self.in_cams, self.tg_cams, self.frame)
        budget = cfg.max_seconds_per_point or math.inf
        last_rate = None  # FLOP/s measured at the previous point of this backend

        if cfg.warmup:
            forward(min(cfg.views), 1)  # one-time initialization, untimed
        for n in cfg.views:
            bar.set_postfix_str(f"{backend} N={n}")
            for t in cfg.targets:
                rate = last_rate or 0.5 * self.rate
                full = self.flops(backend, n, t)["total"]
                est = full / rate
                t_run, status, note = t, "measured", ""
                if est > budget:
                    one = self.flops(backend, n, 1)["total"]
                    if t > 1 and one / rate <= budget:
                        t_run, status = 1, "scaled"
                        note = f"measured with 1 target, scaled by the FLOP ratio {full / one:.2f} (estimated {est:.1f} s > budget {budget:g} s)"
                    else:
                        basis = (
                            f"{last_rate / 1e9:.1f} GFLOP/s measured at a smaller N"
                            if last_rate
                            else f"half the matmul rate ({0.5 * self.rate / 1e9:.0f} GFLOP/s)"
                        )
                        note = f"not run (estimated {est:.1f} s > budget {budget:g} s); extrapolated from FLOPs at {basis}"
                        self._row(backend, n, t, "extrapolated", 0, 0, note=note, est_ms=est * 1e3)
                        continue
                run_flops = self.flops(backend, n, t_run)["total"]
                runs = (
                    max(1, int(budget // (run_flops / rate)))
                    if budget < math.inf
                    else cfg.warmup + cfg.repeats
                )
                reps = min(cfg.repeats, runs)
                warm = min(cfg.warmup, runs - reps)
                if reps < cfg.repeats:
                    note = (
                        note + "; " if note else ""
                    ) + f"{reps} of {cfg.repeats} repetitions ({warm} warm-up) to fit the budget"
                self._device_peak_reset(backend)
                mem.reset_peak()
                for _ in range(warm):
                    forward(n, t_run)
                times = [forward(n, t_run) for _ in range(reps)]
                last_rate = run_flops / (float(np.median(times)) / 1e3)
                if t_run != t:
                    times = [x * full / run_flops for x in times]
                comps = {c: 0.0 for c in COMPONENTS}
                comps["forward"] = float(np.median(times))
                self._row(
                    backend,
                    n,
                    t,
                    status,
                    reps,
                    warm,
                    times,
                    comps,
                    note=note,
                    rss_bytes=mem.rss(),
                    peak_rss_bytes=mem.peak(),
                    device_peak_bytes=self._device_peak(backend),
                )
            bar.update()
        del forward
        gc.collect()

    # -- run -------------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        t_start = time.perf_counter()
        try:
            self.setup()
            with tqdm(
                total=len(self.selected) * len(cfg.views),
                desc="bench",
                unit="point",
                disable=not (self.progress and sys.stderr.isatty()),
                file=sys.stderr,
            ) as bar:
                for b in list(self.selected):
                    try:
                        if self.kind(b) == "recompute":
                            self.recompute(b, bar)
                        else:
                            self.incremental(b, bar)
                    except ViewrtError as e:  # e.g. a compilation failing at a new shape
                        self._drop(b, f"failed: {e}")
            # the machine's speed again: each probe keeps the better of the two, and a change says the run was disturbed
            after = self._measure_peaks()
        finally:
            if self.base is not None:
                self.base.close()
        self.peaks = roofline.merge(self.peaks_before, after)
        self.defects = self._rates_against_peaks()
        self.wall_s = time.perf_counter() - t_start
        self.machine["load_average_after"] = loadavg()
        return self.results()

    def _rates_against_peaks(self) -> list[dict]:
        """Each row's step and decoder rates as fractions of the peak of its backend's
        precision (``ratio_to_peak``, ``decode_ratio_to_peak``); a rate above its peak is
        left without a fraction and returned as a defect of the peak."""
        defects = []
        for r in self.rows:
            precision = self.precisions.get(r["backend"])
            for key, what in (("gflops", "step"), ("decode_gflops", "decoder")):
                if r[key] == "":
                    continue
                frac, p, defect = roofline.rate_against_peak(r[key], precision, self.peaks)
                r["peak_precision"] = p or ""
                r[key.replace("gflops", "ratio_to_peak")] = "" if frac is None else frac
                if defect:
                    defects.append(
                        {
                            "backend": r["backend"],
                            "n_views": r["n_views"],
                            "n_targets": r["n_targets"],
                            "what": what,
                            "gflops": r[key],
                            "precision": p,
                            "peak_gflops": self.peaks[p]["gflops"],
                            "peak_best": self.peaks[p]["best"],
                        }
                    )
        return defects

    def results(self) -> dict:
        m = self.manifest
        descriptions = {b: row.description for b, row in self.runtime.items()}
        descriptions.update(
            {
                b: f"{self.runtime[c].description}, on the {p} Q/DQ export ({self.cfg.quantized_export})"
                for b, (c, p) in self.quantized.items()
            }
        )
        if self.base is not None:
            descriptions.update(self.base.descriptions)
        base = self.base
        return {
            "export_dir": str(self.cfg.export_dir),
            "preset": m.preset,
            "precision": m.precision,
            "model": {
                **m.config,
                "n_layers": m.n_layers,
                "d_model": m.d_model,
                "image_size": m.image_size,
                "patch_size": m.patch_size,
            },
            "lvsm_baseline": {"preset": base.lvsm_name, **base.lvsm_cfg.to_dict()}
            if base is not None
            else None,
            "kv_bytes_per_view": m.kv_bytes_per_view,
            "views": self.cfg.views,
            "targets": self.cfg.targets,
            "repeats": self.cfg.repeats,
            "warmup": self.cfg.warmup,
            "max_seconds_per_point": self.cfg.max_seconds_per_point,
            "attention_budget_mib": self.cfg.attention_budget_mib,
            "backends": self.selected,
            "skipped": self.skipped,
            "descriptions": {b: descriptions[b] for b in self.selected},
            "kinds": {b: self.kind(b) for b in self.selected},
            "labels": dict(base.labels) if base is not None else {},
            "machine": self.machine,
            "matmul": {
                "gflops": self.peaks["fp32"]["gflops"],
                "best": self.peaks["fp32"]["best"],
                "runs": self.peaks["fp32"]["runs"],
                "before_gflops": self.peaks["fp32"]["before_gflops"],
                "after_gflops": self.peaks["fp32"]["after_gflops"],
                "shapes": [list(x) for x in self.gemm_shapes],
            },
            "compile": self.compile_logs,
            "memory_peak": self.mem.peak_kind,
            "scene": str(self.scene_path),
            "rows": self.rows,
            "cache_growth": self.growth,
            "steps": self.steps,
            "notes": self.notes,
            "wall_seconds": round(self.wall_s, 1),
            "cpu_precision": {
                "isa": self.isa,
                "precisions": {b: self.precisions.get(b) for b in self.selected},
                "peak_rates": self.peaks,
                "peak_defects": self.defects,
                "accuracy": cpu.accuracy(self.renders, self.precisions, self.selected),
            },
            "timing": "time.perf_counter around add_view + render"
            + (" with device synchronization" if self.cfg.device == "cuda" else ""),
        }


def run_bench(cfg: BenchConfig, make_baselines=None, progress: bool = True) -> tuple[dict, str]:
    """Run the benchmark and write its outputs into ``cfg.out``.

    Args:
        cfg: what to measure.
        make_baselines: ``fn(manifest) -> provider`` of non-runtime backends (see Bench).
        progress: show a progress bar on a terminal.
    Returns: (results dict as in results.json, summary.md text).
    Raises: ViewrtError on bad options, an export that cannot hold max(views), or an
        unknown backend (checked before any measurement).
    """
    b = Bench(cfg, make_baselines, progress)
    b.check()
    if cfg.runtime is not None and cfg.runtime.estimate is not None:  # the memory estimate first
        cfg.runtime.estimate(cfg.export_dir, max(cfg.views), max(cfg.targets), cfg.device)
    with locked_folder(
        cfg.out, "--out", clean_on_error=True
    ):  # a failed run leaves no empty folder behind
        res = b.run()
        return res, write_outputs(res, cfg.out)
