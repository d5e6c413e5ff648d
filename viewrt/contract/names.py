"""Names both sides of the export -> runtime contract use: tensors, dynamic dimensions,
files. Every K/V tensor name comes from :func:`kv_name`; nothing else types one."""

from __future__ import annotations

import re

VIEW = "view"  # encoder input: one posed view [1, 9, H, W]
TARGET_RAYS = "target_rays"  # decoder input: [1, num_targets, 6, H, W]
IMAGES = "images"  # decoder output: [1, num_targets, 3, H, W]

# gct-stream (a streaming causal model): step and prefill graphs
FRAME = "frame"  # step input: one frame [1, 3, S, S] RGB in [0, 1]
FRAMES = "frames"  # prefill input: the scale frames [frames, 3, S, S]
POSITION = "position"  # step input: the frame's absolute index, int64 [1]
IS_FIRST = "is_first"  # step input: 1.0 for frame 0 (special-token variant), float32 [1]
IS_SCALE = "is_scale"  # step input: 1.0 for a scale frame (scale-token variant), float32 [1]
RETAINED_FRAMES = "retained_frames"  # step input: evicted frames whose tokens are read, int64 [1]
POSE_ENC = "pose_enc"  # output: [frames, 9] translation 3, quaternion (x, y, z, w) 4, FoV 2
DEPTH = "depth"  # output: [frames, S, S], exp
DEPTH_CONF = "depth_conf"  # output: [frames, S, S], 1 + exp

# Dynamic dimensions (their ONNX dim_param names).
NUM_TARGETS = "num_targets"  # target views rendered by one decoder call
PAST_TOKENS = "past_tokens"  # cached tokens the reader reads: entries x tokens per entry
NUM_FRAMES = "frames"  # frames of one prefill call
RETAINED_TOKENS = "retained_tokens"  # retained tokens bound (a whole number of frames' worth)
CAMERA_TOKENS = "camera_tokens"  # camera-head cache tokens read (one per committed frame)
DYNAMIC_DIMS = (NUM_TARGETS, PAST_TOKENS, NUM_FRAMES, RETAINED_TOKENS, CAMERA_TOKENS)

KV_LAYOUT = "B,T,heads,head_dim"
# present: the writer graph's output for one cache entry; past: the reader's input over the
# cached entries; retained: a reader input over tokens a token-window memory keeps from
# evicted entries (e.g. a streaming model's special tokens); camera_present / camera_past: a
# second, append-only cache of one token per frame (gct-stream's camera head), never evicted.
ROLES = ("present", "past", "retained", "camera_present", "camera_past")
KINDS = ("key", "value")

# Files of an export folder.
MANIFEST_FILE = "manifest.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
ENGINE_FILES = {"encoder": "encoder.engine", "decoder": "decoder.engine"}
GRAPHS = ("encoder", "decoder")

_KV = re.compile(r"^(present|past|retained|camera_present|camera_past)_(key|value)\.(\d+)$")
# writer output role <-> reader input role
_PAIRS = {
    "present": "past",
    "past": "present",
    "camera_present": "camera_past",
    "camera_past": "camera_present",
}


def kv_name(role: str, kind: str, layer: int) -> str:
    """The one function that names cache tensors.

    Args:
        role: "present" (writer output, one entry), "past" (reader input, all entries),
            "retained" (reader input, tokens kept from evicted entries), "camera_present" /
            "camera_past" (a second cache's writer output / reader input).
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
    ``present_key.3`` <-> ``past_key.3``, ``camera_present_key.0`` <-> ``camera_past_key.0``
    (paired by layer and kind, never by position).

    Raises: ValueError when ``name`` is not a cache tensor name.
    """
    parsed = parse_kv_name(name)
    if parsed is None:
        raise ValueError(f"{name!r} is not a K/V cache tensor name")
    role, kind, layer = parsed
    if role not in _PAIRS:
        raise ValueError(f"{name!r} is a {role} tensor; only present/past pairs exist")
    return kv_name(_PAIRS[role], kind, layer)
