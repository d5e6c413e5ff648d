"""Building blocks shared by the reference models (Efficient-LVSM and LVSM decoder-only).

Facts followed (see shared/reference/efficient-lvsm.md): no biases anywhere; LayerNorms
are non-affine for Efficient-LVSM (LVSM has a weight, no bias), eps 1e-5; QK-norm is an
RMSNorm over head_dim computed in float32 with a learned weight; exact (erf) GELU; no
positional embedding.

Attention has two code paths with the same numbers: ``F.scaled_dot_product_attention``
for the PyTorch reference, and an explicit ``MatMul -> Softmax -> MatMul`` (scale applied
to q before the first MatMul, softmax in float32) used when exporting to ONNX, because
TensorRT 10.3's ONNX parser has no Attention op and fuses this pattern instead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from viewrt.errors import ViewrtError

EPS = 1e-5


@dataclass(frozen=True)
class ViewTransformerConfig:
    """Sizes shared by both models; each model's config subclasses it with its defaults."""

    image_size: int = 256  # square input/target images, pixels
    patch_size: int = 8  # tokenizer patch, pixels
    d_model: int = 768  # token width D
    n_layers: int = 12  # blocks (Efficient-LVSM: encoder/decoder layer pairs)
    head_dim: int = 64  # Dh; heads = D / Dh
    mlp_mult: int = 4  # MLP hidden width = mlp_mult * D

    @property
    def n_heads(self) -> int:
        return self.d_model // self.head_dim

    @property
    def tokens_per_view(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def validate(self) -> None:
        if self.d_model % self.head_dim:
            raise ViewrtError(
                f"d_model {self.d_model} is not a multiple of head_dim {self.head_dim}"
            )
        if self.image_size % self.patch_size:
            raise ViewrtError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, explicit: bool = False
) -> torch.Tensor:
    """Softmax attention over the last two axes: q [..., Tq, Dh], k/v [..., Tk, Dh].

    ``explicit``: MatMul -> Softmax (fp32) -> MatMul instead of SDPA (same numbers), the
    form the ONNX graphs need; attention modules carry it as their ``explicit_attention``
    attribute, which the exporter sets (:func:`explicit_attention`)."""
    if not explicit:
        return F.scaled_dot_product_attention(q, k, v)
    q = q * (1.0 / math.sqrt(q.shape[-1]))
    scores = torch.matmul(q, k.transpose(-1, -2))  # [..., Tq, Tk]
    probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
    return torch.matmul(probs, v)  # [..., Tq, Dh]


class explicit_attention:
    """Context manager: every attention module of ``model`` runs MatMul -> Softmax ->
    MatMul (for ONNX export) inside the block, and its previous mode after it.

    The mode is a property of the modules (``explicit_attention`` attribute), never a
    process-wide flag, so another model in the same process is unaffected.
    """

    def __init__(self, model: nn.Module, enabled: bool = True):
        self.modules = [m for m in model.modules() if hasattr(m, "explicit_attention")]
        self.enabled = enabled

    def __enter__(self):
        self._prev = [m.explicit_attention for m in self.modules]
        for m in self.modules:
            m.explicit_attention = self.enabled
        return self

    def __exit__(self, *exc):
        for m, prev in zip(self.modules, self._prev):
            m.explicit_attention = prev


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """LayerNorm over the last axis in float32 (no bias; weight optional), cast back."""
    y = F.layer_norm(
        x.float(), (x.shape[-1],), None if weight is None else weight.float(), None, EPS
    )
    return y.to(x.dtype)


class LayerNorm(nn.Module):
    """LayerNorm without bias; ``affine=False`` has no parameters at all.

    ``out_dtype`` (default: the input's) is set by :func:`mixed_fp16`, where the residual
    stream is fp32 and the layer after the norm computes in fp16.
    """

    def __init__(self, dim: int, affine: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.out_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = layer_norm(x.float(), self.weight)  # fp32
        return y.to(self.out_dtype or x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the last axis, computed in float32 with a learned weight."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS) * self.weight.float()
        return y.to(x.dtype)


class MLP(nn.Module):
    """Linear(d, 4d) -> exact GELU -> Linear(4d, d), no biases (keys mlp.0, mlp.2)."""

    def __init__(self, dim: int, hidden_mult: int = 4):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden_mult * dim, bias=False),
            nn.GELU(approximate="none"),
            nn.Linear(hidden_mult * dim, dim, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def split_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[B, T, H*Dh] -> [B, T, H, Dh]."""
    return x.unflatten(-1, (-1, head_dim))


class SelfAttention(nn.Module):
    """Multi-head self-attention with QK RMSNorm (keys to_qkv, fc, q_norm, k_norm)."""

    def __init__(self, dim: int, head_dim: int):
        super().__init__()
        self.head_dim = head_dim
        self.explicit_attention = False  # set by the exporter (see explicit_attention)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.fc = nn.Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)  # 3 x [B, T, D]
        q = self.q_norm(split_heads(q, self.head_dim)).transpose(1, 2)  # [B, H, T, Dh]
        k = self.k_norm(split_heads(k, self.head_dim)).transpose(1, 2)  # [B, H, T, Dh]
        v = split_heads(v, self.head_dim).transpose(1, 2)  # [B, H, T, Dh]
        out = attention(q, k, v, self.explicit_attention).transpose(1, 2).flatten(2)  # [B, T, D]
        return self.fc(out)


class SelfAttentionBlock(nn.Module):
    """Pre-norm transformer block ``x += attn(LN(x)); x += mlp(LN(x))`` (keys norm1, attn,
    norm2, mlp; the norms have a weight only when ``affine_norm``)."""

    def __init__(self, dim: int, head_dim: int, mlp_mult: int, affine_norm: bool):
        super().__init__()
        self.norm1 = LayerNorm(dim, affine=affine_norm)
        self.attn = SelfAttention(dim, head_dim)
        self.norm2 = LayerNorm(dim, affine=affine_norm)
        self.mlp = MLP(dim, mlp_mult)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)*(W/p), p*p*C]; channel fastest, then pw, then ph."""
    _, c, h, w = x.shape
    x = x.reshape(-1, c, h // patch, patch, w // patch, patch)  # [B, C, hh, ph, ww, pw]
    x = x.permute(0, 2, 4, 3, 5, 1)  # [B, hh, ww, ph, pw, C]
    return x.reshape(-1, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(x: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """[B, (H/p)*(W/p), p*p*C] -> [B, C, H, W] (inverse of :func:`patchify`)."""
    c = x.shape[-1] // (patch * patch)
    x = x.reshape(-1, height // patch, width // patch, patch, patch, c)  # [B, hh, ww, ph, pw, C]
    x = x.permute(0, 5, 1, 3, 2, 4)  # [B, C, hh, ph, ww, pw]
    return x.reshape(-1, c, height, width)


class Patchify(nn.Module):
    """Parameter-free first stage of a tokenizer (index 0 of the upstream Sequential)."""

    def __init__(self, patch: int):
        super().__init__()
        self.patch = patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return patchify(x, self.patch)


def tokenizer(in_channels: int, patch: int, dim: int) -> nn.Sequential:
    """Patchify then Linear without bias: state-dict key ``<name>.1.weight`` [d, C*p*p]."""
    return nn.Sequential(Patchify(patch), nn.Linear(in_channels * patch * patch, dim, bias=False))


def image_head(dim: int, patch: int, affine_norm: bool) -> nn.Sequential:
    """LN -> Linear(d, 3*p*p) -> sigmoid (keys ``.1.weight``, and ``.0.weight`` if affine)."""
    return nn.Sequential(
        LayerNorm(dim, affine=affine_norm),
        nn.Linear(dim, 3 * patch * patch, bias=False),
        nn.Sigmoid(),
    )


def mixed_fp16(model: nn.Module) -> nn.Module:
    """Convert a model in place to the fp16 deployment precision: weights and matmuls in
    fp16; residual stream, LayerNorm, RMSNorm and softmax in fp32. The model must have a
    ``residual_dtype`` attribute that its forward applies to tokenizer outputs."""
    model.half()
    for m in model.modules():
        if isinstance(m, LayerNorm):
            m.out_dtype = torch.float16
    model.residual_dtype = torch.float32
    return model
