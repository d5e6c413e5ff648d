"""``viewrt bench``: add-view latency of the runtime against PyTorch eager and the
full-recompute baselines, with memory, a component breakdown and achieved FLOP rates.

The step measured for every backend and every N is the one the upstream README times:
add one input view to N-1 cached views, then render the targets. Unlike upstream, the
views are real and distinct (one synthetic scene, :func:`viewrt.data.make_synthetic_scene`:
inputs are its first views, targets its last ones), every point gets warm-up runs, and the
result is a median with its spread. Timed repetitions at the same N remove the view just
added and add it again, so each one is a genuine add into N-1 cached views.

Backends (``BACKENDS``):

- ``ort`` (and ``ort-cuda``, ``ort-trt``, ``trt`` where present): the viewrt runtime;
- ``torch-fp32`` / ``torch-bf16``: PyTorch eager with a preallocated cache (bf16 autocast
  for the second); ``torch-cat``: PyTorch eager growing the cache with ``torch.cat`` as
  upstream does, in fp32 (upstream also autocasts to bf16; fp32 keeps it comparable with
  ``ort`` and ``torch-fp32``);
- ``efflvsm-nocache``: ``EfficientLVSM.forward`` over all N views each step (no cache);
  ``lvsm``: LVSM decoder-only of the same width and depth (2 x the layer pairs). Both fp32,
  inputs prepared outside the timed region. A point whose estimated time exceeds the
  per-point budget is measured with one target and scaled by the FLOP ratio, or, if even
  that is too long, extrapolated from FLOPs at the rate measured at a smaller N; the
  table marks both.

Outputs in OUT: results.csv, results.json, summary.md, latency_vs_views.png,
speedup.png, components.png (and the scene in OUT/_scene).
"""

from __future__ import annotations

import csv
import gc
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from viewrt.errors import ViewrtError, cli_errors

BACKENDS: dict[str, str] = {
    "ort": "viewrt runtime, ONNX Runtime CPU",
    "ort-cuda": "viewrt runtime, ONNX Runtime CUDA EP",
    "ort-trt": "viewrt runtime, ONNX Runtime TensorRT EP",
    "trt": "viewrt runtime, native TensorRT engines",
    "torch-fp32": "PyTorch eager fp32, preallocated cache",
    "torch-bf16": "PyTorch eager bf16 autocast, preallocated cache",
    "torch-cat": "PyTorch eager fp32, cache grown with torch.cat (upstream style)",
    "efflvsm-nocache": "Efficient-LVSM without a cache (full recompute), fp32",
    "lvsm": "LVSM decoder-only, same width and depth (full recompute), fp32",
}
# runtime backend name -> (viewrt.runtime.open backend, device)
RUNTIME = {"ort": ("ort", "cpu"), "ort-cuda": ("ort", "cuda:0"), "ort-trt": ("ort", "tensorrt:0"), "trt": ("trt", "cuda:0")}
TORCH = {"torch-fp32": ("prealloc", False), "torch-bf16": ("prealloc", True), "torch-cat": ("cat", False)}
RECOMPUTE = ("efflvsm-nocache", "lvsm")
LABELS = {"efflvsm-nocache": "effLVSM no-cache", "lvsm": "LVSM dec-only"}
COMPONENTS = ("preprocess", "h2d", "encode", "cache", "decode", "d2h", "postprocess", "forward", "other")

# Upstream README, "Published efficiency": N -> (Efficient-LVSM ms, LVSM dec-only ms, speedup),
# one GPU, res256, 8 targets, bf16 autocast, mean of 20, no warm-up, one view repeated.
UPSTREAM = {4: (24.37, 123.1, 5.1), 8: (28.62, 286.0, 10.0), 16: (42.96, 801.7, 18.7),
            32: (72.84, 2592, 35.6), 48: (103.26, 5408, 52.4), 64: (138.43, 9231, 66.7)}

CSV_FIELDS = [
    "backend", "n_views", "n_targets", "status", "reps", "warmup", "median_ms", "min_ms", "max_ms", "q1_ms", "q3_ms",
    *[f"{c}_ms" for c in COMPONENTS], "overhead_ms", "flops", "gflops", "ratio_to_matmul", "decode_gflops",
    "decode_ratio_to_matmul", "cache_bytes_manifest", "cache_bytes_used", "cache_bytes_reserved", "rss_bytes",
    "peak_rss_bytes", "device_peak_bytes", "note",
]


# --------------------------------------------------------------------------- options


def parse_int_list(text: str, what: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (sorted, unique, all >= 1).

    Raises: ViewrtError naming the option and the bad item.
    """
    out = set()
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        try:
            v = int(item)
        except ValueError:
            raise ViewrtError(f"{what}: {item!r} is not an integer (expected a comma-separated list such as 1,2,4)") from None
        if v < 1:
            raise ViewrtError(f"{what}: values must be >= 1, got {v}")
        out.add(v)
    if not out:
        raise ViewrtError(f"{what}: expected at least one value")
    return sorted(out)


def parse_backends(text: str | None) -> list[str] | None:
    """Comma-separated backend names (None: the default set). Raises on an unknown name."""
    if text is None:
        return None
    names = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise ViewrtError(f"unknown backend{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                          f"expected some of {', '.join(BACKENDS)}")
    if not names:
        raise ViewrtError("--backends: expected at least one backend")
    return list(dict.fromkeys(names))


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


# --------------------------------------------------------------------------- machine


class _Memory:
    """Resident memory of this process: current (psutil or /proc) and a resettable peak
    (/proc/self/clear_refs + VmHWM on Linux; else the lifetime peak from getrusage)."""

    def __init__(self):
        try:
            import psutil

            self._proc = psutil.Process()
        except ModuleNotFoundError:
            self._proc = None
        self.resettable = True
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.resettable = False
        self.peak_kind = "per point (VmHWM reset before each point)" if self.resettable else "process lifetime peak (getrusage)"

    def rss(self) -> int:
        if self._proc is not None:
            return int(self._proc.memory_info().rss)
        return self._status("VmRSS") or 0

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def reset_peak(self) -> None:
        if self.resettable:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.resettable = False

    def peak(self) -> int:
        if self.resettable:
            hwm = self._status("VmHWM")
            if hwm:
                return hwm
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def machine_info(device: str) -> dict:
    """CPU model, cores, memory, library versions (and the GPU's name where used)."""
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "logical_cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "torch_threads": torch.get_num_threads()}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_bytes"] = psutil.virtual_memory().total
    except ModuleNotFoundError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _rss_page_bytes(buffer_bytes: int) -> int:
    """The page size RSS counts a buffer of this size in (2 MiB transparent huge pages where enabled)."""
    small = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    try:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
        huge = int(Path("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return small
    return huge if "[never]" not in mode and buffer_bytes >= huge else small


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def measure_matmul_rate(model_shape: tuple[int, int, int] | None = None, reps: int = 5) -> dict:
    """This machine's fp32 matrix-multiply rate (GFLOP/s): median of ``reps`` runs for each
    of torch and numpy on 1024^3, 2048^3 and the model's MLP shape; the rate is the best.

    Returns: {"gflops": best, "best": "lib MxKxN", "runs": {"lib MxKxN": gflops}}.
    """
    import torch

    shapes = [(1024, 1024, 1024), (2048, 2048, 2048)]
    if model_shape is not None:
        shapes.append(tuple(int(s) for s in model_shape))
    runs = {}
    g = torch.Generator().manual_seed(0)
    for m, k, n in shapes:
        a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        for lib, (x, y), mm in (("torch", (a, b), torch.matmul), ("numpy", (a.numpy(), b.numpy()), np.matmul)):
            mm(x, y)  # warm-up
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                mm(x, y)
                ts.append(time.perf_counter() - t0)
            runs[f"{lib} {m}x{k}x{n}"] = round(2 * m * k * n / float(np.median(ts)) / 1e9, 2)
    best = max(runs, key=runs.get)
    a, b = torch.randn(2048, 2048, generator=g).bfloat16(), torch.randn(2048, 2048, generator=g).bfloat16()
    a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    bf16 = round(2 * 2048**3 / float(np.median(ts)) / 1e9, 2)
    return {"gflops": runs[best], "best": best, "runs": runs, "bf16_gflops": bf16,
            "note": "fp32 (bf16 for reference), median of %d runs each; numpy threads are its BLAS default" % reps}


# --------------------------------------------------------------------------- statistics


def _stats(times_ms: list[float]) -> dict:
    a = np.asarray(times_ms, float)
    return {"median_ms": float(np.median(a)), "min_ms": float(a.min()), "max_ms": float(a.max()),
            "q1_ms": float(np.percentile(a, 25)), "q3_ms": float(np.percentile(a, 75))}


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


class _Bench:
    def __init__(self, cfg: BenchConfig, progress: bool):
        self.cfg, self.progress = cfg, progress
        self.rows: list[dict] = []
        self.growth: dict[str, dict] = {}
        self.notes: list[str] = []
        self.steps: dict[str, list] = {}

    # -- setup ----------------------------------------------------------------------------
    def check(self) -> None:
        """Everything a user can get wrong, before any heavy work."""
        from viewrt.runtime.manifest import load_manifest

        cfg = self.cfg
        if cfg.repeats < 1:
            raise ViewrtError(f"--repeats must be at least 1, got {cfg.repeats}")
        if cfg.warmup < 0:
            raise ViewrtError(f"--warmup must be >= 0, got {cfg.warmup}")
        if cfg.max_seconds_per_point < 0:
            raise ViewrtError(f"--max-seconds-per-point must be >= 0 (0: no budget), got {cfg.max_seconds_per_point}")
        if cfg.threads is not None and cfg.threads < 1:
            raise ViewrtError(f"--threads must be >= 1, got {cfg.threads}")
        if cfg.device not in ("cpu", "cuda"):
            raise ViewrtError(f"--device must be cpu or cuda, got {cfg.device!r}")
        self.manifest = m = load_manifest(cfg.export_dir)
        if m.data.get("family") != "efficient-lvsm":
            raise ViewrtError(f"{cfg.export_dir}: holds a {m.data.get('family')!r} export; bench needs an Efficient-LVSM export")
        if max(cfg.views) > m.max_views:
            raise ViewrtError(f"--views up to {max(cfg.views)} needs an export with max_views >= {max(cfg.views)}; {cfg.export_dir} "
                              f"has max_views {m.max_views} (re-export with `viewrt export --max-views {max(cfg.views)}`)")
        self.selected, self.skipped = self._available(cfg.backends)
        if not self.selected:
            raise ViewrtError("no backend can run here: " + "; ".join(f"{b}: {why}" for b, why in self.skipped.items()))

    def _available(self, names: list[str] | None) -> tuple[list[str], dict[str, str]]:
        import importlib.util

        import onnxruntime as ort

        providers = ort.get_available_providers()
        if names is None:
            names = list(BACKENDS)
        selected, skipped = [], {}
        for b in names:
            why = None
            if b == "ort-cuda" and "CUDAExecutionProvider" not in providers:
                why = "onnxruntime has no CUDAExecutionProvider here"
            elif b == "ort-trt" and "TensorrtExecutionProvider" not in providers:
                why = "onnxruntime has no TensorrtExecutionProvider here"
            elif b == "trt" and importlib.util.find_spec("tensorrt") is None:
                why = "tensorrt is not installed"
            elif b == "trt" and not self.manifest.data.get("engines"):
                why = f"no engines in {self.cfg.export_dir} (run `viewrt build`)"
            if why is None:
                selected.append(b)
            else:
                skipped[b] = why
        if self.cfg.device == "cuda":
            import torch

            if not torch.cuda.is_available() and any(b in TORCH or b in RECOMPUTE for b in selected):
                raise ViewrtError("--device cuda: this PyTorch has no CUDA device")
        return selected, skipped

    def setup(self) -> None:
        import torch

        from viewrt.data import load_frame, load_scene, make_synthetic_scene
        from viewrt.geometry import Camera, NormalizationFrame

        cfg, m = self.cfg, self.manifest
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.mem = _Memory()
        self.machine = machine_info(cfg.device)
        self.machine["load_average_before"] = _loadavg()
        self.machine["threads"] = cfg.threads or "default (torch: %d, ONNX Runtime: one per physical core)" % torch.get_num_threads()
        self.torch_device = torch.device("cuda" if cfg.device == "cuda" else "cpu")
        self.model, self.lvsm_cfg, self.lvsm_name = self._models()
        ecfg = self.model.cfg
        self.matmul = measure_matmul_rate((m.max_targets * ecfg.tokens_per_view, ecfg.d_model, ecfg.mlp_mult * ecfg.d_model))
        self.rate = self.matmul["gflops"] * 1e9  # FLOP/s
        n_in, n_tg = max(cfg.views), max(cfg.targets)
        path = make_synthetic_scene(cfg.out / "_scene", "bench", n_views=n_in + n_tg, size=m.image_size, seed=cfg.seed)
        frames = [load_frame(f, m.image_size) for f in load_scene(path).frames]
        cams = [Camera(c2w, k) for _, k, c2w in frames]
        self.images = [img for img, _, _ in frames[:n_in]]
        self.in_cams, self.tg_cams = cams[:n_in], cams[n_in:]
        self.frame = NormalizationFrame.from_cameras(np.stack([c.c2w for c in cams]))
        self.scene_path = path

    def _models(self):
        from viewrt.models import EfficientLVSMConfig, LVSMConfig, LVSM_PRESETS, init_weights
        from viewrt.models.efficient_lvsm import EfficientLVSM

        d = self.manifest.data
        ecfg = EfficientLVSMConfig(**d["config"])
        ckpt = d.get("checkpoint")
        if ckpt and Path(ckpt).is_file():
            from viewrt.models import load_checkpoint

            model, _ = load_checkpoint(ckpt, ecfg)
        else:
            model = init_weights(EfficientLVSM(ecfg))
            if ckpt:
                self.notes.append(f"the export's checkpoint {ckpt} is not here: PyTorch baselines use built-in weights (latency does not depend on weight values)")
        try:
            from viewrt.export.onnx_export import weights_digest

            if d.get("weights_sha256") and weights_digest(model) != d["weights_sha256"]:
                self.notes.append("PyTorch baselines' weights differ from the export's (latency does not depend on weight values)")
        except ImportError:
            pass
        lcfg = LVSMConfig(image_size=ecfg.image_size, patch_size=ecfg.patch_size, d_model=ecfg.d_model,
                          n_layers=2 * ecfg.n_layers, head_dim=ecfg.head_dim, mlp_mult=ecfg.mlp_mult)
        name = next((k for k, v in LVSM_PRESETS.items() if v == lcfg), "custom")
        return model.eval(), lcfg, name

    def _sync(self) -> None:
        if self.torch_device.type == "cuda":
            import torch

            torch.cuda.synchronize()

    # -- FLOPs --------------------------------------------------------------------------------
    def flops(self, backend: str, n: int, t: int) -> dict:
        from viewrt.models import efficient_lvsm, lvsm

        if backend == "lvsm":
            total = lvsm.count_flops(self.lvsm_cfg, n, t)
            return {"encode": 0.0, "decode": 0.0, "total": total}
        f = efficient_lvsm.count_flops(self.model.cfg, n, t)
        enc = f["encode"] * (n if backend == "efflvsm-nocache" else 1)
        return {"encode": enc, "decode": f["decode"], "total": enc + f["decode"]}

    # -- rows ---------------------------------------------------------------------------------
    def _row(self, backend, n, t, status, reps, warmup, times=None, comps=None, note="", est_ms=None, **mem) -> dict:
        fl = self.flops(backend, n, t)
        row = {k: "" for k in CSV_FIELDS}
        row.update(backend=backend, n_views=n, n_targets=t, status=status, reps=reps, warmup=warmup, note=note, flops=fl["total"])
        row.update(mem)
        if times:
            row.update(_stats(times))
        elif est_ms is not None:
            row["median_ms"] = est_ms
        if comps:
            row.update({f"{c}_ms": v for c, v in comps.items() if c in COMPONENTS})
            if backend not in RECOMPUTE:
                row["overhead_ms"] = comps["_overhead"]
            if comps["decode"] > 0 and fl["decode"] > 0:
                row["decode_gflops"] = fl["decode"] / comps["decode"] / 1e6
                row["decode_ratio_to_matmul"] = row["decode_gflops"] * 1e9 / self.rate
        if row["median_ms"] != "":
            row["gflops"] = fl["total"] / row["median_ms"] / 1e6
            row["ratio_to_matmul"] = row["gflops"] * 1e9 / self.rate
        self.rows.append(row)
        return row

    # -- incremental backends (runtime and PyTorch eager) -----------------------------------
    def _open(self, backend: str):
        if backend in RUNTIME:
            import viewrt.runtime as vrt

            kind, device = RUNTIME[backend]
            return vrt.open(self.cfg.export_dir, kind, max_views=max(self.cfg.views), device=device, frame=self.frame,
                            threads=self.cfg.threads, attention_budget_mib=self.cfg.attention_budget_mib)
        from viewrt.models.torch_renderer import TorchRenderer

        cache, bf16 = TORCH[backend]
        return TorchRenderer(self.model, max(self.cfg.views), frame=self.frame, cache=cache, autocast_bf16=bf16,
                             device=str(self.torch_device))

    def _device_peak_reset(self, backend: str) -> None:
        if self.torch_device.type == "cuda" and backend not in RUNTIME:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def _device_peak(self, backend: str):
        if self.torch_device.type == "cuda" and backend not in RUNTIME:
            import torch

            return int(torch.cuda.max_memory_allocated())
        if backend in RUNTIME and RUNTIME[backend][1] != "cpu":
            try:
                import torch

                free, total = torch.cuda.mem_get_info()
                return int(total - free)  # whole device, all processes
            except Exception:  # noqa: BLE001 - best effort on a machine without torch CUDA
                return ""
        return ""

    def incremental(self, backend: str, bar) -> None:
        cfg, mem = self.cfg, self.mem
        gc.collect()
        try:
            r = self._open(backend)
        except ViewrtError as e:
            self.skipped[backend] = f"cannot open: {e}"
            self.selected.remove(backend)
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
                    self._device_peak_reset(backend)
                    mem.reset_peak()
                    times, comps, raw = [], [], []
                    for i in range(cfg.warmup + cfg.repeats):
                        r.remove_view(ids[-1])
                        self._sync()
                        t0 = time.perf_counter()
                        ids[-1] = r.add_view(self.images[n - 1], self.in_cams[n - 1])
                        add = dict(r.last_timings)
                        r.render(tg)
                        self._sync()
                        step = (time.perf_counter() - t0) * 1e3
                        ren = dict(r.last_timings)
                        if i >= cfg.warmup:
                            times.append(step)
                            c = _step_components(add, ren, step)
                            c["_overhead"] = step - c["encode"] - c["decode"]
                            comps.append(c)
                            raw.append({"step_ms": step, "add": add, "render": ren})
                    med = _median_components(comps)
                    med["_overhead"] = float(np.median([c["_overhead"] for c in comps]))
                    info = r.info()
                    row = self._row(backend, n, t, "measured", cfg.repeats, cfg.warmup, times, med,
                                    cache_bytes_manifest=self.manifest.kv_bytes_per_view * n,
                                    cache_bytes_used=info["bytes_used"], cache_bytes_reserved=info["bytes_reserved"],
                                    rss_bytes=mem.rss(), peak_rss_bytes=mem.peak(), device_peak_bytes=self._device_peak(backend))
                    self.steps[f"{backend} N={n} T={t}"] = raw
                    if backend == "torch-cat":
                        row["note"] = "cache copy (torch.cat) is inside encode"
                bar.update()
            later = deltas[1:] or deltas  # the first add also allocates the encoder's working memory
            n_buf = 2 * self.manifest.n_layers  # one K and one V buffer per layer
            page = _rss_page_bytes(max(cfg.views) * self.manifest.kv_bytes_per_view // n_buf)
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
        import torch

        from viewrt.geometry import input_view, plucker
        from viewrt.models import init_weights
        from viewrt.models.lvsm import LVSMDecoderOnly

        cfg, mem, dev = self.cfg, self.mem, self.torch_device
        S = self.manifest.image_size
        model = self.model if backend == "efflvsm-nocache" else init_weights(LVSMDecoderOnly(self.lvsm_cfg))
        model = model.to(dev)
        views = torch.from_numpy(np.stack([input_view(im, self.frame.apply(c.c2w), c.fxfycxcy) for im, c in zip(self.images, self.in_cams)]))[None].to(dev)
        targets = torch.from_numpy(np.stack([plucker(self.frame.apply(c.c2w), c.fxfycxcy, S, S) for c in self.tg_cams]))[None].to(dev)
        budget = cfg.max_seconds_per_point or math.inf
        last_rate = None  # FLOP/s measured at the previous point of this backend

        def forward(n, t):
            self._sync()
            t0 = time.perf_counter()
            with torch.inference_mode():
                model(views[:, :n], targets[:, :t])
            self._sync()
            return (time.perf_counter() - t0) * 1e3

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
                        basis = f"{last_rate / 1e9:.1f} GFLOP/s measured at a smaller N" if last_rate else f"half the matmul rate ({0.5 * self.rate / 1e9:.0f} GFLOP/s)"
                        note = f"not run (estimated {est:.1f} s > budget {budget:g} s); extrapolated from FLOPs at {basis}"
                        self._row(backend, n, t, "extrapolated", 0, 0, note=note, est_ms=est * 1e3)
                        continue
                run_flops = self.flops(backend, n, t_run)["total"]
                runs = max(1, int(budget // (run_flops / rate))) if budget < math.inf else cfg.warmup + cfg.repeats
                reps = min(cfg.repeats, runs)
                warm = min(cfg.warmup, runs - reps)
                if reps < cfg.repeats:
                    note = (note + "; " if note else "") + f"{reps} of {cfg.repeats} repetitions ({warm} warm-up) to fit the budget"
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
                self._row(backend, n, t, status, reps, warm, times, comps, note=note, rss_bytes=mem.rss(),
                          peak_rss_bytes=mem.peak(), device_peak_bytes=self._device_peak(backend))
            bar.update()
        del model, views, targets
        gc.collect()

    # -- run -------------------------------------------------------------------------------------
    def run(self) -> dict:
        import torch
        from tqdm import tqdm

        cfg = self.cfg
        t_start = time.perf_counter()
        threads_before = torch.get_num_threads()
        try:
            self.setup()
            with tqdm(total=len(self.selected) * len(cfg.views), desc="bench", unit="point", disable=not self.progress,
                      file=sys.stderr) as bar:
                for b in list(self.selected):
                    if b in RECOMPUTE:
                        self.recompute(b, bar)
                    else:
                        self.incremental(b, bar)
            # the machine's speed again: the rate is the better of the two, and a change says the run was disturbed
            ecfg = self.model.cfg
            after = measure_matmul_rate((self.manifest.max_targets * ecfg.tokens_per_view, ecfg.d_model, ecfg.mlp_mult * ecfg.d_model))
        finally:
            torch.set_num_threads(threads_before)
        self.matmul["before_gflops"], self.matmul["after_gflops"] = self.matmul["gflops"], after["gflops"]
        if after["gflops"] > self.matmul["gflops"]:
            self.matmul.update({k: after[k] for k in ("gflops", "best", "runs", "bf16_gflops")})
            self.rate = after["gflops"] * 1e9
            for r in self.rows:  # ratios against the final rate
                for k in ("gflops", "decode_gflops"):
                    if r[k] != "":
                        r[k.replace("gflops", "ratio_to_matmul")] = r[k] * 1e9 / self.rate
        self.wall_s = time.perf_counter() - t_start
        self.machine["load_average_after"] = _loadavg()
        return self.results()

    def results(self) -> dict:
        m = self.manifest
        ecfg = self.model.cfg
        return {
            "export_dir": str(self.cfg.export_dir), "preset": m.data.get("preset"), "precision": m.data.get("precision"),
            "model": ecfg.to_dict(), "lvsm_baseline": {"preset": self.lvsm_name, **self.lvsm_cfg.to_dict()},
            "kv_bytes_per_view": m.kv_bytes_per_view, "views": self.cfg.views, "targets": self.cfg.targets,
            "repeats": self.cfg.repeats, "warmup": self.cfg.warmup, "max_seconds_per_point": self.cfg.max_seconds_per_point, "attention_budget_mib": self.cfg.attention_budget_mib,
            "backends": self.selected, "skipped": self.skipped, "descriptions": {b: BACKENDS[b] for b in self.selected},
            "machine": self.machine, "matmul": self.matmul, "memory_peak": self.mem.peak_kind,
            "scene": str(self.scene_path), "rows": self.rows, "cache_growth": self.growth, "steps": self.steps,
            "notes": self.notes, "wall_seconds": round(self.wall_s, 1),
            "timing": "time.perf_counter around add_view + render" + (" with torch.cuda.synchronize" if self.torch_device.type == "cuda" else ""),
        }


# --------------------------------------------------------------------------- reports


def _lookup(res: dict) -> dict:
    return {(r["backend"], r["n_views"], r["n_targets"]): r for r in res["rows"]}


def _num(row: dict | None, key: str = "median_ms"):
    if row is None or row.get(key, "") in ("", None):
        return None
    return float(row[key])


def _fmt_ms(row: dict | None) -> str:
    v = _num(row)
    if v is None:
        return "—"
    s = f"{v:.1f}" if v >= 10 else f"{v:.2f}"
    return s + {"scaled": "†", "extrapolated": "‡"}.get(row["status"], "")


def _primary(res: dict) -> str | None:
    return next((b for b in res["backends"] if b in RUNTIME), None)


def _check_lines(res: dict) -> list[str]:
    """The issue's targets, evaluated on this run: PASS / FAIL / n/a with the numbers."""
    L = _lookup(res)
    rt = _primary(res)
    rate = res["matmul"]["gflops"]
    out = []
    if rt is None:
        return ["- n/a: no runtime backend in this run"]
    T = 8 if 8 in res["targets"] else max(res["targets"])
    tnote = "" if T == 8 else f" (8 targets not in this run; evaluated with {T})"

    # 1. runtime >= 2x faster than the faster of torch-fp32 / torch-bf16 at N 4..64, 8 targets
    pts = []
    for n in res["views"]:
        if not 4 <= n <= 64:
            continue
        a = _num(L.get((rt, n, T)))
        tor = [x for x in (_num(L.get((b, n, T))) for b in ("torch-fp32", "torch-bf16")) if x is not None]
        if a is not None and tor:
            pts.append((n, min(tor) / a))
    if pts:
        ok = all(s >= 2 for _, s in pts)
        out.append(f"- {'PASS' if ok else 'FAIL'}: {rt} >= 2x faster than the faster of torch-fp32/torch-bf16 at N 4..64{tnote}: "
                   + ", ".join(f"N={n} {s:.2f}x" for n, s in pts)
                   + ("" if {4, 8, 16, 32, 48, 64} <= {n for n, _ in pts} else " (not every N of 4,8,16,32,48,64 was run)"))
    else:
        out.append("- n/a: runtime vs PyTorch eager at N 4..64 (no such points in this run)")

    # 2. decoder at N=64 >= 80% of the measured matmul rate
    nmax = 64 if 64 in res["views"] else max(res["views"])
    r = L.get((rt, nmax, T))
    d = _num(r, "decode_gflops")
    if d is not None:
        frac = d / rate
        verdict = ("PASS" if frac >= 0.8 else "FAIL") if nmax == 64 else "n/a (N=64 not run; value at N=%d)" % nmax
        out.append(f"- {verdict}: {rt} decoder at N={nmax} runs {d:.1f} GFLOP/s = {100 * frac:.0f}% of the measured fp32 matmul rate "
                   f"{rate:.1f} GFLOP/s (target >= 80% at N=64){tnote}")

    # 3. overhead (step - encode - decode) flat across N
    ov = [(n, _num(L.get((rt, n, T)), "overhead_ms")) for n in res["views"]]
    ov = [(n, v) for n, v in ov if v is not None]
    if len(ov) >= 2:
        vals = [v for _, v in ov]
        spread, tol = max(vals) - min(vals), max(1.0, 0.2 * float(np.median(vals)))
        out.append(f"- {'PASS' if spread <= tol else 'FAIL'}: overhead (step minus the encoder and decoder runs, i.e. minus analytic FLOPs at "
                   f"their achieved rate) flat across N: {', '.join(f'N={n} {v:.2f}' for n, v in ov)} ms; range {spread:.2f} ms "
                   f"(flat: <= max(1 ms, 20% of the median)){tnote}")

    # 4. speedup over LVSM dec-only at least the upstream factors
    sp = []
    for n in res["views"]:
        if n in UPSTREAM:
            a, lv = L.get((rt, n, T)), L.get(("lvsm", n, T))
            if _num(a) and _num(lv):
                sp.append((n, _num(lv) / _num(a), UPSTREAM[n][2], lv["status"]))
    if sp:
        ok = all(s >= u for _, s, u, _ in sp)
        mark = {"scaled": "†", "extrapolated": "‡"}
        out.append(f"- {'PASS' if ok else 'FAIL'}: speedup over LVSM dec-only >= upstream (GPU, res256){tnote}: "
                   + ", ".join(f"N={n} {s:.1f}x{mark.get(st, '')} vs {u}x" for n, s, u, st in sp))
    else:
        out.append("- n/a: speedup over LVSM dec-only at the upstream N (4..64) (no such points in this run)")

    # 5. + 6. memory
    g = res["cache_growth"].get(rt)
    if g:
        per, want, res_b = g["mean_rss_delta_per_add_bytes"], g["manifest_bytes_per_view"], g["rss_resolution_bytes_per_view"]
        err = (per - want) / want
        verdict = "PASS" if abs(err) <= 0.05 else ("UNRESOLVED" if abs(per - want) <= res_b else "FAIL")
        out.append(f"- {verdict}: measured cache growth per added view (mean RSS change of add_view calls 2..{len(g['rss_delta_per_add_bytes'])} "
                   f"while filling the cache) {per / 2**20:.3f} MiB vs manifest {want / 2**20:.3f} MiB ({100 * err:+.1f}%; target within 5%; "
                   f"RSS resolution here ±{res_b / 2**20:.2f} MiB per view: {g['rss_page_bytes'] // 1024} KiB pages x {2 * res['model']['n_layers']} buffers "
                   f"over {len(g['rss_delta_per_add_bytes']) - 1} adds)"
                   + (": the cache's pages were resident before the adds (allocated eagerly or from reused heap memory), so RSS "
                      "cannot see them fill" if per < 0.05 * want else ""))
    pk = [(n, _num(L.get((rt, n, T)), "peak_rss_bytes")) for n in res["views"]]
    pk = [(n, v) for n, v in pk if v is not None]
    if len(pk) >= 2 and g:
        (n0, p0), (n1, p1) = pk[0], pk[-1]
        slope = (p1 - p0) / (n1 - n0)
        want = g["manifest_bytes_per_view"]
        out.append(f"- {'PASS' if slope <= 1.05 * want else 'FAIL'}: peak resident memory growth N={n0}..{n1}: {slope / 2**20:.3f} MiB per view "
                   f"vs cache {want / 2**20:.3f} MiB per view (no growth beyond the cache: <= +5%){tnote}")
    return out


def summary_markdown(res: dict) -> str:
    """The summary table (upstream README's shape) and the rest of the report."""
    L = _lookup(res)
    rt = _primary(res)
    m, mach = res["model"], res["machine"]
    torch_b = [b for b in TORCH if b in res["backends"]]
    inc = [b for b in res["backends"] if b in RUNTIME or b in TORCH]
    cols = [b for b in res["backends"] if b in RUNTIME] + torch_b + [b for b in RECOMPUTE if b in res["backends"]]
    lines = [f"# viewrt bench: {res['preset']} ({res['precision']})", ""]
    lines += [
        f"- Machine: {mach['cpu']}, {mach.get('usable_cores', mach['logical_cores'])} cores usable "
        f"({mach.get('physical_cores', '?')} physical){', GPU ' + mach['gpu'] if 'gpu' in mach else ''}; "
        f"threads: {mach['threads']}; torch {mach['torch']}, onnxruntime {mach['onnxruntime']}, numpy {mach['numpy']}.",
        f"- Measured fp32 matmul rate: **{res['matmul']['gflops']:.1f} GFLOP/s** (best of {', '.join(f'{k} {v}' for k, v in res['matmul']['runs'].items())}); "
        f"bf16 (torch 2048^3, for reference): {res['matmul']['bf16_gflops']:.1f} GFLOP/s. Rates below are relative to the fp32 rate, so a bf16 backend can exceed 100%.",
        f"- Load average (1, 5, 15 min) before / after the run: {mach.get('load_average_before')} / {mach.get('load_average_after')}; "
        f"fp32 matmul rate at the start / end: {res['matmul']['before_gflops']:.1f} / {res['matmul']['after_gflops']:.1f} GFLOP/s (the better is used)."
        + (" **Warning: the machine's speed changed by more than 20% during the run (other load?): timings are not reliable.**"
           if abs(res['matmul']['after_gflops'] - res['matmul']['before_gflops']) > 0.2 * max(res['matmul']['after_gflops'], res['matmul']['before_gflops']) else ""),
        f"- Model: Efficient-LVSM `{res['preset']}` (d {m['d_model']}, {m['n_layers']}+{m['n_layers']} layers, "
        f"{(m['image_size'] // m['patch_size']) ** 2} tokens/view, {m['image_size']} px); KV {res['kv_bytes_per_view'] / 2**20:.3f} MiB per view. "
        f"LVSM dec-only baseline: `{res['lvsm_baseline']['preset']}` (d {res['lvsm_baseline']['d_model']}, {res['lvsm_baseline']['n_layers']} layers).",
        f"- Step: add one view into N-1 cached views + render the targets (real distinct views of one synthetic scene); "
        f"{res['warmup']} warm-up + median of {res['repeats']} repetitions; {res['timing']}. Full-recompute baselines: one forward "
        f"over all N views, inputs prepared outside the timed region, budget {res['max_seconds_per_point']:g} s per point. "
        f"Runtime attention memory budget: {res['attention_budget_mib']:g} MiB (targets per decoder call follow from it).",
        f"- Backends: " + "; ".join(f"`{b}`: {res['descriptions'][b]}" for b in res["backends"]) + ".",
    ]
    if res["skipped"]:
        lines.append("- Skipped: " + "; ".join(f"`{b}` ({why})" for b, why in res["skipped"].items()) + ".")
    lines.append(f"- Wall time of this run: {res['wall_seconds']:.0f} s.")
    lines.append("")
    upstream_col = 8 in res["targets"]
    for t in res["targets"]:
        lines += [f"## Add-view latency, {t} target{'s' if t > 1 else ''} (ms, median)", ""]
        head = ["N", *[f"{LABELS.get(b, b)}" for b in cols]]
        if rt:
            head += ["speedup vs LVSM"] + (["upstream speedup (GPU)"] if t == 8 and upstream_col else []) + ["speedup vs best torch eager", f"{rt} overhead (ms)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n in res["views"]:
            cells = [str(n), *[_fmt_ms(L.get((b, n, t))) for b in cols]]
            if rt:
                a = _num(L.get((rt, n, t)))
                lv = L.get(("lvsm", n, t))
                cells.append(f"{_num(lv) / a:.1f}x" + {"scaled": "†", "extrapolated": "‡"}.get(lv["status"], "") if a and _num(lv) else "—")
                if t == 8 and upstream_col:
                    cells.append(f"{UPSTREAM[n][2]}x" if n in UPSTREAM else "—")
                best = [x for x in (_num(L.get((b, n, t))) for b in torch_b) if x is not None]
                cells.append(f"{min(best) / a:.2f}x" if a and best else "—")
                ov = _num(L.get((rt, n, t)), "overhead_ms")
                cells.append("—" if ov is None else f"{ov:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["† measured with 1 target and scaled by the FLOP ratio; ‡ not run (over the budget): extrapolated from FLOPs at the rate "
              "measured at a smaller N. Overhead: step time minus the encoder and decoder runs (preprocessing, copies, cache "
              "bookkeeping, Python)." + (f" Speedup vs best torch eager: over the fastest of {', '.join(torch_b)}." if torch_b else ""), ""]
    meas = [r for r in res["rows"] if r["status"] == "measured" and r["min_ms"] != ""]
    if meas:
        worst = max(meas, key=lambda r: (r["max_ms"] - r["min_ms"]) / r["median_ms"])
        lines += [f"Spread: the widest (max - min) / median over all measured points is "
                  f"{100 * (worst['max_ms'] - worst['min_ms']) / worst['median_ms']:.0f}% ({worst['backend']}, N={worst['n_views']}, "
                  f"{worst['n_targets']} targets); min, max and quartiles of every point are in results.csv.", ""]

    tmax = max(res["targets"])
    lines += [f"## Achieved rate, {tmax} targets (GFLOP/s from analytic FLOPs / median step; % of the matmul rate)", ""]
    lines += ["| backend | " + " | ".join(f"N={n}" for n in res["views"]) + " |", "|---|" + "---|" * len(res["views"])]
    for b in cols:
        cells = []
        for n in res["views"]:
            r = L.get((b, n, tmax))
            g = _num(r, "gflops")
            cells.append("—" if g is None else f"{g:.1f} ({100 * g / res['matmul']['gflops']:.0f}%)" + {"scaled": "†", "extrapolated": "‡"}.get(r["status"], ""))
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    for b in inc:
        cells = []
        for n in res["views"]:
            g = _num(L.get((b, n, tmax)), "decode_gflops")
            cells.append("—" if g is None else f"{g:.1f} ({100 * g / res['matmul']['gflops']:.0f}%)")
        lines.append(f"| {b} decoder only | " + " | ".join(cells) + " |")
    lines.append("")

    if rt:
        lines += [f"## Components of one step, `{rt}`, {tmax} targets (ms, median)", ""]
        comp = [c for c in COMPONENTS if c != "forward"]
        lines += ["| N | " + " | ".join(comp) + " | step |", "|" + "---|" * (len(comp) + 2)]
        for n in res["views"]:
            r = L.get((rt, n, tmax))
            if r is not None and r["status"] == "measured":
                lines.append(f"| {n} | " + " | ".join(f"{float(r[c + '_ms']):.2f}" for c in comp) + f" | {float(r['median_ms']):.2f} |")
        lines.append("")

    lines += [f"## Memory, {tmax} targets (MiB; peak resident memory is {res['memory_peak']})", ""]
    head = ["N", "cache (manifest)", *[f"{b} cache used" for b in inc], *[f"{b} peak RSS" for b in cols]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    mib = lambda v: "—" if v is None else f"{v / 2**20:.1f}"  # noqa: E731
    for n in res["views"]:
        cells = [str(n), mib(res["kv_bytes_per_view"] * n)]
        cells += [mib(_num(L.get((b, n, tmax)), "cache_bytes_used")) for b in inc]
        cells += [mib(_num(L.get((b, n, tmax)), "peak_rss_bytes")) for b in cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for b, g in res["cache_growth"].items():
        lines.append(f"- `{b}`: resident memory change per add_view while filling the cache: mean {g['mean_rss_delta_per_add_bytes'] / 2**20:.3f} MiB "
                     f"(cache bytes per view: {g['bytes_per_view'] / 2**20:.3f} MiB; manifest: {g['manifest_bytes_per_view'] / 2**20:.3f} MiB).")
    lines.append("")
    lines += ["## Targets (evaluated on this run, not asserted)", "", *_check_lines(res), ""]
    notes = list(res["notes"])
    notes += [f"{r['backend']} N={r['n_views']} T={r['n_targets']}: {r['note']}" for r in res["rows"] if r["note"] and r["backend"] in RECOMPUTE]
    if notes:
        lines += ["## Notes", "", *[f"- {x}" for x in notes], ""]
    return "\n".join(lines)


def _plots(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L = _lookup(res)
    rt = _primary(res)
    backends = res["backends"]
    targets = res["targets"]
    cmap = plt.get_cmap("tab10")
    color = {b: cmap(i % 10) for i, b in enumerate(BACKENDS)}

    fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 4.5), squeeze=False)
    for ax, t in zip(axes[0], targets):
        for b in backends:
            pts = [(n, L[(b, n, t)]) for n in res["views"] if _num(L.get((b, n, t))) is not None]
            if not pts:
                continue
            ax.plot([n for n, _ in pts], [_num(r) for _, r in pts], "-", color=color[b], label=LABELS.get(b, b))
            for n, r in pts:
                ax.plot(n, _num(r), "o" if r["status"] == "measured" else "s", color=color[b],
                        mfc=color[b] if r["status"] == "measured" else "none")
        ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xticks(res["views"], [str(n) for n in res["views"]])
        ax.set_xlabel("cached views N")
        ax.set_ylabel("add view + render (ms)")
        ax.set_title(f"{res['preset']}, {t} target{'s' if t > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("open squares: scaled from 1 target or extrapolated from FLOPs", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency_vs_views.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 4.5), squeeze=False)
    for ax, t in zip(axes[0], targets):
        if rt is not None:
            for b in backends:
                if b == rt:
                    continue
                pts = [(n, _num(L.get((b, n, t))) / _num(L.get((rt, n, t)))) for n in res["views"]
                       if _num(L.get((b, n, t))) and _num(L.get((rt, n, t)))]
                if pts:
                    ax.plot(*zip(*pts), "o-", color=color[b], label=f"{rt} vs {LABELS.get(b, b)}")
            if t == 8:
                ax.plot(list(UPSTREAM), [v[2] for v in UPSTREAM.values()], "kx--", label="upstream vs LVSM (GPU, res256)")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xticks(res["views"], [str(n) for n in res["views"]])
        ax.set_xlabel("cached views N")
        ax.set_ylabel(f"speedup of {rt or 'runtime'} (x)")
        ax.set_title(f"{t} target{'s' if t > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "speedup.png", dpi=110)
    plt.close(fig)

    inc = [b for b in backends if b in RUNTIME or b in TORCH]
    tmax = max(targets)
    comp = [c for c in COMPONENTS if c != "forward"]
    fig, axes = plt.subplots(1, max(1, len(inc)), figsize=(4.5 * max(1, len(inc)), 4.5), squeeze=False)
    for ax, b in zip(axes[0], inc):
        ns = [n for n in res["views"] if (b, n, tmax) in L]
        x = np.arange(len(ns))
        bottom = np.zeros(len(ns))
        for i, c in enumerate(comp):
            vals = np.array([float(L[(b, n, tmax)][f"{c}_ms"] or 0) for n in ns])
            ax.bar(x, vals, bottom=bottom, label=c, color=plt.get_cmap("tab10")(i))
            bottom += vals
        ax.set_xticks(x, [str(n) for n in ns])
        ax.set_xlabel("cached views N")
        ax.set_ylabel("ms (median)")
        ax.set_title(f"{b}, {tmax} targets")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "components.png", dpi=110)
    plt.close(fig)


def write_outputs(res: dict, out: Path) -> str:
    """Write results.csv, results.json, summary.md and the plots; return summary.md."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in res["rows"]:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    text = summary_markdown(res)
    (out / "summary.md").write_text(text)
    _plots(res, out)
    return text


def run_bench(cfg: BenchConfig, progress: bool = True) -> tuple[dict, str]:
    """Run the benchmark and write its outputs into ``cfg.out``.

    Returns: (results dict as in results.json, summary.md text).
    Raises: ViewrtError on bad options, an export that cannot hold max(views), or an
        unknown backend (checked before any measurement).
    """
    b = _Bench(cfg, progress)
    b.check()
    from viewrt.runtime.estimate import echo_estimate; echo_estimate(cfg.export_dir, max(cfg.views), max(cfg.targets), cfg.device)  # noqa: E702
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ViewrtError(f"--out {cfg.out}: cannot create it ({e})") from None
    res = b.run()
    return res, write_outputs(res, cfg.out)


# --------------------------------------------------------------------------- CLI


@click.command()
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option("--views", default="1,2,4,8,16,32,48,64", show_default=True, help="Cached-view counts N (comma-separated).")
@click.option("--targets", default="1,8", show_default=True, help="Target-view counts (comma-separated).")
@click.option("--backends", default=None, help=f"Comma-separated, of: {', '.join(BACKENDS)} (default: all available).")
@click.option("--repeats", type=int, default=5, show_default=True, help="Timed repetitions per point (median reported).")
@click.option("--warmup", type=int, default=2, show_default=True, help="Untimed repetitions before them.")
@click.option("--max-seconds-per-point", type=float, default=20.0, show_default=True,
              help="Budget of a full-recompute point; over it: 1 target scaled, or extrapolated from FLOPs (0: no budget).")
@click.option("--threads", type=int, default=None, help="CPU threads for PyTorch and ONNX Runtime (default: theirs).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Device of the PyTorch backends (the runtime backends name their own).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic scene.")
@click.option("--attention-budget-mib", type=float, default=256.0, show_default=True,
              help="The runtime's attention memory budget on ONNX Runtime (targets per decoder call follow from it).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@cli_errors
def bench(export_dir, out_dir, views, targets, backends, repeats, warmup, max_seconds_per_point, threads, device, seed,
          attention_budget_mib, quiet):
    """Add-view latency of the runtime vs PyTorch eager and full-recompute baselines
    (LVSM decoder-only, Efficient-LVSM without cache), with memory, component breakdown
    and achieved GFLOP/s; writes results.csv/json, summary.md and plots to OUT."""
    cfg = BenchConfig(Path(export_dir), Path(out_dir), parse_int_list(views, "--views"), parse_int_list(targets, "--targets"),
                      parse_backends(backends), repeats, warmup, max_seconds_per_point, threads, device, seed,
                      attention_budget_mib)
    _, text = run_bench(cfg, progress=not quiet)
    click.echo(text)
