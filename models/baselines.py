"""PyTorch baselines for ``viewrt bench``: eager renderers with a preallocated or
``torch.cat`` cache (fp32 or bf16 autocast), the full-recompute models (Efficient-LVSM
without a cache, LVSM decoder-only of the same width and depth), analytic FLOP counts and
the matmul-rate probe. The benchmark harness (viewrt.bench, torch-free) drives
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
from viewrt.models.registry import FAMILIES
from viewrt.models.torch_renderer import TorchRenderer
from viewrt.timing import matmul_gflops

# name -> (kind, description): "eager" renderers keep a cache; "recompute" run one forward over all views
BASELINES: dict[str, tuple[str, str]] = {
    "torch-fp32": ("eager", "PyTorch eager fp32, preallocated cache"),
    "torch-bf16": ("eager", "PyTorch eager bf16 autocast, preallocated cache"),
    "torch-cat": ("eager", "PyTorch eager fp32, cache grown with torch.cat (upstream style)"),
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
    "efflvsm-nocache": "fp32",
    "lvsm": "fp32",
}
_EAGER = {
    "torch-fp32": ("prealloc", False),
    "torch-bf16": ("prealloc", True),
    "torch-cat": ("cat", False),
}


def measure_matmul_rate(model_shape: tuple[int, int, int] | None = None, reps: int = 5) -> dict:
    """This machine's fp32 matrix-multiply rate (GFLOP/s): median of ``reps`` runs for each
    of torch and numpy on 1024^3, 2048^3 and the model's MLP shape; the rate is the best.
    Also the bf16 rate of torch at 2048^3 (AMX / AVX512-BF16 where the CPU has them).

    Returns: {"gflops": best fp32, "best": "lib MxKxN", "runs": {"lib MxKxN": gflops}, "bf16_gflops"}.
    """
    shapes = [(1024, 1024, 1024), (2048, 2048, 2048)]
    if model_shape is not None:
        shapes.append(tuple(int(s) for s in model_shape))
    runs = {}
    g = torch.Generator().manual_seed(0)
    for m, k, n in shapes:
        a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        runs[f"torch {m}x{k}x{n}"] = matmul_gflops(a, b, 2 * m * k * n, reps)
        runs[f"numpy {m}x{k}x{n}"] = matmul_gflops(a.numpy(), b.numpy(), 2 * m * k * n, reps)
    best = max(runs, key=runs.get)
    a, b = (
        torch.randn(2048, 2048, generator=g).bfloat16(),
        torch.randn(2048, 2048, generator=g).bfloat16(),
    )
    bf16 = matmul_gflops(a, b, 2 * 2048**3, reps)
    return {
        "gflops": runs[best],
        "best": best,
        "runs": runs,
        "bf16_gflops": bf16,
        "note": "fp32 (bf16 for reference), median of %d runs each; numpy threads are its BLAS default"
        % reps,
    }


def measure_precision_rate(dtype: str, model_shape: tuple | None = None, reps: int = 5) -> dict:
    """Torch matmul rate (GFLOP/s) in ``dtype`` ("bf16" or "fp16"): the best median of
    ``reps`` runs over 1024^3, 2048^3 and the model's MLP shape."""
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    shapes = [(1024, 1024, 1024), (2048, 2048, 2048)] + (
        [tuple(int(s) for s in model_shape)] if model_shape else []
    )
    g = torch.Generator().manual_seed(0)
    runs = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k, generator=g).to(dt), torch.randn(k, n, generator=g).to(dt)
        runs[f"torch {m}x{k}x{n}"] = matmul_gflops(a, b, 2 * m * k * n, reps)
    best = max(runs, key=runs.get)
    return {"gflops": runs[best], "best": best, "runs": runs}


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

    def matmul_rate(self) -> dict:
        c = self.model_cfg
        return measure_matmul_rate(
            (self.manifest.max_targets * c.tokens_per_view, c.d_model, c.mlp_mult * c.d_model)
        )

    def precision_rate(self, precision: str, model_shape: tuple | None = None) -> dict:
        """Matmul rate of torch in a reduced precision ("bf16", "fp16"), same threads."""
        return measure_precision_rate(precision, model_shape)

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
        """An eager renderer with the runtime's interface (add_view, remove_view, render, ...)."""
        cache, bf16 = _EAGER[backend]
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
