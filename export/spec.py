"""Export specs, one per model family: the torch modules that become the family's graphs,
the manifest header values taken from a model config, validation cases and the torch
reference functions. The graphs' tensors (names, dtypes, dims, dynamic axes) and the dummy
inputs' shapes come from the family's contract (:mod:`viewrt.contract.families`); nothing
here types a tensor or dimension name.

A new family is one spec class here (or in its own module) plus one entry in
:data:`EXPORT_SPECS`.
"""

from __future__ import annotations

from pathlib import Path

import torch

import viewrt.contract.names as N
from viewrt.contract.families import family_contract
from viewrt.contract.tensors import GraphSignature, TensorInfo
from viewrt.errors import ViewrtError
from viewrt.export import ort_mha
from viewrt.export.gct_stream_spec import GCTStreamSpec
from viewrt.export.validate import validate_numbers


def get_precision_kv(dtype: torch.dtype) -> str:
    """The numpy name of a torch cache dtype (float32, float16)."""
    return str(dtype).removeprefix("torch.")


GraphSpec = GraphSignature  # a graph's inputs and outputs, as the family's contract declares


def _dummy(t: TensorInfo, sizes: dict[str, int], dtype: torch.dtype) -> torch.Tensor:
    """A random tensor of ``t``'s shape (dynamic dims at ``sizes``); cache tensors in
    ``dtype``, other float inputs in fp32 (what the graphs take)."""
    shape = [sizes[d] if isinstance(d, str) else d for d in t.shape]
    is_kv = N.parse_kv_name(t.name) is not None
    return torch.randn(*shape, dtype=dtype) if is_kv else torch.rand(*shape)


def _dims(t: TensorInfo, bounds: dict[str, tuple[int, int]]) -> dict:
    """torch.export dynamic dims of ``t``: ``{axis: Dim(name, min, max)}``."""
    return {
        i: torch.export.Dim(d, min=bounds[d][0], max=bounds[d][1])
        for i, d in t.dynamic_axes.items()
    }


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
    decoder (target rays + per-layer past K/V -> images). Graph signatures come from the
    family's contract (:mod:`viewrt.contract.families.efficient_lvsm`)."""

    family = "efficient-lvsm"
    max_targets = 8  # most targets per decoder call the runtime makes

    @property
    def contract(self):
        return family_contract(self.family)

    def header(self, cfg, max_views: int) -> dict:
        """The manifest header fields the contract declares for this family."""
        return {
            "image_size": cfg.image_size,
            "patch_size": cfg.patch_size,
            "tokens_per_view": cfg.tokens_per_view,
            "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads,
            "head_dim": cfg.head_dim,
            "d_model": cfg.d_model,
            "max_views": max_views,
            "max_targets": self.max_targets,
        }

    def records(self, cfg, checkpoint=None) -> dict:
        """Manifest records of this family beyond the header (the camera convention)."""
        return {
            "cameras": {
                "convention": "OpenCV c2w (x right, y down, z forward), fxfycxcy in pixels",
                "input_channels": "[2*rgb-1, o x d, d]",
                "target_channels": "[o x d, d]",
            }
        }

    def signatures(self, cfg, max_views: int, kv_dtype: str) -> dict[str, GraphSignature]:
        """Each graph's tensors, from the contract."""
        return self.contract.signatures(self.header(cfg, max_views), kv_dtype)

    def modules(self, model) -> dict[str, torch.nn.Module]:
        """``{graph: module}`` whose forward is each graph."""
        return {"encoder": _EncoderGraph(model).eval(), "decoder": _DecoderGraph(model).eval()}

    def example_inputs(self, cfg, max_views: int, dtype: torch.dtype) -> dict[str, tuple]:
        """``{graph: (args, dynamic_shapes)}`` for torch.export, built from the contract's
        signatures: dynamic dims at the contract's example sizes, bounded by its ranges
        (targets up to 64 whatever the runtime's limit, so a graph serves larger calls).
        """
        header = self.header(cfg, max_views)
        contract = self.contract
        sigs = contract.signatures(header, get_precision_kv(dtype))
        sizes = contract.example_sizes(header)
        geo = contract.cache(header)
        bounds = {d: (1, max(hi, 64)) for d, (_, hi) in contract.dim_limits(header).items()}
        bounds[geo.dim] = (1, max(2, geo.capacity) * geo.tokens_per_entry)
        out = {}
        for g, sig in sigs.items():
            args = tuple(_dummy(t, sizes, dtype) for t in sig.inputs)
            dyn = [_dims(t, bounds) for t in sig.inputs]
            # the modules take (first input, *cache inputs): torch.export wants that structure
            shapes = None if not any(dyn) else {sig.inputs[0].name: dyn[0], "past": tuple(dyn[1:])}
            out[g] = (args, shapes)
        return out

    def write_variants(self, folder: Path, record, max_views: int) -> dict:
        """Backend-specific graph variants written next to the graphs, validated against
        them: for fp32 exports, the decoder with ONNX Runtime's fused MultiHeadAttention
        (CPU flash attention; export/ort_mha.py). Returns the manifest's ``variants``."""
        if record.precision != "fp32":
            return {}
        decoder = folder / record.graphs["decoder"].file
        ort_mha.write_mha_decoder(
            decoder, folder / ort_mha.FILE, record.n_layers, record.n_heads, record.head_dim
        )
        check = ort_mha.validate_variant(
            decoder,
            folder / ort_mha.FILE,
            record,
            record.validation["seed"],
            self.decoder_cases(max_views),
            record.precision_row.atol_images,
        )
        op = "com.microsoft.MultiHeadAttention"
        return {"decoder": {ort_mha.VARIANT: {"file": ort_mha.FILE, "op": op, "validation": check}}}

    def validate(self, model, folder: Path, record, max_views: int, seed) -> dict:
        """Parity of the written graphs against PyTorch on fresh random inputs
        (export/validate.py): the manifest's ``validation`` record. Raises ViewrtError."""
        return validate_numbers(model, folder, record, self, self.decoder_cases(max_views), seed)

    @staticmethod
    def decoder_cases(max_views: int) -> list[tuple[int, int]]:
        """(cached views, targets) pairs validated after export: 1 view, a few, max."""
        few = min(3, max_views)
        return sorted({(1, 1), (few, 3), (max_views, 2)})

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


EXPORT_SPECS = {s.family: s for s in (EfficientLVSMSpec(), GCTStreamSpec())}


def spec_for(family: str):
    """The export spec of a family. Raises ViewrtError when the family has none."""
    if family not in EXPORT_SPECS:
        raise ViewrtError(
            f"model family {family!r} has no export spec (exportable: {', '.join(EXPORT_SPECS)})"
        )
    return EXPORT_SPECS[family]
