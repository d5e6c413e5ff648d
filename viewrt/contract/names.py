"""Names both sides of the export -> runtime contract use: tensors, dynamic dimensions,
files. Every K/V tensor name comes from :func:`kv_name`; nothing else types one."""

from __future__ import annotations

import re

VIEW = "view"  # encoder input: one posed view [1, 9, H, W]
TARGET_RAYS = "target_rays"  # decoder input: [1, num_targets, 6, H, W]
IMAGES = "images"  # decoder output: [1, num_targets, 3, H, W]

# Dynamic dimensions (their ONNX dim_param names).
NUM_TARGETS = "num_targets"  # target views rendered by one decoder call
PAST_TOKENS = "past_tokens"  # cached tokens the decoder reads: views x tokens_per_view
DYNAMIC_DIMS = (NUM_TARGETS, PAST_TOKENS)

KV_LAYOUT = "B,T,heads,head_dim"
# present: the writer graph's output for one cache entry; past: the reader's input over the
# cached entries; retained: a reader input over tokens a token-window memory keeps from
# evicted entries (e.g. a streaming model's special tokens).
ROLES = ("present", "past", "retained")
KINDS = ("key", "value")

# Files of an export folder.
MANIFEST_FILE = "manifest.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
ENGINE_FILES = {"encoder": "encoder.engine", "decoder": "decoder.engine"}
GRAPHS = ("encoder", "decoder")

_KV = re.compile(r"^(present|past|retained)_(key|value)\.(\d+)$")


def kv_name(role: str, kind: str, layer: int) -> str:
    """The one function that names cache tensors.

    Args:
        role: "present" (writer output, one entry), "past" (reader input, all entries) or
            "retained" (reader input, tokens kept from evicted entries).
        kind: "key" or "value".
        layer: layer index (>= 0).
    Returns: e.g. ``present_key.3`` or ``past_value.0``.
    Raises: ValueError for an unknown role or kind.
    """
    if role not in ROLES or kind not in KINDS or int(layer) < 0:
        raise ValueError(f"bad kv tensor role/kind/layer: {role}/{kind}/{layer}")
    return f"{role}_{kind}.{int(layer)}"


def kv_names(role: str, n_layers: int) -> list[str]:
    """``[key.0, value.0, key.1, value.1, ...]`` for one role, in graph order."""
    return [kv_name(role, kind, i) for i in range(n_layers) for kind in KINDS]


def parse_kv_name(name: str) -> tuple[str, str, int] | None:
    """``(role, kind, layer)`` of a cache tensor name, or None for any other name."""
    m = _KV.match(name)
    return (m.group(1), m.group(2), int(m.group(3))) if m else None


def paired_name(name: str) -> str:
    """The decoder input that reads what encoder output ``name`` writes, or back:
    ``present_key.3`` <-> ``past_key.3`` (paired by layer and kind, never by position).

    Raises: ValueError when ``name`` is not a cache tensor name.
    """
    parsed = parse_kv_name(name)
    if parsed is None:
        raise ValueError(f"{name!r} is not a K/V cache tensor name")
    role, kind, layer = parsed
    return kv_name("past" if role == "present" else "present", kind, layer)
