"""Export spec of gct-stream (models/gct_stream.py): a scale-frames ``prefill`` graph and a
per-frame ``step`` graph over the token-window cache, as the family's contract declares
them (viewrt/contract/families/gct_stream.py); nothing here types a tensor name.

The step graph computes the temporal RoPE from its ``position`` input and its attention
mask over the retained special tokens from ``retained_frames`` (no position or mask is a
baked constant); attention is plain MatMul -> Softmax -> MatMul (opset 18, TensorRT
parses it). Validation right after export runs both graphs on ONNX Runtime (CPU) against
the PyTorch model on fresh random inputs at several cache lengths: every output within
``atol`` (1e-4 for fp32) max abs, depth and confidence (exponentials) within
``atol * max(1, |reference|)`` elementwise.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import torch

import viewrt.contract.names as N
from viewrt.contract.families import family_contract
from viewrt.contract.tensors import GraphSignature
from viewrt.errors import ViewrtError
from viewrt.models.gct_stream import Past

RELATIVE = (N.DEPTH, N.DEPTH_CONF)  # outputs held to atol x max(1, |reference|)


class _PrefillGraph(torch.nn.Module):
    """frames [F, 3, S, S] -> present K/V per layer [F, T, H, Dh], camera K/V per camera
    layer [F, 1, H, Dh], pose_enc [F, 9], depth and depth_conf [F, S, S]."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, frames):
        m = self.model
        Fn, T = frames.shape[0], m.cfg.tokens_per_frame
        i = torch.arange(Fn, device=frames.device)
        pos = i.to(frames.dtype)
        cam_bias = torch.where(i[None, :] > i[:, None], float("-inf"), 0.0).to(frames.dtype)
        out = m.run(
            frames, pos, (i == 0).to(frames.dtype), torch.ones_like(pos), None, None, cam_bias
        )
        kv = [t.reshape(Fn, T, *t.shape[2:]) for k, v in zip(out["k"], out["v"]) for t in (k, v)]
        cam = [
            t.reshape(Fn, 1, *t.shape[2:])
            for k, v in zip(out["cam_k"], out["cam_v"])
            for t in (k, v)
        ]
        return (*kv, *cam, out["pose_enc"], out["depth"], out["depth_conf"])


class _StepGraph(torch.nn.Module):
    """One frame at ``position`` over past / retained / camera-past K/V -> its K/V and
    predictions (the contract's step signature)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, frame, position, is_first, is_scale, retained_frames, *kv):
        m = self.model
        L, Lc, R = m.cfg.depth, m.cfg.camera_layers, 6
        past, kept, cam = kv[: 2 * L], kv[2 * L : 4 * L], kv[4 * L : 4 * L + 2 * Lc]
        nr = kept[0].shape[1]
        valid = torch.arange(nr, device=frame.device) < retained_frames * R  # [Nr]
        bias = torch.cat(
            [
                torch.zeros_like(past[0][0, :, 0, 0]),
                torch.where(valid, 0.0, float("-inf")).to(frame.dtype),
                torch.zeros(m.cfg.tokens_per_frame, dtype=frame.dtype, device=frame.device),
            ]
        )  # [Np + Nr + T] over the keys
        ks = [torch.cat([past[2 * i], kept[2 * i]], dim=1) for i in range(L)]
        vs = [torch.cat([past[2 * i + 1], kept[2 * i + 1]], dim=1) for i in range(L)]
        p = Past(ks, vs, list(cam[0::2]), list(cam[1::2]))
        out = m.run(frame, position.to(frame.dtype), is_first, is_scale, p, bias, None)
        own = [t for k, v in zip(out["k"], out["v"]) for t in (k, v)]
        own_cam = [t for k, v in zip(out["cam_k"], out["cam_v"]) for t in (k, v)]
        return (*own, *own_cam, out["pose_enc"], out["depth"], out["depth_conf"])


class GCTStreamSpec:
    """gct-stream: ``prefill`` (scale frames) and ``step`` (one frame) graphs."""

    family = "gct-stream"

    @property
    def contract(self):
        return family_contract(self.family)

    def header(self, cfg, max_frames: int) -> dict:
        """The manifest header; ``max_frames``: full frames the step reads at most."""
        return {
            "image_size": cfg.image_size,
            "patch_size": cfg.patch_size,
            "tokens_per_frame": cfg.tokens_per_frame,
            "special_tokens": 6,
            "n_layers": cfg.depth,
            "n_heads": cfg.n_heads,
            "head_dim": cfg.head_dim,
            "embed_dim": cfg.embed_dim,
            "camera_layers": cfg.camera_layers,
            "max_frames": max_frames,
            "max_positions": cfg.max_frame_num,
            "scale_frames": cfg.scale_frames,
        }

    def records(self, cfg, checkpoint=None) -> dict:
        """Manifest records beyond the header: the output conventions and what the weights
        are ("untrained": seeded random init, no checkpoint)."""
        return {
            "outputs": {
                N.POSE_ENC: "translation 3, quaternion (x, y, z, w) 4, FoV 2 (radians)",
                N.DEPTH: "exp of the depth logit",
                N.DEPTH_CONF: "1 + exp of the confidence logit",
                "image": "RGB float32 in [0, 1], normalized inside the graph",
            },
            "weights": "untrained" if checkpoint is None else "checkpoint",
        }

    def signatures(self, cfg, max_frames: int, kv_dtype: str) -> dict[str, GraphSignature]:
        return self.contract.signatures(self.header(cfg, max_frames), kv_dtype)

    def modules(self, model) -> dict[str, torch.nn.Module]:
        return {"prefill": _PrefillGraph(model).eval(), "step": _StepGraph(model).eval()}

    def example_inputs(self, cfg, max_frames: int, dtype: torch.dtype) -> dict[str, tuple]:
        """``{graph: (args, dynamic_shapes)}`` for torch.export from the contract's
        signatures: dynamic dims at its example sizes, bounded by its ranges.

        Raises: ViewrtError for a cache dtype other than float32 (fp32 exports only).
        """
        if dtype != torch.float32:
            raise ViewrtError("gct-stream exports fp32 graphs only")
        header = self.header(cfg, max_frames)
        c = self.contract
        sigs = c.signatures(header, "float32")
        sizes = c.example_sizes(header)
        geo = c.cache(header)
        bounds = {d: (1, max(2, hi)) for d, (_, hi) in c.dim_limits(header).items()}
        bounds[geo.dim] = (1, max(2, geo.capacity) * geo.tokens_per_entry)
        feeds = _feeds(sigs, sizes, {N.POSITION: 5, N.RETAINED_FRAMES: 1}, seed=0)
        out = {}
        for g, sig in sigs.items():
            args = tuple(torch.from_numpy(feeds[g][t.name]) for t in sig.inputs)
            dyn = [
                {
                    i: torch.export.Dim(d, min=bounds[d][0], max=bounds[d][1])
                    for i, d in t.dynamic_axes.items()
                }
                or None
                for t in sig.inputs
            ]
            names = (
                ["frames"]
                if g == "prefill"
                else ["frame", "position", "is_first", "is_scale", "retained_frames"]
            )
            shapes = dict(zip(names, dyn))
            if len(dyn) > len(names):
                shapes["kv"] = tuple(dyn[len(names) :])
            out[g] = (args, shapes)
        return out

    def write_variants(self, folder: Path, record, max_frames: int) -> dict:
        """No backend-specific variants yet (the plain graphs serve every backend)."""
        return {}

    def validate(self, model, folder: Path, record, max_frames: int, seed) -> dict:
        """Both graphs on ONNX Runtime (CPU) vs the PyTorch model on fresh random inputs:
        the prefill at 1 and all scale frames, the step at 1 full frame with no retained
        frame (the masked slot), a few, and the whole cache. Raises ViewrtError."""
        import onnxruntime as ort

        seed = secrets.randbits(32) if seed is None else seed
        h, c = record.header, self.contract
        T, R = h["tokens_per_frame"], h["special_tokens"]
        sigs = c.signatures(h, record.kv_dtype)
        mods = self.modules(model)
        atol = record.precision_row.atol_images
        cases = {
            "prefill": [{N.NUM_FRAMES: n} for n in sorted({1, h["scale_frames"]})],
            "step": [
                {N.PAST_TOKENS: T, N.RETAINED_TOKENS: R, N.CAMERA_TOKENS: 1, "kept": 0, "pos": 1},
                {
                    N.PAST_TOKENS: 3 * T,
                    N.RETAINED_TOKENS: 2 * R,
                    N.CAMERA_TOKENS: 5,
                    "kept": 2,
                    "pos": 5,
                },
                {
                    N.PAST_TOKENS: h["max_frames"] * T,
                    N.RETAINED_TOKENS: 3 * R,
                    N.CAMERA_TOKENS: h["max_frames"] + 3,
                    "kept": 3,
                    "pos": h["max_positions"] - 1,
                },
            ],
        }
        errors, opts = {}, ort.SessionOptions()
        opts.log_severity_level = 3
        for g, sig in sigs.items():
            sess = ort.InferenceSession(
                str(folder / record.graphs[g].file), opts, providers=["CPUExecutionProvider"]
            )
            names = [t.name for t in sig.outputs]
            for k, case in enumerate(cases[g]):
                ints = {N.POSITION: case.get("pos", 0), N.RETAINED_FRAMES: case.get("kept", 0)}
                feed = _feeds({g: sig}, case, ints, seed + k)[g]
                with torch.no_grad():
                    want = mods[g](*(torch.from_numpy(feed[t.name]) for t in sig.inputs))
                got = sess.run(names, feed)
                for name, w, o in zip(names, want, got):
                    w = w.numpy()
                    if not np.abs(w).max() > 0:
                        raise ViewrtError(f"validation of {g}: reference '{name}' is all zeros")
                    scale = np.maximum(1.0, np.abs(w)) if name in RELATIVE else 1.0
                    err = float((np.abs(o - w) / scale).max()) if np.isfinite(o).all() else np.inf
                    if not err <= atol:
                        raise ViewrtError(
                            f"validation of {record.graphs[g].file} failed: output '{name}' error "
                            f"{err:.3g} > {atol:g} against PyTorch ({case})"
                        )
                    key = f"{g}.{'kv' if N.parse_kv_name(name) else name}"
                    errors[key] = max(errors.get(key, 0.0), err)
        return {
            "reference": "PyTorch fp32 (CPU)",
            "backend": "onnxruntime CPUExecutionProvider",
            "atol": atol,
            "seed": seed,
            "cases": {g: [{k: v for k, v in cs.items()} for cs in cl] for g, cl in cases.items()},
            "max_abs_error": errors,
            "tolerance_rule": "max abs <= atol; depth, depth_conf: <= atol x max(1, |reference|)",
        }


def _feeds(sigs: dict, sizes: dict, ints: dict, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Random inputs per graph: frames in [0, 1], K/V ~ N(0, 1) (the scale k-norm gives),
    flags 0, int64 inputs from ``ints``; dynamic dims at ``sizes``."""
    rng = np.random.default_rng(seed)
    out = {}
    for g, sig in sigs.items():
        feed = {}
        for t in sig.inputs:
            shape = tuple(sizes[d] if isinstance(d, str) else d for d in t.shape)
            if t.dtype == "int64":
                feed[t.name] = np.full(shape, ints[t.name], np.int64)
            elif t.name in (N.IS_FIRST, N.IS_SCALE):
                feed[t.name] = np.zeros(shape, np.float32)
            elif N.parse_kv_name(t.name):
                feed[t.name] = rng.standard_normal(shape).astype(t.dtype)
            else:
                feed[t.name] = rng.uniform(0, 1, shape).astype(np.float32)
        out[g] = feed
    return out
