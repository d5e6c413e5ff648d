"""Efficient-LVSM's side of the contract: a per-view encoder that writes every layer's
cross-attention K/V for one view, and a decoder that reads all cached views' K/V and
renders target views. Its cache is position-free (cross-attention has no positional
terms), so it is kept as view slots.

Facts from the Efficient-LVSM paper and code (../shared/reference/efficient-lvsm.md): views
are patchified into ``(image_size / patch_size)**2`` tokens; the decoder cross-attends to
the K/V of every input view, layer by layer.
"""

from __future__ import annotations

import viewrt.contract.names as N
from viewrt.contract.family import VIEW_SLOTS, CacheGeometry, FamilyContract, GraphDecl, kv_tensors
from viewrt.contract.tensors import GraphSignature, TensorInfo

ENCODER = GraphDecl("encoder", N.ENCODER_FILE, "one posed view in, its K/V for every layer out")
DECODER = GraphDecl("decoder", N.DECODER_FILE, "target rays and all cached K/V in, images out")


class EfficientLVSMContract(FamilyContract):
    """Header: image_size, patch_size, tokens_per_view, n_layers, n_heads, head_dim,
    d_model, max_views (cache capacity in views), max_targets (targets per decoder call the
    runtime makes), opset."""

    name = "efficient-lvsm"
    memory = VIEW_SLOTS
    capacity_field = "max_views"
    header_ints = {
        "image_size": 1,
        "patch_size": 1,
        "tokens_per_view": 1,
        "n_layers": 1,
        "n_heads": 1,
        "head_dim": 1,
        "d_model": 1,
        "max_views": 1,
        "max_targets": 1,
    }
    graphs = (ENCODER, DECODER)

    def signatures(self, header: dict, kv_dtype: str) -> dict[str, GraphSignature]:
        S, T = header["image_size"], header["tokens_per_view"]
        H, Dh, L = header["n_heads"], header["head_dim"], header["n_layers"]
        targets = (1, N.NUM_TARGETS)
        return {
            "encoder": GraphSignature(
                inputs=(TensorInfo(N.VIEW, "float32", (1, 9, S, S), "B,C,H,W"),),
                outputs=kv_tensors("present", L, kv_dtype, (1, T, H, Dh)),
            ),
            "decoder": GraphSignature(
                inputs=(TensorInfo(N.TARGET_RAYS, "float32", (*targets, 6, S, S), "B,V,C,H,W"),)
                + kv_tensors("past", L, kv_dtype, (1, N.PAST_TOKENS, H, Dh)),
                outputs=(TensorInfo(N.IMAGES, "float32", (*targets, 3, S, S), "B,V,C,H,W"),),
            ),
        }

    def cache(self, header: dict) -> CacheGeometry:
        return CacheGeometry(
            memory=VIEW_SLOTS,
            entry="view",
            tokens_per_entry=header["tokens_per_view"],
            capacity=header["max_views"],
            n_layers=header["n_layers"],
            n_heads=header["n_heads"],
            head_dim=header["head_dim"],
            writer=ENCODER.name,
            reader=DECODER.name,
            dim=N.PAST_TOKENS,
        )

    def dim_limits(self, header: dict) -> dict[str, tuple[int, int]]:
        return {N.NUM_TARGETS: (1, header["max_targets"])}

    def check_header(self, header: dict) -> list[str]:
        h = header
        problems = []
        if h["d_model"] != h["n_heads"] * h["head_dim"]:
            problems.append(
                f"d_model {h['d_model']} != n_heads {h['n_heads']} x head_dim {h['head_dim']}"
            )
        S, P = h["image_size"], h["patch_size"]
        if S % P or (S // P) ** 2 != h["tokens_per_view"]:
            problems.append(
                f"tokens_per_view {h['tokens_per_view']} does not match image_size {S} and "
                f"patch_size {P} (expected {(S // P) ** 2})"
            )
        return problems
