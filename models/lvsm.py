"""LVSM decoder-only: the full-recompute baseline for latency comparisons.

For each target view, the tokens of all N input views and that target's pose tokens are
concatenated, an input LayerNorm (with weight, no bias) is applied, and L blocks of full
bidirectional self-attention run over (N+1)*T tokens; the last T go to the head. Inputs
attend to the target, so nothing can be cached: adding a view recomputes everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from viewrt.errors import ViewrtError
from viewrt.models.layers import (
    LayerNorm,
    SelfAttentionBlock,
    ViewTransformerConfig,
    image_head,
    tokenizer,
    unpatchify,
)


@dataclass(frozen=True)
class LVSMConfig(ViewTransformerConfig):
    """LVSM decoder-only sizes (defaults: the paper's model, 24 blocks)."""

    n_layers: int = 24  # self-attention blocks


LVSM_PRESETS: dict[str, LVSMConfig] = {
    # the paper's decoder-only model at 256x256
    "lvsm-paper": LVSMConfig(),
    # same width as Efficient-LVSM `small` and the depth of its 6+6 layers
    "lvsm-small": LVSMConfig(image_size=128, patch_size=8, d_model=384, n_layers=12, head_dim=64),
    # same width as `tiny`, depth of its 2+2 layers
    "lvsm-tiny": LVSMConfig(image_size=32, patch_size=8, d_model=64, n_layers=4, head_dim=32),
}


def get_lvsm_preset(name: str) -> LVSMConfig:
    if name not in LVSM_PRESETS:
        raise ViewrtError(
            f"unknown LVSM preset {name!r}; expected one of {', '.join(LVSM_PRESETS)}"
        )
    return LVSM_PRESETS[name]


class LVSMDecoderOnly(nn.Module):
    """LVSM decoder-only reference (keys as the upstream checkpoints)."""

    def __init__(self, cfg: LVSMConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        p, d = cfg.patch_size, cfg.d_model
        self.image_tokenizer = tokenizer(9, p, d)
        self.target_pose_tokenizer = tokenizer(6, p, d)
        self.transformer_input_layernorm = LayerNorm(d, affine=True)
        self.transformer_blocks = nn.ModuleList(
            SelfAttentionBlock(d, cfg.head_dim, cfg.mlp_mult, affine_norm=True)
            for _ in range(cfg.n_layers)
        )
        self.image_token_decoder = image_head(d, p, affine_norm=True)

    def forward(self, views: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """views [B, V, 9, H, W], targets [B, Vt, 6, H, W] -> images [B, Vt, 3, H, W]."""
        b, nv = views.shape[:2]
        vt, h, w = targets.shape[1], targets.shape[3], targets.shape[4]
        T = self.cfg.tokens_per_view
        inp = self.image_tokenizer(views.flatten(0, 1)).reshape(b, nv * T, -1)  # [B, V*T, D]
        tgt = self.target_pose_tokenizer(targets.flatten(0, 1))  # [B*Vt, T, D]
        inp = inp.repeat_interleave(vt, dim=0)  # [B*Vt, V*T, D]
        x = self.transformer_input_layernorm(torch.cat([inp, tgt], dim=1))  # [B*Vt, (V+1)*T, D]
        for block in self.transformer_blocks:
            x = block(x)
        rgb = self.image_token_decoder(x[:, -T:])  # [B*Vt, T, 3*p*p]
        return unpatchify(rgb, self.cfg.patch_size, h, w).reshape(b, vt, 3, h, w)


def count_flops(cfg: LVSMConfig, n_views: int, n_targets: int) -> float:
    """Analytic FLOPs of one LVSM decoder-only render (all ``n_targets``, ``n_views`` inputs)."""
    T, D, L, m, p2 = cfg.tokens_per_view, cfg.d_model, cfg.n_layers, cfg.mlp_mult, cfg.patch_size**2
    S = (n_views + 1) * T
    block = 2 * S * D * 3 * D + 2 * S * D * D + 2 * 2 * S * S * D + 2 * S * D * m * D * 2
    inputs = 2 * n_views * T * 9 * p2 * D  # input views are tokenized once, shared by all targets
    return float(inputs + n_targets * (2 * T * 6 * p2 * D + L * block + 2 * T * D * 3 * p2))
