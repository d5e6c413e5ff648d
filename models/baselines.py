"""PyTorch baselines for ``viewrt bench``: eager renderers with a preallocated or
``torch.cat`` cache (fp32 or bf16 autocast), the same preallocated renderer through
``torch.compile`` (inductor, static shapes: one compile per N and target count, see
viewrt.models.compiled), the full-recompute models (Efficient-LVSM without a cache, LVSM
decoder-only of the same width and depth), analytic FLOP counts and torch's GEMM probe
for the roofline. The benchmark harness (viewrt.bench, torch-free) drives
them through :class:`TorchBaselines`, which ``viewrt bench`` hands it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from viewrt.errors import ViewrtError
from viewrt.geometry import input_view, plucker
from viewrt.models import init_weights, load_checkpoint
from viewrt.models.checkpoint import weights_digest
from viewrt.models.compiled import compile_unavailable
from viewrt.models.registry import FAMILIES
from viewrt.models.torch_renderer import CompiledTorchRenderer, TorchRenderer
from viewrt.timing import matmul_gflops, timed_gflops

# name -> (kind, description): "eager" renderers keep a cache; "recompute" run one forward over all views
BASELINES: dict[str, tuple[str, str]] = {
    "torch-fp32": ("eager", "PyTorch eager fp32, preallocated cache"),
    "torch-bf16": ("eager", "PyTorch eager bf16 autocast, preallocated cache"),
    "torch-cat": ("eager", "PyTorch eager fp32, cache grown with torch.cat (upstream style)"),
    "torch-compile": (
        "eager",
        "PyTorch torch.compile (inductor, static shapes: one compile per N and targets) fp32, preallocated cache",
    ),
    "torch-compile-bf16": (
        "eager",
        "PyTorch torch.compile (inductor, static shapes: one compile per N and targets) bf16 autocast, preallocated cache",
    ),
    "efflvsm-nocache": ("recompute", "Efficient-LVSM without a cache (full recompute), fp32"),
    "lvsm": ("recompute", "LVSM decoder-only, same width and depth (full recompute), fp32"),
}
LABELS = {"efflvsm-nocache": "effLVSM no-cache", "lvsm": "LVSM dec-only"}
# what a measured row of a baseline needs said next to its numbers
ROW_NOTES = {"torch-cat": "cache copy (torch.cat) is inside encode"}
# the precision each baseline computes in (the runtime's backends report theirs in info())
PRECISION = {
    "torch-fp32": "fp32",
    "torch-bf16": "bf16",
    "torch-cat": "fp32",
    "torch-compile": "fp32",
    "torch-compile-bf16": "bf16",
    "efflvsm-nocache": "fp32",
    "lvsm": "fp32",
}
# name -> (cache, bf16 autocast, torch.compile)
_EAGER = {
    "torch-fp32": ("prealloc", False, False),
    "torch-bf16": ("prealloc", True, False),
    "torch-cat": ("cat", False, False),
    "torch-compile": ("prealloc", False, True),
    "torch-compile-bf16": ("prealloc", True, True),
}
# torch dtypes of the GEMM probe's precisions (int8: torch._int_mm, int8 x int8 -> int32)
_GEMM_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def gemm_rates(precision: str, shapes, reps: int = 5) -> dict[str, float]:
    """Torch's GEMM rate (GFLOP/s, 2 M K N per product) in ``precision`` ("fp32", "bf16",
    "fp16"; "int8" through ``torch._int_mm``) at each (M, K, N) of ``shapes``, in torch's
    current threads: ``{"torch MxKxN": GFLOP/s}``; {} for a precision torch does not run
    here."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for m, k, n in (tuple(int(x) for x in s) for s in shapes):
        name = f"torch {m}x{k}x{n}"
        if precision == "int8":
            a = torch.randint(-127, 128, (m, k), generator=g, dtype=torch.int8)
            b = torch.randint(-127, 128, (k, n), generator=g, dtype=torch.int8)
            try:
                out[name] = timed_gflops(lambda: torch._int_mm(a, b), 2 * m * k * n, reps)
            except (RuntimeError, AttributeError):  # shapes or builds without int8 matmul
                continue
        elif precision in _GEMM_DTYPES:
            dt = _GEMM_DTYPES[precision]
            a = torch.randn(m, k, generator=g).to(dt)
            b = torch.randn(k, n, generator=g).to(dt)
            out[name] = matmul_gflops(a, b, 2 * m * k * n, reps)
    return out


class TorchBaselines:
    """The PyTorch side of a benchmark run over one Efficient-LVSM export.

    Args:
        manifest: the export's Manifest (config, checkpoint, weights digest).
        device: "cpu" or "cuda".
        threads: torch intra-op threads (None: torch's default).
    Attributes: ``names`` (BASELINES), ``kinds``, ``descriptions``, ``labels``, ``notes``
        (what the caller should know, e.g. built-in weights used), ``row_notes`` (a note
        per measured row of a baseline), ``model_cfg``,
        ``lvsm_cfg``, ``lvsm_name``.
    """

    names = BASELINES

    def __init__(self, manifest, device: str = "cpu", threads: int | None = None):
        if device == "cuda" and not torch.cuda.is_available():
            raise ViewrtError("--device cuda: this PyTorch has no CUDA device")
        self.manifest, self.device = manifest, torch.device(device)
        self._threads_before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        self.notes: list[str] = []
        self.kinds = {n: k for n, (k, _) in BASELINES.items()}
        self.descriptions = {n: d for n, (_, d) in BASELINES.items()}
        self.labels = dict(LABELS)
        self.row_notes = dict(ROW_NOTES)
        self.precisions = dict(PRECISION)
        fam = FAMILIES[manifest.family]
        ecfg = fam.config_cls(**manifest.config)
        ckpt = manifest.checkpoint
        if ckpt and Path(ckpt).is_file():
            model, _ = load_checkpoint(ckpt, ecfg)
        else:
            model = init_weights(fam.model_cls(ecfg))
            if ckpt:
                self.notes.append(
                    f"the export's checkpoint {ckpt} is not here: PyTorch baselines use built-in weights "
                    "(latency does not depend on weight values)"
                )
        self.model = model.eval()
        self.model_cfg = ecfg
        lvsm = FAMILIES["lvsm"]
        self.lvsm_cfg = lvsm.config_cls(
            image_size=ecfg.image_size,
            patch_size=ecfg.patch_size,
            d_model=ecfg.d_model,
            n_layers=2 * ecfg.n_layers,
            head_dim=ecfg.head_dim,
            mlp_mult=ecfg.mlp_mult,
        )
        self.lvsm_name = next((k for k, v in lvsm.presets.items() if v == self.lvsm_cfg), "custom")

    def close(self) -> None:
        torch.set_num_threads(self._threads_before)

    def machine(self) -> dict:
        info = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(0)
        return info

    def gemm_rates(self, precision: str, shapes, reps: int = 5) -> dict[str, float]:
        """Torch's GEMM rates for the roofline (see :func:`gemm_rates`), same threads."""
        return gemm_rates(precision, shapes, reps)

    def unavailable(self, backend: str) -> str | None:
        """Why a baseline cannot run here (torch.compile without a C++ compiler), or None."""
        if _EAGER.get(backend, (None, None, False))[2] and self.device.type == "cpu":
            return compile_unavailable()
        return None

    def flops(self, backend: str, n: int, t: int) -> dict:
        """Analytic FLOPs of one step (add a view into n-1, render t targets) of a backend."""
        if backend == "lvsm":
            total = FAMILIES["lvsm"].count_flops(self.lvsm_cfg, n, t)
            return {"encode": 0.0, "decode": 0.0, "total": total}
        f = FAMILIES[self.manifest.family].count_flops(self.model_cfg, n, t)
        enc = f["encode"] * (n if backend == "efflvsm-nocache" else 1)
        return {"encode": enc, "decode": f["decode"], "total": enc + f["decode"]}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def open(self, backend: str, max_views: int, frame):
        """An eager or compiled renderer with the runtime's interface (add_view,
        remove_view, render, ...; a compiled one also ``compile``). Raises ViewrtError when
        torch.compile fails (compiling the encoder here)."""
        cache, bf16, compiled = _EAGER[backend]
        if compiled:
            return CompiledTorchRenderer(
                self.model, max_views, frame=frame, autocast_bf16=bf16, device=str(self.device)
            )
        return TorchRenderer(
            self.model,
            max_views,
            frame=frame,
            cache=cache,
            autocast_bf16=bf16,
            device=str(self.device),
        )

    def recompute(self, backend: str, images, in_cams, tg_cams, frame):
        """A timed forward ``fn(n, t) -> ms`` of a full-recompute baseline over the first n
        input views and t targets (inputs prepared here, outside the timed region)."""
        S = self.manifest.image_size
        model = (
            self.model
            if backend == "efflvsm-nocache"
            else init_weights(FAMILIES["lvsm"].model_cls(self.lvsm_cfg))
        )
        model = model.to(self.device)
        views = torch.from_numpy(
            np.stack(
                [input_view(im, frame.apply(c.c2w), c.fxfycxcy) for im, c in zip(images, in_cams)]
            )
        )[None].to(self.device)
        targets = torch.from_numpy(
            np.stack([plucker(frame.apply(c.c2w), c.fxfycxcy, S, S) for c in tg_cams])
        )[None].to(self.device)

        def forward(n: int, t: int) -> float:
            self.sync()
            t0 = time.perf_counter()
            with torch.inference_mode():
                model(views[:, :n], targets[:, :t])
            self.sync()
            return (time.perf_counter() - t0) * 1e3

        return forward

    def device_peak_reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def device_peak(self):
        return int(torch.cuda.max_memory_allocated()) if self.device.type == "cuda" else ""

    def weights_match(self) -> bool | None:
        want = self.manifest.weights_sha256
        return None if not want else weights_digest(self.model) == want
