"""The model families: one row per family holding its config class, presets, model class,
checkpoint key signature and FLOP counter. ``build_model``, config inference,
``load_checkpoint``, export and the benchmark loop over it, so a new family is one
models/ module, one export spec (export/spec.py) and one line here, beside the
family's contract declaration (viewrt/contract/families/, docs/extending.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import viewrt.models.efficient_lvsm as efficient_lvsm
import viewrt.models.gct_stream as gct_stream
import viewrt.models.lvsm as lvsm
from viewrt.errors import ViewrtError


@dataclass(frozen=True)
class Family:
    """A model family.

    Attributes:
        name: the manifest's ``family`` value, e.g. ``efficient-lvsm``.
        config_cls: its dataclass config.
        presets: named configs.
        model_cls: the torch module (``model_cls(cfg)``).
        tokenizer_key: the state-dict key that identifies the family; its weight is
            ``[d_model, in_channels * patch^2]``.
        in_channels: channels of one posed input view (9: rgb + Plücker rays).
        blocks_prefix: prefix of the numbered blocks whose count is ``n_layers``.
        q_norm_key: a q_norm weight key, whose length is ``head_dim``.
        count_flops: ``count_flops(cfg, n_views, n_targets)``.
        cached: True when the family keeps a per-view K/V cache (exportable by viewrt);
            False for full-recompute baselines used by the benchmark.
    """

    name: str
    config_cls: type
    presets: dict
    model_cls: type
    tokenizer_key: str
    in_channels: int
    blocks_prefix: str
    q_norm_key: str
    count_flops: Callable
    cached: bool


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "efficient-lvsm",
            efficient_lvsm.EfficientLVSMConfig,
            efficient_lvsm.PRESETS,
            efficient_lvsm.EfficientLVSM,
            "rgbp_tokenizer.1.weight",
            9,
            "input_self_attn_blocks",
            "input_self_attn_blocks.0.attn.q_norm.weight",
            efficient_lvsm.count_flops,
            cached=True,
        ),
        Family(
            "lvsm",
            lvsm.LVSMConfig,
            lvsm.LVSM_PRESETS,
            lvsm.LVSMDecoderOnly,
            "image_tokenizer.1.weight",
            9,
            "transformer_blocks",
            "transformer_blocks.0.attn.q_norm.weight",
            lvsm.count_flops,
            cached=False,
        ),
        Family(
            "gct-stream",
            gct_stream.GCTStreamConfig,
            gct_stream.PRESETS,
            gct_stream.GCTStream,
            "patch_embed.weight",
            3,
            "global_blocks",
            "global_blocks.0.attn.q_norm.weight",
            gct_stream.count_flops,  # count_flops(cfg, frames_cached, n_frames=1)
            cached=True,
        ),
    )
}


def all_presets(cached: bool | None = None) -> list[str]:
    """Every preset name (only those of cached families, or of baselines, if asked)."""
    return [p for f in FAMILIES.values() if cached is None or f.cached == cached for p in f.presets]


def find_preset(name: str, cached: bool | None = None) -> tuple[Family, object]:
    """``(family, config)`` of a preset name.

    Raises: ViewrtError for an unknown name, listing the known ones (and saying when the
        preset is a benchmark baseline that export refuses).
    """
    for f in FAMILIES.values():
        if name in f.presets:
            if cached is not None and f.cached != cached:
                raise ViewrtError(
                    f"preset {name!r} is a {f.name} full-recompute baseline for `viewrt bench`; "
                    f"it has no K/V cache to export (expected one of {', '.join(all_presets(cached))})"
                )
            return f, f.presets[name]
    raise ViewrtError(f"unknown preset {name!r}; expected one of {', '.join(all_presets(cached))}")


def family_of_config(cfg) -> Family:
    for f in FAMILIES.values():
        if type(cfg) is f.config_cls:
            return f
    raise ViewrtError(f"no model family has config type {type(cfg).__name__}")


def family_of_state_dict(sd: dict, path="checkpoint") -> Family:
    """The family whose tokenizer key the state dict holds.

    Raises: ViewrtError naming the keys looked for.
    """
    for f in FAMILIES.values():
        if f.tokenizer_key in sd:
            return f
    keys = " or ".join(f"{f.tokenizer_key!r} ({f.name})" for f in FAMILIES.values())
    raise ViewrtError(f"checkpoint {path}: none of {keys} found; not a known model")
