"""Training Efficient-LVSM on synthetic scenes (or a scene list), and the held-out evaluation
behind the ``demo`` preset.

Data. By default scenes come from :func:`viewrt.data.synthetic_views` (style "multiview";
"mixed": the styles of STYLES in turn, scene ``k`` in style ``STYLES[k % len(STYLES)]``;
8 views of 64 px), rendered once into a uint8 cache (``OUT/scenes-*.npz``). Training
scenes use seeds ``TRAIN_SEED0 + seed * 1_000_000 + k``; validation (the PSNR shown while
training) uses ``VAL_SEED0 + k`` and the held-out evaluation ``HELDOUT_SEED0 + k``: the
three ranges never overlap. With ``scene_list`` the scenes of a list file in the dataset
format are read instead (every frame resized to the model size).

A step draws, per batch, a number of input views ``n`` in ``[min_views, max_views]``,
then for each scene ``n`` input and ``n_targets`` target frames at random (distinct), and
the scene normalization frame from those cameras plus up to two more of the scene (as
``viewrt infer`` computes it from all the cameras it will use). The rays and inputs are
built by the same functions as the runtime (:func:`viewrt.geometry.input_view`,
:func:`~viewrt.geometry.plucker`). The random draws of step ``s`` come from
``numpy.random.default_rng([seed, s])``, so a resumed run draws what an uninterrupted one
would.

Checkpoints are the upstream layout ``{"model": state_dict, "optimizer": ..., "step":
int, "recipe": dict}`` and load strictly through :func:`viewrt.models.load_checkpoint`.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from viewrt.data import (
    STYLES,
    load_frame,
    load_scene,
    load_scene_list,
    make_synthetic_list,
    synthetic_views,
)
from viewrt.errors import ViewrtError
from viewrt.folders import make_folder
from viewrt.geometry import NormalizationFrame, image_to_uint8, input_view, plucker, uint8_to_image
from viewrt.metrics import psnr, ssim
from viewrt.models import build_model
from viewrt.models.checkpoint import load_checkpoint
from viewrt.models.efficient_lvsm import PRESETS, EfficientLVSM, EfficientLVSMConfig

# Lazy: matplotlib (heavy, the curves plot) and safetensors, imported where used.

TRAIN_SEED0 = 10_000
VAL_SEED0 = 800_000
MIXED = "mixed"  # a pool of every style of viewrt.data.STYLES, in turn
HELDOUT_SEED0 = 900_000
EVAL_TARGETS = (2, 5)  # of 8 frames: viewrt.infer.default_targets(8)
EVAL_INPUTS = (
    0,
    1,
    3,
    4,
)  # the first frames that are not targets, in the order viewrt infer adds them
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEMO_WEIGHTS = WEIGHTS_DIR / "demo.safetensors"

__all__ = [
    "Recipe",
    "train",
    "evaluate",
    "init_for_training",
    "make_heldout_list",
    "bf16_faster",
    "DEMO_WEIGHTS",
]


@dataclass
class Recipe:
    """Everything that determines a training run (recorded in the log and checkpoints)."""

    image_size: int = 64
    patch_size: int = 8
    d_model: int = 128
    n_layers: int = 4
    head_dim: int = 32
    style: str = "multiview"  # or "mixed" (see scene_style)
    n_scenes: int = 2000
    frames_per_scene: int = 8
    scene_list: str | None = None
    seed: int = 0
    steps: int = 700
    batch: int = 8
    lr: float = 1e-3
    min_lr: float = 5e-5
    warmup: int = 50
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    min_views: int = 1
    max_views: int = 4
    n_targets: int = 2
    val_scenes: int = 16
    eval_every: int = 100
    ckpt_every: int = 100
    bf16: bool = False
    threads: int = 2
    loss: str = "mse"
    cycles: list = field(default_factory=lambda: [[500, 5e-4]])
    notes: list = field(default_factory=list)
    init: str | None = None  # weights to start from (a fine-tune), else a fresh init

    @property
    def total_steps(self) -> int:
        """``steps`` of the first cosine cycle plus those of the warm restarts in ``cycles``."""
        return self.steps + sum(int(n) for n, _ in self.cycles)

    def model_config(self) -> EfficientLVSMConfig:
        return EfficientLVSMConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            d_model=self.d_model,
            n_layers=self.n_layers,
            head_dim=self.head_dim,
        )

    def check(self) -> None:
        if self.style not in (*STYLES, MIXED):
            raise ViewrtError(
                f"style must be one of {', '.join((*STYLES, MIXED))}, got {self.style!r}"
            )
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ViewrtError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not 1 <= self.min_views <= self.max_views:
            raise ViewrtError(
                f"views: need 1 <= min_views <= max_views, got {self.min_views}, {self.max_views}"
            )
        if self.max_views + self.n_targets > self.frames_per_scene:
            raise ViewrtError(
                f"{self.max_views} input + {self.n_targets} target views need {self.max_views + self.n_targets} "
                f"frames per scene, the scenes have {self.frames_per_scene}"
            )
        if (
            self.n_scenes < 1
            or self.steps < 1
            or self.batch < 1
            or any(int(n) < 1 for n, _ in self.cycles)
        ):
            raise ViewrtError("n_scenes, steps and batch must be positive")
        if self.n_scenes >= 500_000 or self.seed < 0:
            raise ViewrtError(
                "n_scenes must stay below 500,000 and the seed non-negative (the training seed range)"
            )
        self.model_config().validate()


# --------------------------------------------------------------------------- data


def scene_seed(recipe_seed: int, k: int) -> int:
    """Generator seed of training scene ``k`` (never in the validation or held-out ranges)."""
    return TRAIN_SEED0 + recipe_seed * 1_000_000 + k  # seed 0: < 510,000; seed >= 1: >= 1,010,000


def scene_style(style: str, k: int) -> str:
    """The style of scene ``k`` of a pool of ``style`` ("mixed": the STYLES in turn)."""
    return STYLES[k % len(STYLES)] if style == MIXED else style


def _render_scenes(seeds, n_views: int, size: int, style: str, desc: str) -> dict:
    images, c2ws = [], []
    bar = _bar(seeds, desc) if _tty() else seeds
    fx = None
    for k, s in enumerate(bar):
        im, c, fx = synthetic_views(n_views, size, int(s), scene_style(style, k))
        images.append(
            np.stack([image_to_uint8(v).transpose(2, 0, 1) for v in im])
        )  # [V, 3, S, S] uint8
        c2ws.append(c)
    return {
        "images": np.stack(images),
        "c2ws": np.stack(c2ws),
        "fxfycxcy": np.asarray(fx),
        "seeds": np.asarray(list(seeds)),
    }


def synthetic_pool(recipe: Recipe, cache_dir: Path | None) -> dict:
    """The training scenes as arrays: images uint8 [N, V, 3, S, S], c2ws [N, V, 4, 4],
    fxfycxcy [4] (shared). Cached as ``cache_dir/scenes-<style>-<size>px-<N>x<V>-seed<seed>.npz``."""
    name = f"scenes-{recipe.style}-{recipe.image_size}px-{recipe.n_scenes}x{recipe.frames_per_scene}-seed{recipe.seed}.npz"
    path = cache_dir / name if cache_dir is not None else None
    if path is not None and path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    seeds = [scene_seed(recipe.seed, k) for k in range(recipe.n_scenes)]
    pool = _render_scenes(
        seeds, recipe.frames_per_scene, recipe.image_size, recipe.style, "rendering scenes"
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **pool)
        tmp.replace(path)
    return pool


def list_pool(list_path: str | Path, size: int) -> dict:
    """Scenes of a list file in the dataset format as arrays (per-scene intrinsics)."""
    scenes = [load_scene(p) for p in load_scene_list(list_path)]
    counts = {len(s.frames) for s in scenes}
    if len(counts) != 1:
        raise ViewrtError(
            f"{list_path}: training needs the same number of frames in every scene, got {sorted(counts)}"
        )
    images, c2ws, intr = [], [], []
    for s in scenes:
        frames = [load_frame(f, size) for f in s.frames]
        images.append(np.stack([image_to_uint8(f[0]).transpose(2, 0, 1) for f in frames]))
        c2ws.append(np.stack([f[2] for f in frames]))
        intr.append(np.stack([f[1] for f in frames]))
    return {
        "images": np.stack(images),
        "c2ws": np.stack(c2ws),
        "fxfycxcy_per_frame": np.stack(intr),
    }


def _intrinsics(pool: dict, i: int, j: int) -> np.ndarray:
    return pool["fxfycxcy_per_frame"][i, j] if "fxfycxcy_per_frame" in pool else pool["fxfycxcy"]


def make_views(
    pool: dict, scene: int, inputs, targets, frame_frames
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One example: (inputs float32 [n, 9, S, S], target rays float32 [t, 6, S, S], target
    images float32 [t, 3, S, S] in [0, 1]) with the normalization frame of ``frame_frames``."""
    c2ws = pool["c2ws"][scene]
    frame = NormalizationFrame.from_cameras(c2ws[list(frame_frames)])
    imgs = pool["images"][scene]
    s = imgs.shape[-1]
    x = np.stack(
        [
            input_view(
                imgs[j].astype(np.float32) / 255.0,
                frame.apply(c2ws[j]),
                _intrinsics(pool, scene, j),
            )
            for j in inputs
        ]
    )
    r = np.stack(
        [plucker(frame.apply(c2ws[j]), _intrinsics(pool, scene, j), s, s) for j in targets]
    )
    y = np.stack([imgs[j].astype(np.float32) / 255.0 for j in targets])
    return x, r, y


def sample_batch(
    pool: dict, recipe: Recipe, step: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch of ``step`` (deterministic in recipe.seed and step): views [B, n, 9, S, S],
    target rays [B, t, 6, S, S], target images [B, t, 3, S, S]."""
    rng = np.random.default_rng([recipe.seed, step])
    n_scenes, n_frames = pool["images"].shape[:2]
    n = int(rng.integers(recipe.min_views, recipe.max_views + 1))
    xs, rs, ys = [], [], []
    for i in rng.integers(0, n_scenes, recipe.batch):
        perm = rng.permutation(n_frames)
        inputs, targets = perm[:n], perm[n : n + recipe.n_targets]
        extra = perm[n + recipe.n_targets : n + recipe.n_targets + int(rng.integers(0, 3))]
        x, r, y = make_views(pool, int(i), inputs, targets, [*inputs, *targets, *extra])
        xs.append(x), rs.append(r), ys.append(y)
    return (
        torch.from_numpy(np.stack(xs)),
        torch.from_numpy(np.stack(rs)),
        torch.from_numpy(np.stack(ys)),
    )


# --------------------------------------------------------------------------- model / optimizer


@torch.no_grad()
def init_for_training(model: EfficientLVSM, seed: int) -> EfficientLVSM:
    """Linear weights ~ N(0, 0.02) (as upstream), RMSNorm weights 1."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim == 2:
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        else:
            p.fill_(1.0)
    return model


RESTART_WARMUP = 20


def lr_at(recipe: Recipe, step: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup`` steps, then cosine down to ``min_lr`` at
    ``steps``; then per warm restart ``[n, peak]`` of ``cycles``: warm-up from ``min_lr``
    to ``peak`` over RESTART_WARMUP steps and cosine down to ``min_lr`` over ``n`` steps."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    start, length, peak, warm = 0, recipe.steps, recipe.lr, recipe.warmup
    for n, p in recipe.cycles:
        if step < start + length:
            break
        start, length, peak, warm = start + length, int(n), float(p), RESTART_WARMUP
    local = step - start
    if start and local < warm:
        return recipe.min_lr + (peak - recipe.min_lr) * (local + 1) / warm
    t = min(1.0, (local - warm) / max(1, length - warm))
    return recipe.min_lr + 0.5 * (peak - recipe.min_lr) * (1.0 + math.cos(math.pi * t))


def _optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.ndim == 2]
    keep = [p for p in model.parameters() if p.ndim != 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": keep, "weight_decay": 0.0},
        ],
        lr=recipe.lr,
        betas=(0.9, 0.95),
    )


def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def bf16_faster(recipe: Recipe, reps: int = 3) -> dict:
    """Time a training step in fp32 and under bf16 autocast on this CPU.

    Returns: {"fp32_s": s/step, "bf16_s": s/step or None (no bf16 support), "use_bf16": bool}.
    """
    model = init_for_training(EfficientLVSM(recipe.model_config()), 0).train()
    opt = _optimizer(model, recipe)
    pool = _render_scenes(
        range(VAL_SEED0, VAL_SEED0 + 4),
        recipe.frames_per_scene,
        recipe.image_size,
        recipe.style,
        "timing",
    )
    batch = sample_batch(pool, replace(recipe, min_views=recipe.max_views), 0)
    out = {}
    for mode in ("fp32", "bf16"):
        if mode == "bf16" and not {"avx512_bf16", "amx_bf16"} & set(_machine()["flags"]):
            out["bf16_s"] = None
            continue
        times = []
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            _train_step(model, opt, batch, recipe, mode == "bf16")
            times.append(time.perf_counter() - t0)
        out[f"{mode}_s"] = float(np.median(times[1:]))
    out["use_bf16"] = out.get("bf16_s") is not None and out["bf16_s"] < out["fp32_s"]
    return out


def _train_step(model, opt, batch, recipe: Recipe, bf16: bool) -> float:
    x, r, y = batch
    with _autocast(bf16):
        pred = model(x, r)
    loss = torch.nn.functional.mse_loss(pred.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
    opt.step()
    return float(loss.detach())


# --------------------------------------------------------------------------- evaluation


def _psnr_t(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    mse = ((pred - gt) ** 2).flatten(-3).mean(-1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def eval_examples(pool: dict) -> list:
    """Per scene of ``pool``: (views [4, 9, S, S], target rays [2, 6, S, S], targets
    [2, 3, S, S]) with inputs EVAL_INPUTS, targets EVAL_TARGETS and the frame from all six
    cameras (as ``viewrt infer --views 4`` on that scene)."""
    frames = [*EVAL_INPUTS, *EVAL_TARGETS]
    return [
        make_views(pool, i, EVAL_INPUTS, EVAL_TARGETS, frames) for i in range(len(pool["images"]))
    ]


@torch.no_grad()
def predict_by_views(model: EfficientLVSM, examples: list, max_views: int = 4) -> np.ndarray:
    """Predictions float32 [N scenes, max_views, 2 targets, 3, S, S] from the first 1..max_views inputs."""
    model.eval()
    out = []
    for x, r, _ in examples:
        xt, rt = torch.from_numpy(x)[None], torch.from_numpy(r)[None]
        out.append(torch.cat([model(xt[:, :k], rt) for k in range(1, max_views + 1)]).numpy())
    return np.stack(out)


def quick_psnr(model: EfficientLVSM, examples: list) -> list[float]:
    """Mean PSNR (float, no 8-bit rounding) by number of input views 1..4 (validation)."""
    pred = torch.from_numpy(predict_by_views(model, examples))
    gt = torch.from_numpy(np.stack([e[2] for e in examples]))[:, None]
    return [float(v) for v in _psnr_t(pred, gt).mean(dim=(0, 2))]


def evaluate(
    model: EfficientLVSM, n_scenes: int = 50, style: str = "multiview", seed0: int = HELDOUT_SEED0
) -> dict:
    """Mean PSNR/SSIM by number of input views (1..4) on held-out synthetic scenes.

    Scenes ``seed0 .. seed0 + n_scenes - 1`` (8 frames at the model's size); targets
    EVAL_TARGETS, inputs the first k of EVAL_INPUTS. Metrics as ``viewrt infer`` computes
    them: on 8-bit images (:func:`viewrt.metrics.psnr`, :func:`viewrt.metrics.ssim`).
    Also the oracle that predicts each target's own mean colour.

    Returns: {"views": [1..4], "psnr": [...], "ssim": [...], "oracle_psnr": float,
    "per_scene_psnr": [[...] per scene], "n_scenes", "n_targets", "seeds", "protocol"}.
    """
    size = model.cfg.image_size
    pool = _render_scenes(range(seed0, seed0 + n_scenes), 8, size, style, "held-out scenes")
    examples = eval_examples(pool)
    pred = predict_by_views(model, examples)
    q = lambda a: uint8_to_image(image_to_uint8(a))  # noqa: E731 - as written to PNG
    ps = np.zeros(pred.shape[:3])
    ss = np.zeros(pred.shape[:3])
    oracle = []
    for i, (_, _, gt) in enumerate(examples):
        for t in range(gt.shape[0]):
            g = q(gt[t])
            oracle.append(
                psnr(q(np.broadcast_to(g.mean(axis=(1, 2), keepdims=True), g.shape).copy()), g)
            )
            for k in range(pred.shape[1]):
                p = q(pred[i, k, t])
                ps[i, k, t], ss[i, k, t] = psnr(p, g), ssim(p, g)
    return {
        "views": list(range(1, pred.shape[1] + 1)),
        "psnr": ps.mean(axis=(0, 2)).tolist(),
        "ssim": ss.mean(axis=(0, 2)).tolist(),
        "oracle_psnr": float(np.mean(oracle)),
        "per_scene_psnr": ps.mean(axis=2).tolist(),
        "n_scenes": n_scenes,
        "n_targets": len(EVAL_TARGETS),
        "seeds": [seed0, seed0 + n_scenes - 1],
        "style": style,
        "protocol": f"8 frames per scene; targets {list(EVAL_TARGETS)}; inputs the first k of {list(EVAL_INPUTS)}; "
        "normalization frame from those six cameras; metrics on 8-bit images",
    }


def eval_markdown(result: dict, title: str) -> str:
    """The evaluation as a markdown table."""
    lines = [f"{title}", "", "| input views | PSNR (dB) | SSIM |", "|---|---|---|"]
    for v, p, s in zip(result["views"], result["psnr"], result["ssim"]):
        lines.append(f"| {v} | {p:.2f} | {s:.3f} |")
    lines += [
        "",
        f"Mean-colour oracle: {result['oracle_psnr']:.2f} dB. {result['n_scenes']} held-out scenes "
        f"(style {result['style']}, seeds {result['seeds'][0]}-{result['seeds'][1]}), {result['n_targets']} targets each; "
        f"{result['protocol']}.",
    ]
    return "\n".join(lines) + "\n"


def make_heldout_list(
    out_dir: str | Path, n_scenes: int, size: int = 64, style: str = "multiview"
) -> Path:
    """Write held-out scenes (seeds from HELDOUT_SEED0, never used by training) and a list file."""
    return make_synthetic_list(
        out_dir, n_scenes, n_views=8, size=size, seed=HELDOUT_SEED0, prefix="heldout", style=style
    )


# --------------------------------------------------------------------------- training


def _tty() -> bool:
    return sys.stderr.isatty()


def _bar(it, desc, **kw):
    return tqdm(it, desc=desc, disable=None, dynamic_ncols=True, leave=False, **kw)


def save_checkpoint(path: Path, model, opt, step: int, recipe: Recipe, log: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "recipe": json.dumps(asdict(recipe)),
            "log": json.dumps(log),
        },
        tmp,
    )
    tmp.replace(path)


def _plot(log: list, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [r for r in log if "loss" in r]
    ev = [r for r in log if "val_psnr" in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    if tr:
        steps = np.array([r["step"] for r in tr])
        loss = np.array([r["loss"] for r in tr])
        a.plot(steps, loss, lw=0.5, alpha=0.4, label="loss (per step)")
        k = max(1, len(loss) // 50)
        if len(loss) >= k:
            sm = np.convolve(loss, np.ones(k) / k, mode="valid")
            a.plot(steps[k - 1 :], sm, lw=1.5, label=f"mean of {k}")
        a.set_yscale("log")
    a.set_xlabel("step"), a.set_ylabel("training MSE"), a.grid(alpha=0.3), a.legend(fontsize=8)
    if ev:
        steps = [r["step"] for r in ev]
        for k in range(len(ev[0]["val_psnr"])):
            b.plot(
                steps,
                [r["val_psnr"][k] for r in ev],
                marker=".",
                label=f"{k + 1} input view{'s' if k else ''}",
            )
        lo = min(min(r["val_psnr"]) for r in ev)
        b.set_ylim(min(10.0, lo - 1.0), max(max(r["val_psnr"]) for r in ev) + 1.0)
    b.set_xlabel("step"), b.set_ylabel("validation PSNR (dB)"), b.grid(alpha=0.3)
    if ev:
        b.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(
    recipe: Recipe, out_dir: str | Path, resume: bool = True, echo=print, until: int | None = None
) -> dict:
    """Train (or resume) a run into ``out_dir``.

    Writes ``out_dir/checkpoint.pt`` (upstream layout, every ``ckpt_every`` steps and at
    the end), ``out_dir/log.json`` (recipe, machine, per-step loss, validation PSNR by
    views, wall time), ``out_dir/curves.png`` and ``out_dir/model.safetensors`` (the final
    weights). With ``resume`` and an existing checkpoint whose recipe matches, training
    continues from its step. ``until`` stops (with a checkpoint) at that step, as an
    interrupted run would; the schedule still follows ``recipe.steps``.

    Returns: the log dict.
    Raises: ViewrtError on a bad recipe or a checkpoint of another recipe.
    """
    from safetensors.torch import save_file

    recipe.check()
    if recipe.scene_list:
        for scene in load_scene_list(recipe.scene_list):  # a bad list or scene file: one
            load_scene(scene)  # error before anything is written

    out = make_folder(out_dir, "--out")
    torch.manual_seed(recipe.seed)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    model = init_for_training(EfficientLVSM(recipe.model_config()), recipe.seed).train()
    if recipe.init:  # a fine-tune: the given weights (strictly, this recipe's architecture)
        start, _ = load_checkpoint(recipe.init, recipe.model_config())
        model.load_state_dict(start.state_dict(), strict=True)
    opt = _optimizer(model, recipe)
    ckpt = out / "checkpoint.pt"
    step, log, wall0 = 0, [], 0.0
    if resume and ckpt.is_file():
        step, log, wall0 = _resume(ckpt, recipe, model, opt)
        echo(f"resuming {ckpt} at step {step}")
    pool, val, meta = _prepare(recipe, model, out)
    run = _Run(recipe, model, opt, out, ckpt, meta, log, echo)
    total = recipe.total_steps
    stop = total if until is None else min(until, total)
    step = _train_loop(run, pool, val, step, stop, t0=time.perf_counter() - wall0)
    if step < total:
        return _write_log(out, meta, log)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(out / "model.safetensors"),
        metadata={"recipe": json.dumps(asdict(recipe))},
    )
    return _write_log(out, meta, log)


def _resume(ckpt: Path, recipe: Recipe, model, opt) -> tuple[int, list, float]:
    """Load a checkpoint of the same recipe (or one this recipe extends by warm restarts)
    into ``model`` and ``opt``; returns ``(step, log, wall seconds so far)``.

    Raises: ViewrtError naming the recipe keys that differ.
    """
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    old = json.loads(state.get("recipe", "{}"))
    mine = asdict(recipe)
    # a run may be extended by warm restarts: the cycles it did must be a prefix of ours
    old_cycles = old.get("cycles") or []
    extended = old_cycles == mine["cycles"][: len(old_cycles)]
    diff = [
        k
        for k in mine
        if k not in ("cycles", "notes", "eval_every", "ckpt_every", "threads")
        and old.get(k) != mine[k]
    ]
    diff += [] if extended else ["cycles"]
    if diff:
        raise ViewrtError(
            f"{ckpt} was trained with another recipe ({', '.join(f'{k}: {old.get(k)} vs {mine[k]}' for k in diff)}); "
            "use another --out or --no-resume"
        )
    model.load_state_dict(state["model"], strict=True)
    opt.load_state_dict(state["optimizer"])
    step, log = int(state["step"]), json.loads(state.get("log", "[]"))
    wall0 = max((r.get("wall_s", 0.0) for r in log), default=0.0)
    return step, log, wall0


def _prepare(recipe: Recipe, model, out: Path) -> tuple[dict, tuple, dict]:
    """``(training pool, validation examples, the log's meta)``: the scenes rendered (or
    read from the list) and the run's description (recipe, machine, seed ranges)."""
    t_data = time.perf_counter()
    pool = (
        list_pool(recipe.scene_list, recipe.image_size)
        if recipe.scene_list
        else synthetic_pool(recipe, out)
    )
    val_pool = _render_scenes(
        range(VAL_SEED0, VAL_SEED0 + recipe.val_scenes),
        8,
        recipe.image_size,
        recipe.style,
        "validation scenes",
    )
    val = eval_examples(val_pool)
    data_s = time.perf_counter() - t_data
    meta = {
        "recipe": asdict(recipe),
        "machine": _machine(),
        "params": sum(p.numel() for p in model.parameters()),
        "data_s": data_s,
        "seed_ranges": {
            "train": [scene_seed(recipe.seed, 0), scene_seed(recipe.seed, recipe.n_scenes - 1)],
            "validation": [VAL_SEED0, VAL_SEED0 + recipe.val_scenes - 1],
            "held_out_from": HELDOUT_SEED0,
        },
    }
    return pool, val, meta


@dataclass
class _Run:
    """What the training loop writes to: the model and optimizer, the folder, its
    checkpoint, the log (appended in place) and its meta, and where progress lines go."""

    recipe: Recipe
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    out: Path
    ckpt: Path
    meta: dict
    log: list
    echo: Any


def _train_loop(run: _Run, pool: dict, val, step: int, stop: int, t0: float) -> int:
    """Steps from ``step`` to ``stop``: validation every ``eval_every`` steps and at the
    end of the schedule, a checkpoint every ``ckpt_every`` steps and at ``stop``; returns
    the step reached. ``t0``: the clock origin of the log's wall times."""
    recipe, model, opt, log = run.recipe, run.model, run.opt, run.log
    total = recipe.total_steps
    bar = tqdm(total=total, initial=step, desc="train", dynamic_ncols=True) if _tty() else None
    last_val = None
    while step < stop:
        for g in opt.param_groups:
            g["lr"] = lr_at(recipe, step)
        model.train()
        batch = sample_batch(pool, recipe, step)
        loss = _train_step(model, opt, batch, recipe, recipe.bf16)
        if not math.isfinite(loss):
            raise ViewrtError(f"training diverged at step {step} (loss {loss}); lower --lr")
        step += 1
        log.append(
            {
                "step": step,
                "loss": loss,
                "views": int(batch[0].shape[1]),
                "lr": opt.param_groups[0]["lr"],
                "wall_s": time.perf_counter() - t0,
            }
        )
        if step % recipe.eval_every == 0 or step == total:
            # the mean training loss since the last validation (the last eval_every steps)
            recent = [r["loss"] for r in log if "loss" in r][-recipe.eval_every :]
            last_val = quick_psnr(model, val)
            log.append({"step": step, "val_psnr": last_val, "wall_s": time.perf_counter() - t0})
            if not _tty():
                run.echo(
                    f"step {step}: loss {np.mean(recent):.5f}, "
                    f"val PSNR by views {' '.join(f'{v:.2f}' for v in last_val)} dB, {time.perf_counter() - t0:.0f} s"
                )
        if bar is not None:
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss:.4f}", psnr="-" if last_val is None else f"{last_val[-1]:.2f}"
            )
        if step % recipe.ckpt_every == 0 or step == stop:
            save_checkpoint(run.ckpt, model, opt, step, recipe, log)
            _write_log(run.out, run.meta, log, plot=False)
    if bar is not None:
        bar.close()
    return step


def _write_log(out: Path, meta: dict, log: list, plot: bool = True) -> dict:
    wall = max((r.get("wall_s", 0.0) for r in log), default=0.0)
    data = {
        **meta,
        "steps_done": max((r["step"] for r in log), default=0),
        "wall_s": wall,
        "log": log,
    }
    (out / "log.json").write_text(json.dumps(data, indent=0))
    r = meta["recipe"]
    if plot:
        _plot(
            log,
            out / "curves.png",
            f"Efficient-LVSM {r['image_size']}px p{r['patch_size']} d{r['d_model']} L{r['n_layers']}, "
            f"{r['n_scenes']} {r['style']} scenes, seed {r['seed']} - {meta['machine']['cpu']}, "
            f"{meta['recipe']['threads']} threads",
        )
    return data


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    flags = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = sorted(
                    f
                    for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
                    if f in have
                )
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "flags": flags,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------- CLI entry points


def demo_recipe(
    steps=None, seed=0, n_scenes=None, scene_list=None, batch=None, lr=None, autocast="auto",
    style=None, init=None,
) -> Recipe:  # fmt: skip
    """The recipe of the shipped demo weights, with optional overrides (None keeps the default;
    ``style``: "classic", "multiview" or "mixed"; ``init``: weights to fine-tune).
    ``autocast``: "bf16" (raises ViewrtError on a CPU without bf16 instructions), "off" (fp32),
    or "auto" (bf16 where the CPU has it)."""
    r = Recipe(seed=seed, scene_list=scene_list, init=None if init is None else str(init))
    for k, v in (("steps", steps), ("n_scenes", n_scenes), ("batch", batch), ("lr", lr),
                 ("style", style)):  # fmt: skip
        if v is not None:
            setattr(r, k, v)
    if steps is not None:
        r.cycles = []  # an explicit --steps is the whole run: one cosine cycle, no warm restart
    has_bf16 = bool({"avx512_bf16", "amx_bf16"} & set(_machine()["flags"]))
    if autocast not in ("auto", "bf16", "off"):
        raise ViewrtError(f"autocast must be auto, bf16 or off, got {autocast!r}")
    if autocast == "bf16" and not has_bf16:
        raise ViewrtError(
            "--autocast bf16: this CPU has no bf16 instructions (avx512_bf16 or amx_bf16)"
        )
    r.bf16 = has_bf16 if autocast == "auto" else autocast == "bf16"
    r.check()
    return r


def run_eval(
    out_dir: str | Path, checkpoint: str | None = None, n_scenes: int = 50, style="multiview"
) -> dict:
    """Evaluate the demo preset (or ``checkpoint`` with the demo config) on held-out scenes
    of ``style`` and write ``out_dir/eval.json`` and ``out_dir/eval.md``. Returns the result
    with "markdown"."""
    if checkpoint:
        model, _ = load_checkpoint(checkpoint, PRESETS["demo"])
        src = str(checkpoint)
    else:
        model, _ = build_model("demo")
        src = f"demo preset ({DEMO_WEIGHTS.name})"
    t0 = time.perf_counter()
    res = evaluate(model, n_scenes, style)
    res["weights"], res["machine"], res["eval_s"] = src, _machine(), time.perf_counter() - t0
    res["markdown"] = eval_markdown(res, f"Held-out evaluation of {src} ({res['machine']['cpu']})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(res, indent=1))
    (out / "eval.md").write_text(res["markdown"])
    return res
