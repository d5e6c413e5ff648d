"""Efficient-LVSM: a per-view encoder and a target decoder that cross-attends to every
encoded input view, checkpoint-compatible with the released weights.

The model is this file plus the blocks in layers.py. Shapes: B batch, V input views, Vt target views,
T tokens per view, D model width, H heads, Dh head dim, L layers.

- Encoder block i (per input view): ``x += attn(LN(x)); x += mlp(LN(x))``.
- Decoder block i: target self-attention within each target view, then cross-attention
  from the target tokens to the output of encoder block i over all input views, then MLP.
- The cross-attention K/V of a view depend on that view alone, so they are computed once
  per view (:meth:`EfficientLVSM.encode_view`) and cached; rendering reads the cache
  (:meth:`EfficientLVSM.render`). :class:`TorchKVCache` is the preallocated PyTorch cache
  used as ground truth by the tests and as the PyTorch eager baseline in benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from viewrt.errors import ViewrtError
from viewrt.models.layers import (
    MLP,
    LayerNorm,
    RMSNorm,
    SelfAttention,
    SelfAttentionBlock,
    ViewTransformerConfig,
    attention,
    image_head,
    split_heads,
    tokenizer,
    unpatchify,
)


@dataclass(frozen=True)
class EfficientLVSMConfig(ViewTransformerConfig):
    """Efficient-LVSM sizes (defaults: the released res256 model); n_layers = layer pairs."""

    def kv_bytes_per_view(self, itemsize: int) -> int:
        """Bytes of cached K and V for one view over all layers."""
        return self.n_layers * 2 * self.tokens_per_view * self.d_model * itemsize


PRESETS: dict[str, EfficientLVSMConfig] = {
    # tests: 16 tokens per view, 2 heads of 32
    "tiny": EfficientLVSMConfig(image_size=32, patch_size=8, d_model=64, n_layers=2, head_dim=32),
    # CPU benchmarks: 256 tokens per view, 6 heads of 64
    "small": EfficientLVSMConfig(
        image_size=128, patch_size=8, d_model=384, n_layers=6, head_dim=64
    ),
    # the built-in trained model (models/weights/demo.safetensors, `make train`): 64 tokens per view, 4 heads of 32
    "demo": EfficientLVSMConfig(image_size=64, patch_size=8, d_model=128, n_layers=4, head_dim=32),
    # the released efficient_lvsm_res256.pt config (1024 tokens per view, ~199M params)
    "res256": EfficientLVSMConfig(
        image_size=256, patch_size=8, d_model=768, n_layers=12, head_dim=64
    ),
    # 512x512 images; the patch of the released res512 file is read from its weights on load
    "res512": EfficientLVSMConfig(
        image_size=512, patch_size=8, d_model=768, n_layers=12, head_dim=64
    ),
}


def get_preset(name: str) -> EfficientLVSMConfig:
    """Return the named preset config; raises ViewrtError listing the known names."""
    if name not in PRESETS:
        raise ViewrtError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


class CrossAttention(nn.Module):
    """Target queries to cached K/V (keys to_q, to_kv [k rows, then v], fc, q_norm, k_norm)."""

    def __init__(self, cfg: EfficientLVSMConfig):
        super().__init__()
        self.head_dim = cfg.head_dim
        self.explicit_attention = False  # set by the exporter (see layers.explicit_attention)
        self.norm_q = LayerNorm(cfg.d_model)
        self.norm_kv = LayerNorm(cfg.d_model)
        self.to_q = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.to_kv = nn.Linear(cfg.d_model, 2 * cfg.d_model, bias=False)
        self.fc = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim)
        self.k_norm = RMSNorm(cfg.head_dim)

    def project_kv(self, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder block output [B, T, D] -> cache entries K, V [B, T, H, Dh]."""
        k, v = self.to_kv(self.norm_kv(enc)).chunk(2, dim=-1)  # 2 x [B, T, D]
        return self.k_norm(split_heads(k, self.head_dim)), split_heads(v, self.head_dim)

    def forward(self, t: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """t [B, Vt*T, D] (all targets as one query sequence), k/v [B, N, H, Dh] -> [B, Vt*T, D]."""
        q = self.q_norm(split_heads(self.to_q(self.norm_q(t)), self.head_dim))  # [B, Vt*T, H, Dh]
        out = attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), self.explicit_attention
        )  # [B, H, Vt*T, Dh]
        return self.fc(out.transpose(1, 2).flatten(2))


class DecoderBlock(nn.Module):
    def __init__(self, cfg: EfficientLVSMConfig):
        super().__init__()
        self.norm1 = LayerNorm(cfg.d_model)
        self.self_attn = SelfAttention(cfg.d_model, cfg.head_dim)
        self.cross_attn = CrossAttention(cfg)
        self.norm2 = LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg.d_model, cfg.mlp_mult)

    def forward(
        self, t: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: int
    ) -> torch.Tensor:
        """t [B*Vt, T, D]; k/v [B, N, H, Dh] -> [B*Vt, T, D]."""
        t = t + self.self_attn(self.norm1(t))  # within each target view
        _, tok, d = t.shape
        tq = t.reshape(batch, -1, d)  # [B, Vt*T, D]: all targets of a batch item query together
        t = t + self.cross_attn(tq, k, v).reshape(-1, tok, d)
        return t + self.mlp(self.norm2(t))


class EfficientLVSM(nn.Module):
    """The Efficient-LVSM reference model (state-dict keys as the released checkpoints)."""

    def __init__(self, cfg: EfficientLVSMConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        p, d = cfg.patch_size, cfg.d_model
        self.rgbp_tokenizer = tokenizer(9, p, d)
        self.target_pose_tokenizer = tokenizer(6, p, d)
        self.input_self_attn_blocks = nn.ModuleList(
            SelfAttentionBlock(d, cfg.head_dim, cfg.mlp_mult, affine_norm=False)
            for _ in range(cfg.n_layers)
        )
        self.self_cross_blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_layers))
        self.image_token_decoder = image_head(d, p, affine_norm=False)
        self.residual_dtype: torch.dtype | None = (
            None  # fp32 in the mixed fp16 variant (layers.mixed_fp16)
        )

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.residual_dtype is None else x.to(self.residual_dtype)

    # -- incremental path: one view at a time into a cache --------------------------------
    def encode_view(self, views: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Encode posed views independently into per-layer cache entries.

        Args:
            views: [B, 9, H, W] input channels ``[2*rgb-1, o x d, d]``.
        Returns:
            L pairs (K, V), each [B, T, H, Dh], already through LN_kv, to_kv and k_norm.
        """
        x = self._residual(self.rgbp_tokenizer(views))  # [B, T, D]
        kv = []
        for enc, dec in zip(self.input_self_attn_blocks, self.self_cross_blocks):
            x = enc(x)
            kv.append(dec.cross_attn.project_kv(x))
        return kv

    def render(
        self, targets: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        """Render target views from cached K/V.

        Args:
            targets: [B, Vt, 6, H, W] target rays ``[o x d, d]``.
            kv: L pairs (K, V), each [B, N, H, Dh] (N = cached views * T, any order).
        Returns:
            images [B, Vt, 3, H, W] in [0, 1].
        """
        b, _, _, h, w = targets.shape
        t = self._residual(self.target_pose_tokenizer(targets.flatten(0, 1)))  # [B*Vt, T, D]
        for block, (k, v) in zip(self.self_cross_blocks, kv):
            t = block(t, k, v, b)
        rgb = self.image_token_decoder(t)  # [B*Vt, T, 3*p*p]
        return unpatchify(rgb, self.cfg.patch_size, h, w).unflatten(0, (b, -1))  # [B, Vt, 3, H, W]

    # -- batch path: all views at once (the upstream forward) ------------------------------
    def forward(self, views: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """views [B, V, 9, H, W], targets [B, Vt, 6, H, W] -> images [B, Vt, 3, H, W]."""
        b, nv = views.shape[:2]
        kv = self.encode_view(views.flatten(0, 1))  # L x ([B*V, T, H, Dh], ...)
        kv = [
            (k.reshape(b, -1, *k.shape[2:]), v.reshape(b, -1, *v.shape[2:])) for k, v in kv
        ]  # [B, V*T, H, Dh]
        return self.render(targets, kv)


class TorchKVCache:
    """A preallocated PyTorch KV cache (B == 1): the ground truth for the runtime.

    One K and one V buffer per layer of ``max_views * T`` tokens, written in place; views
    occupy contiguous slots ``[0, n)``; removing a view moves the last slot into the hole.
    """

    def __init__(
        self, model: EfficientLVSM, max_views: int, dtype: torch.dtype = torch.float32, device=None
    ):
        cfg = model.cfg
        self.model, self.max_views, self.T = model, max_views, cfg.tokens_per_view
        shape = (1, max_views * self.T, cfg.n_heads, cfg.head_dim)  # [1, capacity, H, Dh]
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.view_ids: list[int] = []

    def __len__(self) -> int:
        return len(self.view_ids)

    @torch.no_grad()
    def add(self, view_id: int, view: torch.Tensor) -> None:
        """Encode ``view`` [1, 9, H, W] into the next free slot."""
        if len(self) >= self.max_views:
            raise ViewrtError(f"cache full: {self.max_views} views")
        s = slice(len(self) * self.T, (len(self) + 1) * self.T)
        for i, (k, v) in enumerate(self.model.encode_view(view)):
            self.k[i][:, s] = k
            self.v[i][:, s] = v
        self.view_ids.append(view_id)

    def remove(self, view_id: int) -> None:
        """Drop a view: the last slot moves into its place."""
        slot, last = self.view_ids.index(view_id), len(self) - 1
        if slot != last:
            dst, src = (
                slice(slot * self.T, (slot + 1) * self.T),
                slice(last * self.T, (last + 1) * self.T),
            )
            for buf in self.k + self.v:
                buf[:, dst] = buf[:, src]
        self.view_ids[slot] = self.view_ids[last]
        self.view_ids.pop()

    def prefix(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self) * self.T
        return [(k[:, :n], v[:, :n]) for k, v in zip(self.k, self.v)]

    @torch.no_grad()
    def render(self, targets: torch.Tensor) -> torch.Tensor:
        """targets [1, Vt, 6, H, W] -> images [1, Vt, 3, H, W] from the cached views."""
        if not self.view_ids:
            raise ViewrtError("cannot render: the cache holds no views")
        return self.model.render(targets, self.prefix())


def count_flops(cfg: EfficientLVSMConfig, n_views: int, n_targets: int) -> dict[str, float]:
    """Analytic FLOPs (2 per multiply-add) of encoding one view and of one render.

    Returns: {"encode": per added view, "decode": one render of ``n_targets`` targets over
    ``n_views`` cached views}. Norms, softmax and activations are not counted.
    """
    T, D, L, m = cfg.tokens_per_view, cfg.d_model, cfg.n_layers, cfg.mlp_mult
    p2 = cfg.patch_size**2
    mlp = 2 * T * D * m * D * 2
    self_attn = 2 * T * D * 3 * D + 2 * T * D * D + 2 * 2 * T * T * D
    encode = 2 * T * 9 * p2 * D + L * (self_attn + mlp + 2 * T * D * 2 * D)
    N = n_views * T
    cross = 2 * T * D * D * 2 + 2 * 2 * T * N * D  # to_q + fc, QK^T + PV
    decode = n_targets * (2 * T * 6 * p2 * D + L * (self_attn + cross + mlp) + 2 * T * D * 3 * p2)
    return {"encode": float(encode), "decode": float(decode)}
