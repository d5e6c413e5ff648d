"""The export spec of each graph: tensor names, dtypes, shapes, layouts, dynamic axes.

Every tensor name in the project comes from :func:`kv_name` and the constants here; the
manifest records them and the runtime reads them from the manifest, so no other code types
a name. Dynamic dimensions are strings (their ONNX ``dim_param``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

VIEW = "view"  # encoder input: one posed view [1, 9, H, W]
TARGET_RAYS = "target_rays"  # decoder input: [1, num_targets, 6, H, W]
IMAGES = "images"  # decoder output: [1, num_targets, 3, H, W]
NUM_TARGETS = "num_targets"
PAST_TOKENS = "past_tokens"
KV_LAYOUT = "B,T,heads,head_dim"

DTYPES = {"fp32": "float32", "fp16": "float16"}
ITEMSIZE = {"float32": 4, "float16": 2}


def kv_name(role: str, kind: str, layer: int) -> str:
    """The one function that names cache tensors.

    Args:
        role: "present" (encoder output, one view) or "past" (decoder input, all views).
        kind: "key" or "value".
        layer: layer index.
    Returns: e.g. ``present_key.3`` or ``past_value.0``.
    """
    if role not in ("present", "past") or kind not in ("key", "value"):
        raise ValueError(f"bad kv tensor role/kind: {role}/{kind}")
    return f"{role}_{kind}.{layer}"


def kv_names(role: str, n_layers: int) -> list[str]:
    """[key.0, value.0, key.1, value.1, ...] for one role, in graph order."""
    return [kv_name(role, kind, i) for i in range(n_layers) for kind in ("key", "value")]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple  # ints, or str for a dynamic dimension
    layout: str

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["dynamic_axes"] = {str(k): v for k, v in self.dynamic_axes.items()}
        return d


@dataclass(frozen=True)
class GraphSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}


def encoder_spec(cfg, kv_dtype: str) -> GraphSpec:
    """Encoder: one view in, every layer's K and V for its T tokens out."""
    s, kv_shape = cfg.image_size, (1, cfg.tokens_per_view, cfg.n_heads, cfg.head_dim)
    return GraphSpec(
        inputs=(TensorSpec(VIEW, "float32", (1, 9, s, s), "B,C,H,W"),),
        outputs=tuple(TensorSpec(n, kv_dtype, kv_shape, KV_LAYOUT) for n in kv_names("present", cfg.n_layers)),
    )


def decoder_spec(cfg, kv_dtype: str) -> GraphSpec:
    """Decoder: target rays and all cached K/V in, rendered images out."""
    s = cfg.image_size
    kv_shape = (1, PAST_TOKENS, cfg.n_heads, cfg.head_dim)
    return GraphSpec(
        inputs=(TensorSpec(TARGET_RAYS, "float32", (1, NUM_TARGETS, 6, s, s), "B,V,C,H,W"),)
        + tuple(TensorSpec(n, kv_dtype, kv_shape, KV_LAYOUT) for n in kv_names("past", cfg.n_layers)),
        outputs=(TensorSpec(IMAGES, "float32", (1, NUM_TARGETS, 3, s, s), "B,V,C,H,W"),),
    )
