"""gct-stream's side of the contract: a streaming causal geometry transformer (GCTStream,
lingbot-map) run frame by frame over a token window of cached K/V.

Graphs (facts: ../shared/reference/gct-stream.md):

- ``prefill``: the first frames (the scale frames, 1..``scale_frames``) together,
  bidirectional among themselves: ``frames [F, 3, S, S]`` in; every global layer's K/V of
  those frames ``present_* [F, T, heads, head_dim]`` (frame-major: the same bytes as
  ``[1, F*T, ...]``, written in place into the first F cache slots), the camera head's
  ``camera_present_* [F, 1, heads, head_dim]`` and the predictions out.
- ``step``: one frame at an absolute position: ``frame [1, 3, S, S]``, ``position``
  (int64, its absolute index: the temporal RoPE is computed from it in the graph),
  ``is_first`` / ``is_scale`` (float flags choosing the special tokens' variants),
  ``retained_frames`` (int64: how many evicted frames' special tokens the ``retained_*``
  inputs hold; the graph masks the rest, so the retained prefix is never empty), per
  global layer ``past_*`` (the window's full frames, a dynamic-length prefix),
  ``retained_*`` (special tokens of evicted frames) and per camera layer ``camera_past_*``
  (one token per committed frame) in; the frame's own ``present_*`` and
  ``camera_present_*`` K/V and its predictions (``pose_enc [1, 9]``, ``depth`` and
  ``depth_conf [1, S, S]``) out.

Two caches: the token window (:meth:`GCTStreamContract.cache`: frames of ``T`` tokens at
absolute positions, evicted frames keeping their ``special_tokens`` first tokens) and the
camera head's cache (:meth:`GCTStreamContract.side_caches`: one token per frame, never
evicted, ``max_positions`` entries).
"""

from __future__ import annotations

import viewrt.contract.names as N
from viewrt.contract.family import (
    TOKEN_WINDOW,
    CacheGeometry,
    FamilyContract,
    GraphDecl,
    kv_tensors,
)
from viewrt.contract.tensors import GraphSignature, TensorInfo

PREFILL = GraphDecl("prefill", "prefill.onnx", "the scale frames together, their K/V out")
STEP = GraphDecl("step", "step.onnx", "one frame and the cached K/V in, its K/V out")
CAMERA = "camera"  # the side cache's name


class GCTStreamContract(FamilyContract):
    """Header: image_size, patch_size, tokens_per_frame, special_tokens (kept by evicted
    frames), n_layers (global, cached), n_heads, head_dim, embed_dim, camera_layers
    (camera-head layers that cache), max_frames (full frames the step reads at most: pinned
    + window - 1), max_positions (absolute positions: the model's max_frame_num),
    scale_frames (most frames one prefill takes; the default pinned frames)."""

    name = "gct-stream"
    memory = TOKEN_WINDOW
    capacity_field = "max_frames"
    header_ints = {
        "image_size": 1,
        "patch_size": 1,
        "tokens_per_frame": 1,
        "special_tokens": 1,
        "n_layers": 1,
        "n_heads": 1,
        "head_dim": 2,
        "embed_dim": 1,
        "camera_layers": 1,
        "max_frames": 1,
        "max_positions": 2,
        "scale_frames": 1,
    }
    graphs = (PREFILL, STEP)

    def signatures(self, header: dict, kv_dtype: str) -> dict[str, GraphSignature]:
        h = header
        S, T, H, Dh = h["image_size"], h["tokens_per_frame"], h["n_heads"], h["head_dim"]
        L, Lc, Fd = h["n_layers"], h["camera_layers"], N.NUM_FRAMES
        f32 = lambda name, shape, layout="": TensorInfo(name, "float32", shape, layout)  # noqa: E731
        i64 = lambda name: TensorInfo(name, "int64", (1,))  # noqa: E731
        framewise = "F,T,heads,head_dim"
        prefill_kv = tuple(
            TensorInfo(n, kv_dtype, (Fd, T, H, Dh), framewise) for n in N.kv_names("present", L)
        ) + tuple(
            TensorInfo(n, kv_dtype, (Fd, 1, H, Dh), framewise)
            for n in N.kv_names("camera_present", Lc)
        )
        preds = lambda F: (  # noqa: E731
            f32(N.POSE_ENC, (F, 9), "F,pose"),
            f32(N.DEPTH, (F, S, S), "F,H,W"),
            f32(N.DEPTH_CONF, (F, S, S), "F,H,W"),
        )
        return {
            "prefill": GraphSignature(
                inputs=(f32(N.FRAMES, (Fd, 3, S, S), "F,C,H,W"),), outputs=prefill_kv + preds(Fd)
            ),
            "step": GraphSignature(
                inputs=(
                    f32(N.FRAME, (1, 3, S, S), "F,C,H,W"),
                    i64(N.POSITION),
                    f32(N.IS_FIRST, (1,)),
                    f32(N.IS_SCALE, (1,)),
                    i64(N.RETAINED_FRAMES),
                )
                + kv_tensors("past", L, kv_dtype, (1, N.PAST_TOKENS, H, Dh))
                + kv_tensors("retained", L, kv_dtype, (1, N.RETAINED_TOKENS, H, Dh))
                + kv_tensors("camera_past", Lc, kv_dtype, (1, N.CAMERA_TOKENS, H, Dh)),
                outputs=kv_tensors("present", L, kv_dtype, (1, T, H, Dh))
                + kv_tensors("camera_present", Lc, kv_dtype, (1, 1, H, Dh))
                + preds(1),
            ),
        }

    def cache(self, header: dict) -> CacheGeometry:
        return CacheGeometry(
            memory=TOKEN_WINDOW,
            entry="frame",
            tokens_per_entry=header["tokens_per_frame"],
            capacity=header["max_frames"],
            n_layers=header["n_layers"],
            n_heads=header["n_heads"],
            head_dim=header["head_dim"],
            writer=STEP.name,
            reader=STEP.name,
            dim=N.PAST_TOKENS,
            retain_tokens=header["special_tokens"],
            max_positions=header["max_positions"],
        )

    def side_caches(self, header: dict) -> dict[str, CacheGeometry]:
        """The camera head's cache: one token per committed frame per camera layer, never
        evicted (append-only, ``max_positions`` entries), read by ``camera_past_*``."""
        return {
            CAMERA: CacheGeometry(
                memory=TOKEN_WINDOW,
                entry="frame",
                tokens_per_entry=1,
                capacity=header["max_positions"],
                n_layers=header["camera_layers"],
                n_heads=header["n_heads"],
                head_dim=header["head_dim"],
                writer=STEP.name,
                reader=STEP.name,
                dim=N.CAMERA_TOKENS,
                max_positions=header["max_positions"],
            )
        }

    def dim_limits(self, header: dict) -> dict[str, tuple[int, int]]:
        R, M = header["special_tokens"], header["max_positions"]
        return {
            N.NUM_FRAMES: (1, header["scale_frames"]),
            N.RETAINED_TOKENS: (R, M * R),
            N.CAMERA_TOKENS: (1, M),
        }

    def example_sizes(self, header: dict) -> dict[str, int]:
        """Dummy export sizes: 3 full frames, 2 retained frames, 3 camera tokens, 2 frames
        per prefill (never 1: torch.export specializes a dimension seen as 1)."""
        T, R = header["tokens_per_frame"], header["special_tokens"]
        return {N.PAST_TOKENS: 3 * T, N.RETAINED_TOKENS: 2 * R, N.CAMERA_TOKENS: 3, N.NUM_FRAMES: 2}

    def check_header(self, header: dict) -> list[str]:
        h, problems = header, []
        if h["embed_dim"] != h["n_heads"] * h["head_dim"]:
            problems.append(
                f"embed_dim {h['embed_dim']} != n_heads {h['n_heads']} x head_dim {h['head_dim']}"
            )
        S, P = h["image_size"], h["patch_size"]
        want = h["special_tokens"] + (S // P) ** 2
        if S % P or h["tokens_per_frame"] != want:
            problems.append(
                f"tokens_per_frame {h['tokens_per_frame']} does not match image_size {S}, "
                f"patch_size {P} and {h['special_tokens']} special tokens (expected {want})"
            )
        if h["special_tokens"] >= h["tokens_per_frame"]:
            problems.append("special_tokens must be fewer than tokens_per_frame")
        if not h["scale_frames"] <= h["max_frames"] < h["max_positions"]:
            problems.append(
                f"expected scale_frames {h['scale_frames']} <= max_frames {h['max_frames']} "
                f"< max_positions {h['max_positions']}"
            )
        return problems
