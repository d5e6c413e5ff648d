"""PyTorch reference models, presets and strict checkpoint loading (needs torch)."""

from __future__ import annotations

from pathlib import Path

import torch

from viewrt.errors import ViewrtError
from viewrt.models.checkpoint import LoadReport, load_checkpoint, save_upstream_checkpoint
from viewrt.models.efficient_lvsm import (
    PRESETS,
    EfficientLVSM,
    EfficientLVSMConfig,
    TorchKVCache,
    get_preset,
)
from viewrt.models.lvsm import LVSM_PRESETS, LVSMConfig, LVSMDecoderOnly, get_lvsm_preset
from viewrt.models.registry import find_preset

__all__ = [
    "PRESETS",
    "LVSM_PRESETS",
    "EfficientLVSM",
    "EfficientLVSMConfig",
    "LVSMConfig",
    "LVSMDecoderOnly",
    "TorchKVCache",
    "LoadReport",
    "get_preset",
    "get_lvsm_preset",
    "load_checkpoint",
    "save_upstream_checkpoint",
    "build_model",
    "init_weights",
    "TRAINED_WEIGHTS",
]

# Presets whose built-in weights are trained and shipped in the package (``make train``).
TRAINED_WEIGHTS: dict[str, Path] = {"demo": Path(__file__).parent / "weights" / "demo.safetensors"}


@torch.no_grad()
def init_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Deterministic built-in weights (no checkpoint): variance-preserving Linear weights
    and norm weights in [0.5, 1.5], so attention is not uniform and outputs are not flat.
    These are untrained; they exist for parity tests, demos and benchmarks."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim == 2:
            p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
        else:
            p.copy_(0.5 + torch.rand(p.shape, generator=g))
    return model.eval()


def build_model(
    preset: str, checkpoint: str | None = None, seed: int = 0, cached: bool | None = None
):
    """The model for a preset name of any family (see models/registry.py): loaded strictly
    from ``checkpoint`` if given, else the preset's shipped trained weights (``demo``:
    models/weights/demo.safetensors, loaded strictly), else built-in deterministic untrained
    weights.

    Args:
        preset: a preset of any family (``cached=True``: only exportable families).
        checkpoint: upstream checkpoint path (.pt read weights-only, or .safetensors).
        seed: seed of the built-in weights.
    Returns: (model in eval mode, LoadReport or None).
    Raises: ViewrtError for an unknown preset or a checkpoint that does not match it.
    """
    family, cfg = find_preset(preset, cached)
    if checkpoint is None and preset in TRAINED_WEIGHTS:
        checkpoint = TRAINED_WEIGHTS[preset]
        if not checkpoint.is_file():
            raise ViewrtError(
                f"preset {preset!r}: its trained weights {checkpoint} are missing (reinstall viewrt, or run `make train`)"
            )
    if checkpoint is not None:
        return load_checkpoint(checkpoint, cfg)
    return init_weights(family.model_cls(cfg), seed), None
