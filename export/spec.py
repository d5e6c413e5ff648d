"""Export specs, one per model family: the two graphs' tensors (names from the contract),
the torch modules that become the graphs, example inputs with their dynamic shapes,
validation cases, and the manifest header fields the family adds.

A new family is one class here (plus its models/ module and registry line). Every tensor
name comes from :mod:`viewrt.contract.names`; nothing here types one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from viewrt.contract import names as N
from viewrt.contract.manifest import GraphInfo, TensorInfo
from viewrt.errors import ViewrtError


@dataclass(frozen=True)
class GraphSpec:
    """Inputs and outputs of one graph, in graph order."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def to_dict(self) -> dict:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    def graph_info(self, file: str, sha256: str | None = None) -> GraphInfo:
        return GraphInfo(file, self.inputs, self.outputs, sha256)


class _EncoderGraph(torch.nn.Module):
    """view [1, 9, H, W] (fp32) -> present K/V per layer [1, T, H, Dh] (cache dtype)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.dtype = next(model.parameters()).dtype

    def forward(self, view):
        return tuple(t for kv in self.model.encode_view(view.to(self.dtype)) for t in kv)


class _DecoderGraph(torch.nn.Module):
    """target_rays [1, Vt, 6, H, W] (fp32), past K/V [1, N, H, Dh] -> images fp32."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.dtype = next(model.parameters()).dtype

    def forward(self, target_rays, *past):
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        return self.model.render(target_rays.to(self.dtype), pairs).float()


class EfficientLVSMSpec:
    """Efficient-LVSM: a per-view encoder (view -> per-layer K/V) and a cache-consuming
    decoder (target rays + per-layer past K/V -> images)."""

    family = "efficient-lvsm"
    max_targets = 8  # most targets per decoder call the runtime makes

    def encoder_spec(self, cfg, kv_dtype: str) -> GraphSpec:
        """Encoder: one view in, every layer's K and V for its T tokens out."""
        s, kv_shape = cfg.image_size, (1, cfg.tokens_per_view, cfg.n_heads, cfg.head_dim)
        return GraphSpec(
            inputs=(TensorInfo(N.VIEW, "float32", (1, 9, s, s), "B,C,H,W"),),
            outputs=tuple(
                TensorInfo(n, kv_dtype, kv_shape, N.KV_LAYOUT)
                for n in N.kv_names("present", cfg.n_layers)
            ),
        )

    def decoder_spec(self, cfg, kv_dtype: str) -> GraphSpec:
        """Decoder: target rays and all cached K/V in, rendered images out."""
        s = cfg.image_size
        kv_shape = (1, N.PAST_TOKENS, cfg.n_heads, cfg.head_dim)
        return GraphSpec(
            inputs=(TensorInfo(N.TARGET_RAYS, "float32", (1, N.NUM_TARGETS, 6, s, s), "B,V,C,H,W"),)
            + tuple(
                TensorInfo(n, kv_dtype, kv_shape, N.KV_LAYOUT)
                for n in N.kv_names("past", cfg.n_layers)
            ),
            outputs=(TensorInfo(N.IMAGES, "float32", (1, N.NUM_TARGETS, 3, s, s), "B,V,C,H,W"),),
        )

    def modules(self, model) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(encoder module, decoder module) whose forward is each graph."""
        return _EncoderGraph(model).eval(), _DecoderGraph(model).eval()

    def example_inputs(self, cfg, max_views: int, dtype: torch.dtype):
        """Example inputs of both graphs and the decoder's dynamic shapes for torch.export.

        Returns: (encoder args, decoder args, decoder dynamic_shapes).
        """
        T, s = cfg.tokens_per_view, cfg.image_size
        cap = max(
            2, max_views
        )  # views the past_tokens axis admits (a dynamic axis needs a range of >= 2)
        example_views = min(3, cap)  # inside that range, and not 1 (torch.export specializes 1)
        past = [
            torch.randn(1, example_views * T, cfg.n_heads, cfg.head_dim, dtype=dtype)
            for _ in range(2 * cfg.n_layers)
        ]
        nt = torch.export.Dim(N.NUM_TARGETS, min=1, max=64)
        pt = torch.export.Dim(N.PAST_TOKENS, min=1, max=cap * T)
        dynamic = {"target_rays": {1: nt}, "past": tuple({1: pt} for _ in past)}
        return (torch.rand(1, 9, s, s),), (torch.rand(1, 2, 6, s, s), *past), dynamic

    @staticmethod
    def decoder_cases(max_views: int) -> list[tuple[int, int]]:
        """(cached views, targets) pairs validated after export: 1 view, a few, max."""
        few = min(3, max_views)
        return sorted({(1, 1), (few, 3), (max_views, 2)})

    def header(self, cfg) -> dict:
        """Manifest header fields of this family."""
        return {
            "image_size": cfg.image_size,
            "patch_size": cfg.patch_size,
            "tokens_per_view": cfg.tokens_per_view,
            "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads,
            "head_dim": cfg.head_dim,
            "d_model": cfg.d_model,
            "max_targets": self.max_targets,
            "cameras": {
                "convention": "OpenCV c2w (x right, y down, z forward), fxfycxcy in pixels",
                "input_channels": "[2*rgb-1, o x d, d]",
                "target_channels": "[o x d, d]",
            },
        }

    @staticmethod
    def torch_encoder(model):
        """fn(view [V, 9, S, S]) -> [K0, V0, K1, ...] each [V, T, H, Dh]: the reference."""
        return lambda view: [t for kv in model.encode_view(view) for t in kv]

    @staticmethod
    def torch_decoder(model, past_names: list[str]):
        """fn(target_rays, **past) -> [images]: the reference, K/V paired by name."""

        def fn(target_rays, **kv):
            pairs = [
                (kv[N.kv_name("past", "key", i)].float(), kv[N.kv_name("past", "value", i)].float())
                for i in range(model.cfg.n_layers)
            ]
            return [model.render(target_rays, pairs)]

        return fn


EXPORT_SPECS = {s.family: s for s in (EfficientLVSMSpec(),)}


def spec_for(family: str):
    """The export spec of a family. Raises ViewrtError when the family has none."""
    if family not in EXPORT_SPECS:
        raise ViewrtError(
            f"model family {family!r} has no export spec (exportable: {', '.join(EXPORT_SPECS)})"
        )
    return EXPORT_SPECS[family]
