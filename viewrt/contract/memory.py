"""The one memory arithmetic: K/V bytes per view and attention scratch bytes. The
exporter, the TensorRT build estimate, the runtime's target splitting and the benchmark's
memory columns all use these formulas."""

from __future__ import annotations

import os


def kv_bytes_per_view(
    n_layers: int, tokens_per_view: int, n_heads: int, head_dim: int, itemsize: int
) -> int:
    """Bytes of cached K and V for one view over all layers:
    ``n_layers * 2 (K, V) * tokens_per_view * n_heads * head_dim * itemsize``."""
    return int(n_layers) * 2 * int(tokens_per_view) * int(n_heads) * int(head_dim) * int(itemsize)


def attention_scratch_bytes(
    targets: int, tokens_per_view: int, past_tokens: int, n_heads: int, itemsize: int = 4
) -> int:
    """Bytes of one decoder layer's materialized cross-attention: scores and probabilities
    (2 tensors) of ``targets * tokens_per_view`` queries by ``past_tokens`` keys by
    ``n_heads`` heads, fp32 by default (MatMul -> Softmax -> MatMul, unfused)."""
    return 2 * int(targets) * int(tokens_per_view) * int(past_tokens) * int(n_heads) * int(itemsize)


def targets_within(
    budget_bytes: float, tokens_per_view: int, past_tokens: int, n_heads: int, limit: int
) -> int:
    """Most targets per decoder call (1..limit) whose attention scratch fits the budget."""
    per_target = attention_scratch_bytes(1, tokens_per_view, past_tokens, n_heads)
    return int(max(1, min(limit, budget_bytes // max(1, per_target))))


def host_memory_bytes() -> int | None:
    """Physical memory of this machine in bytes (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None
