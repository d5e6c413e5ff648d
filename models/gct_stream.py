"""GCTStream-style streaming causal geometry transformer (family ``gct-stream``): camera poses
and depth from a video, frame by frame, with a window K/V cache.

Facts followed (lingbot-map's GCTStream, ../shared/reference/gct-stream.md; every line
here is our own):

- Per frame ``T = 6 + (S/p)^2`` tokens: camera, 4 registers, scale, then the patches of a
  patch-``p`` embedding (a conv with stride = kernel, written as a Linear over unfolded
  patches) of the ImageNet-normalized image plus a learned patch position embedding (baked
  for the one resolution). The special tokens have two learned variants: camera and
  registers variant 0 for frame 0 and 1 after; the scale token variant 0 for scale frames
  and 1 after. Variants are blended by float flags (``flag * v0 + (1 - flag) * v1``), so a
  graph takes the flags as inputs.
- ``depth`` pairs of a frame-local block (attention within the frame, 2D RoPE: patches at
  (y+1, x+1), specials at (0, 0)) then a global block (attention across frames, 3D RoPE at
  the absolute frame index, head-dim split t/y/x = 20/22/22 of 64, interleaved pairs).
  Pre-norm blocks with qk-norm (LayerNorm over head_dim) and LayerScale. Only the global
  blocks keep K/V, stored after RoPE and k-norm, so a cached key never moves in position.
- The window rule (SDPA path of upstream): frame ``t`` attends in full to the first
  ``scale_frames`` frames (pinned) and the last ``window`` frames including itself, and to
  the 6 special tokens of every other earlier frame (evicted frames keep them for ever).
  The first ``scale_frames`` frames attend bidirectionally among themselves (a prefill).
- A causal camera head: the final layer's camera token (frame and global outputs
  concatenated, 2C) projected to C, then ``camera_iters`` refinement iterations of
  ``camera_depth`` causal blocks over one token per frame. Its width is the trunk's embed
  dim (upstream: 2C), so its K/V share the trunk's heads and head_dim; it caches one token
  per frame per (iteration, block), never evicted, with a temporal RoPE at the frame index.
- A per-frame depth head from layer taps (frame and global outputs, 2C each): depth =
  exp, confidence = 1 + exp (upstream: DPT heads; here one linear unpatchify).
- ``pose_enc [9]``: translation 3, quaternion 4 in (x, y, z, w) order (scalar last, as
  VGGT's absT_quaR_FoV encoding), FoV 2 (softplus, radians). Unit quaternion.
- A non-keyframe attends like a keyframe at the next position and is then rolled back in
  both caches (upstream also advances its camera head's frame counter for it; here the
  camera cache holds committed frames only, one per position).

Images are float32 ``[F, 3, S, S]`` RGB in [0, 1]; the model normalizes them. Shapes: F
frames, T tokens per frame, C embed dim, H heads, Dh head dim, L global (cached) layers.

Two modes that agree at every frame (tests/models/test_gct_stream.py):
:meth:`GCTStream.forward_batch` (all frames at once with the window mask) and the streaming
mode (:meth:`GCTStream.new_stream`, :meth:`stream_prefill`, :meth:`stream_step`,
:meth:`stream_reset`) over a preallocated :class:`StreamState` cache.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from viewrt.errors import ViewrtError

SPECIAL_TOKENS = 6  # camera, 4 registers, scale (upstream patch_start_idx)
N_REGISTERS = 4
POSE_DIM = 9  # translation 3, quaternion (x, y, z, w) 4, FoV 2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EPS = 1e-6


@dataclass(frozen=True)
class GCTStreamConfig:
    """GCTStream sizes (defaults: upstream's shape, for FLOP and memory estimates)."""

    image_size: int = 518  # square frames, pixels
    patch_size: int = 14  # DINOv2 patch
    embed_dim: int = 1024  # C
    depth: int = 24  # frame/global block pairs; L = depth cached layers
    n_heads: int = 16  # H; head_dim = C / H
    mlp_ratio: int = 4  # MLP hidden = mlp_ratio * C
    camera_depth: int = 1  # causal blocks of the camera head (shared by its iterations)
    camera_iters: int = 4  # camera refinement iterations (each caches its own K/V)
    max_frame_num: int = 1024  # absolute frame positions a stream may reach
    scale_frames: int = 8  # default first frames processed together and pinned
    depth_taps: tuple = (4, 11, 17, 23)  # layers the depth head reads
    rope_base: float = 100.0  # RoPE frequency base

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.n_heads

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return SPECIAL_TOKENS + self.grid**2

    @property
    def camera_layers(self) -> int:
        """Camera-head layers that keep K/V: one per (iteration, block)."""
        return self.camera_iters * self.camera_depth

    def validate(self) -> None:
        """Raises ViewrtError for inconsistent sizes."""
        if self.embed_dim % self.n_heads or self.head_dim % 2:
            raise ViewrtError(f"embed_dim {self.embed_dim} / n_heads {self.n_heads} must be even")
        if self.image_size % self.patch_size:
            raise ViewrtError(
                f"image_size {self.image_size} is not a multiple of {self.patch_size}"
            )
        if not all(0 <= t < self.depth for t in self.depth_taps):
            raise ViewrtError(f"depth_taps {self.depth_taps} must be layers 0..{self.depth - 1}")
        if not 1 <= self.scale_frames < self.max_frame_num:
            raise ViewrtError(f"scale_frames must be in 1..{self.max_frame_num - 1}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["depth_taps"] = list(self.depth_taps)
        return d


PRESETS: dict[str, GCTStreamConfig] = {
    # tests: 28 px, 4 patches + 6 specials = 10 tokens per frame, 2 heads of 32
    "stream-tiny": GCTStreamConfig(
        image_size=28, patch_size=14, embed_dim=64, depth=2, n_heads=2, camera_iters=2,
        max_frame_num=64, scale_frames=2, depth_taps=(0, 1),
    ),
    # CPU benchmarks: 112 px, 64 patches + 6 = 70 tokens per frame, 4 heads of 32
    "stream-small": GCTStreamConfig(
        image_size=112, patch_size=14, embed_dim=128, depth=4, n_heads=4, camera_iters=2,
        max_frame_num=1024, scale_frames=4, depth_taps=(0, 1, 2, 3),
    ),
    # upstream's shape (FLOP/memory estimates only; ~1.4k tokens per frame)
    "stream-upstream": GCTStreamConfig(),
}  # fmt: skip


# -- rotary embeddings ------------------------------------------------------------------------
def _inv_freq(n_pairs: int, base: float) -> torch.Tensor:
    return 1.0 / base ** (torch.arange(n_pairs, dtype=torch.float32) / max(1, n_pairs))


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Head-dim channels rotated by (time, y, x): upstream's 20/22/22 of 64, scaled."""
    yx = 2 * ((head_dim * 22 // 64) // 2)
    return head_dim - 2 * yx, yx, yx


def rope_tables(pos: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Real cos/sin tables ``[N, head_dim/2]`` for positions ``pos [N, 3]`` (t, y, x floats),
    computed from the positions (never baked): each axis rotates its share of the pairs."""
    parts = []
    for axis, dims in enumerate(rope_split(head_dim)):
        if dims:
            freq = _inv_freq(dims // 2, base).to(pos.device)
            parts.append(pos[:, axis : axis + 1] * freq[None, :])  # [N, dims/2]
    ang = torch.cat(parts, dim=-1)
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of ``x [B, N, H, Dh]`` by tables ``[N, Dh/2]``."""
    B, N, H, Dh = x.shape
    pairs = x.reshape(B, N, H, Dh // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]  # [B, N, H, Dh/2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).reshape(B, N, H, Dh)


# -- blocks -------------------------------------------------------------------------------------
def attend(q, k, v, bias=None) -> torch.Tensor:
    """Plain attention (MatMul -> Softmax -> MatMul, the form TensorRT parses and fuses):
    q ``[B, Nq, H, Dh]``, k/v ``[B, Nk, H, Dh]``, bias broadcastable to ``[B, H, Nq, Nk]``
    (0 or -inf) -> ``[B, Nq, H, Dh]``."""
    q = q.transpose(1, 2) * (1.0 / math.sqrt(q.shape[-1]))  # [B, H, Nq, Dh]
    scores = torch.matmul(q, k.permute(0, 2, 3, 1))  # [B, H, Nq, Nk]
    if bias is not None:
        scores = scores + bias
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v.transpose(1, 2)).transpose(1, 2)  # [B, Nq, H, Dh]


class Attention(nn.Module):
    """Multi-head self-attention with qk-norm and RoPE; extra past K/V may be prepended."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.h, self.dh = n_heads, dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.q_norm = nn.LayerNorm(self.dh, eps=EPS)
        self.k_norm = nn.LayerNorm(self.dh, eps=EPS)

    def forward(self, x, cos, sin, past_k=None, past_v=None, bias=None):
        """x ``[B, N, C]`` -> (out ``[B, N, C]``, own k, own v ``[B, N, H, Dh]`` after
        k-norm and RoPE: what a cache keeps)."""
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.h, self.dh).unbind(2)  # [B, N, H, Dh]
        q = apply_rope(self.q_norm(q), cos, sin)
        k = apply_rope(self.k_norm(k), cos, sin)
        keys, values = k, v
        if past_k is not None:
            keys, values = torch.cat([past_k, k], dim=1), torch.cat([past_v, v], dim=1)
        out = attend(q, keys, values, bias).reshape(B, N, C)
        return self.proj(out), k, v


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale: ``x += ls1 * attn(LN(x));
    x += ls2 * mlp(LN(x))``."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.attn = Attention(dim, n_heads)
        self.ls1 = nn.Parameter(torch.full((dim,), 0.01))
        self.norm2 = nn.LayerNorm(dim, eps=EPS)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim, bias=False)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim, bias=False)
        self.ls2 = nn.Parameter(torch.full((dim,), 0.01))

    def forward(self, x, cos, sin, past_k=None, past_v=None, bias=None):
        a, k, v = self.attn(self.norm1(x), cos, sin, past_k, past_v, bias)
        x = x + self.ls1 * a
        x = x + self.ls2 * self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return x, k, v


@dataclass
class Past:
    """Cached K/V a run attends to besides its own frames: per global layer ``k``/``v``
    ``[1, Np, H, Dh]`` and ``bias`` ``[Np]`` (0 or -inf, None: all valid); per camera
    layer ``cam_k``/``cam_v`` ``[1, Nc, H, Dh]``."""

    k: list
    v: list
    cam_k: list
    cam_v: list
    bias: torch.Tensor | None = None


class GCTStream(nn.Module):
    """The streaming geometry transformer (module docstring). ``cfg``: a GCTStreamConfig."""

    def __init__(self, cfg: GCTStreamConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        C, p, g = cfg.embed_dim, cfg.patch_size, cfg.grid
        self.patch_embed = nn.Linear(3 * p * p, C, bias=False)  # the stride-p conv, unfolded
        self.pos_embed = nn.Parameter(torch.zeros(g * g, C))
        self.camera_token = nn.Parameter(torch.zeros(2, C))  # variant 0: frame 0
        self.register_tokens = nn.Parameter(torch.zeros(2 * N_REGISTERS, C))
        self.scale_token = nn.Parameter(torch.zeros(2, C))  # variant 0: scale frames
        blocks = lambda n: nn.ModuleList(  # noqa: E731
            Block(C, cfg.n_heads, cfg.mlp_ratio) for _ in range(n)
        )
        self.frame_blocks, self.global_blocks = blocks(cfg.depth), blocks(cfg.depth)
        self.cam_in_norm = nn.LayerNorm(2 * C, eps=EPS)
        self.cam_in = nn.Linear(2 * C, C, bias=False)
        self.pose_embed = nn.Linear(POSE_DIM, C, bias=False)
        self.camera_blocks = blocks(cfg.camera_depth)
        self.pose_norm = nn.LayerNorm(C, eps=EPS)
        self.pose_out = nn.Linear(C, POSE_DIM, bias=False)
        self.tap_norms = nn.ModuleList(nn.LayerNorm(2 * C, eps=EPS) for _ in cfg.depth_taps)
        self.tap_proj = nn.ModuleList(nn.Linear(2 * C, C, bias=False) for _ in cfg.depth_taps)
        self.depth_out = nn.Linear(C, 2 * p * p, bias=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), False)
        yx = torch.stack(torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij"), -1)
        spatial = torch.cat([torch.zeros(SPECIAL_TOKENS, 2), yx.reshape(-1, 2).float() + 1])
        self.register_buffer("spatial", spatial, False)  # [T, 2]: the frame's (y, x) grid

    # -- pieces ---------------------------------------------------------------------------------
    def _tokens(self, images, first, scale) -> torch.Tensor:
        """images ``[F, 3, S, S]`` in [0, 1], flags ``[F]`` (1.0/0.0) -> tokens ``[F, T, C]``."""
        cfg = self.cfg
        Fn, p, g = images.shape[0], cfg.patch_size, cfg.grid
        x = (images - self.mean) / self.std
        x = x.reshape(Fn, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(Fn, g * g, 3 * p * p)
        patches = self.patch_embed(x) + self.pos_embed  # [F, g*g, C]
        f, s = first[:, None], scale[:, None]
        cam = f * self.camera_token[0] + (1 - f) * self.camera_token[1]  # [F, C]
        regs = self.register_tokens.reshape(2, N_REGISTERS, -1)
        reg = f[:, :, None] * regs[0] + (1 - f[:, :, None]) * regs[1]  # [F, 4, C]
        sc = s * self.scale_token[0] + (1 - s) * self.scale_token[1]
        return torch.cat([cam[:, None], reg, sc[:, None], patches], dim=1)

    def _tables(self, positions) -> tuple:
        """RoPE tables: frame blocks (2D, per frame ``[T, Dh/2]``) and global blocks (3D,
        ``[F*T, Dh/2]``) from absolute frame positions ``[F]`` (float)."""
        cfg = self.cfg
        T = cfg.tokens_per_frame
        sp = self.spatial.to(positions.dtype)
        frame_pos = torch.cat([torch.zeros_like(sp[:, :1]), sp], dim=1)  # t = 0: [T, 3]
        t = positions[:, None, None].expand(-1, T, 1)  # [F, T, 1]
        glob = torch.cat([t, sp[None].expand(positions.shape[0], -1, -1)], -1).reshape(-1, 3)
        return (
            rope_tables(frame_pos, cfg.head_dim, cfg.rope_base),
            rope_tables(glob, cfg.head_dim, cfg.rope_base),
        )

    def _trunk(self, x, positions, past: Past | None, bias):
        """Frame/global pairs over ``x [F, T, C]``. Returns (taps: list of ``[F, T, 2C]``,
        own K/V per global layer ``[1, F*T, H, Dh]``)."""
        Fn, T, C = x.shape
        (fc, fs), (gc, gs) = self._tables(positions)
        taps, ks, vs = [], [], []
        for i, (fb, gb) in enumerate(zip(self.frame_blocks, self.global_blocks)):
            x, _, _ = fb(x, fc, fs)  # within each frame
            local = x
            pk = None if past is None else past.k[i]
            pv = None if past is None else past.v[i]
            xg, k, v = gb(x.reshape(1, Fn * T, C), gc, gs, pk, pv, bias)
            x = xg.reshape(Fn, T, C)
            ks.append(k)
            vs.append(v)
            if i in self.cfg.depth_taps:
                taps.append(torch.cat([local, x], dim=-1))
        return taps, ks, vs

    def _camera(self, last_tap, positions, past: Past | None, bias):
        """Causal camera head over one token per frame. Returns (pose_enc ``[F, 9]``,
        own K/V per camera layer ``[1, F, H, Dh]``)."""
        Fn = last_tap.shape[0]
        c = self.cam_in(self.cam_in_norm(last_tap[:, 0]))[None]  # [1, F, C]
        pos = torch.cat([positions[:, None], torch.zeros_like(positions[:, None]).expand(-1, 2)], 1)
        cos, sin = rope_tables(pos, self.cfg.head_dim, self.cfg.rope_base)
        pose = torch.zeros(Fn, POSE_DIM, dtype=c.dtype, device=c.device)
        ks, vs, j = [], [], 0
        for _ in range(self.cfg.camera_iters):
            h = c + self.pose_embed(pose)[None]
            for blk in self.camera_blocks:
                pk = None if past is None else past.cam_k[j]
                pv = None if past is None else past.cam_v[j]
                h, k, v = blk(h, cos, sin, pk, pv, bias)
                ks.append(k)
                vs.append(v)
                j += 1
            pose = pose + self.pose_out(self.pose_norm(h[0]))
        quat = pose[:, 3:7] / torch.sqrt((pose[:, 3:7] ** 2).sum(-1, keepdim=True) + EPS)
        return torch.cat([pose[:, :3], quat, F.softplus(pose[:, 7:])], dim=-1), ks, vs

    def _depth(self, taps) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame depth and confidence ``[F, S, S]`` from the layer taps."""
        cfg = self.cfg
        p, g = cfg.patch_size, cfg.grid
        h = sum(
            proj(norm(t[:, SPECIAL_TOKENS:]))
            for t, norm, proj in zip(taps, self.tap_norms, self.tap_proj)
        )
        out = self.depth_out(F.gelu(h))  # [F, g*g, 2*p*p]
        Fn = out.shape[0]
        out = out.reshape(Fn, g, g, 2, p, p).permute(0, 3, 1, 4, 2, 5).reshape(Fn, 2, g * p, g * p)
        return torch.exp(out[:, 0]), 1 + torch.exp(out[:, 1])

    def run(
        self, images, positions, first, scale, past: Past | None = None, bias=None, cam_bias=None
    ) -> dict:
        """One pass over ``F`` frames (a prefill, a step, or a whole batch with a mask).

        Args:
            images: float ``[F, 3, S, S]`` in [0, 1]. positions: float ``[F]`` absolute frame
                indices. first, scale: float ``[F]`` variant flags (1.0 / 0.0).
            past: cached K/V attended besides these frames (None: none).
            bias: global-attention bias over keys (0 / -inf), broadcastable to
                ``[1, H, F*T, Np + F*T]``. cam_bias: camera-head bias ``[F, Nc + F]``.
        Returns: dict pose_enc ``[F, 9]``, depth/depth_conf ``[F, S, S]``, k/v (per global
            layer ``[1, F*T, H, Dh]``), cam_k/cam_v (per camera layer ``[1, F, H, Dh]``).
        """
        x = self._tokens(images, first, scale)
        taps, ks, vs = self._trunk(x, positions, past, bias)
        pose, cks, cvs = self._camera(taps[-1], positions, past, cam_bias)
        depth, conf = self._depth(taps)
        return {
            "pose_enc": pose,
            "depth": depth,
            "depth_conf": conf,
            "k": ks,
            "v": vs,
            "cam_k": cks,
            "cam_v": cvs,
        }

    # -- batch mode -------------------------------------------------------------------------------
    def window_mask(self, n_frames: int, window: int, scale_frames: int) -> torch.Tensor:
        """Boolean ``[F*T, F*T]``: query token may attend to key token, by the window rule
        (module docstring) over ``F`` keyframes."""
        T = self.cfg.tokens_per_frame
        i = torch.arange(n_frames)[:, None]  # query frame
        j = torch.arange(n_frames)[None, :]  # key frame
        scale_q = i < scale_frames
        full = (j < scale_frames) | ((j <= i) & (j > i - window))
        frames = torch.where(scale_q, j < scale_frames, (j <= i) & full)  # [F, F] in full
        specials = (~scale_q) & (j <= i)  # [F, F] special tokens at least
        tok = torch.arange(T) < SPECIAL_TOKENS  # [T]
        allowed = frames[:, None, :, None] | (specials[:, None, :, None] & tok[None, None, None, :])
        return allowed.expand(n_frames, T, n_frames, T).reshape(n_frames * T, n_frames * T)

    @torch.no_grad()
    def forward_batch(self, images: torch.Tensor, window: int, scale_frames: int) -> dict:
        """All frames at once (every frame a keyframe) with the window mask.

        Args:
            images: float32 ``[F, 3, S, S]`` in [0, 1].
            window: frames attended in full, the current one included (>= 1).
            scale_frames: the first frames, bidirectional among themselves and pinned (>= 1).
        Returns: dict pose_enc ``[F, 9]``, depth ``[F, S, S]``, depth_conf ``[F, S, S]``.
        Raises: ViewrtError for a bad window, scale_frames or frame count.
        """
        Fn = images.shape[0]
        _check_rule(window, scale_frames)
        if Fn > self.cfg.max_frame_num:
            raise ViewrtError(f"{Fn} frames exceed max_frame_num {self.cfg.max_frame_num}")
        dt = images.dtype
        mask = self.window_mask(Fn, window, scale_frames)
        bias = torch.zeros(mask.shape, dtype=dt).masked_fill(~mask, float("-inf"))
        i = torch.arange(Fn)
        cam_bias = torch.zeros(Fn, Fn, dtype=dt).masked_fill(i[None, :] > i[:, None], float("-inf"))
        flags = ((i == 0).to(dt), (i < scale_frames).to(dt))
        out = self.run(images, i.to(dt), *flags, None, bias, cam_bias)
        return {k: out[k] for k in ("pose_enc", "depth", "depth_conf")}

    # -- streaming mode ---------------------------------------------------------------------------
    def new_stream(self, window: int, scale_frames: int | None = None) -> StreamState:
        """A preallocated streaming cache (module docstring's window rule).

        Raises: ViewrtError for a bad window or scale_frames.
        """
        s = self.cfg.scale_frames if scale_frames is None else scale_frames
        _check_rule(window, s)
        return StreamState.allocate(self, window, s)

    @torch.no_grad()
    def stream_prefill(self, state: StreamState, images: torch.Tensor) -> dict:
        """The first ``scale_frames`` frames together (bidirectional), into an empty stream.

        Returns: dict pose_enc ``[F, 9]``, depth/depth_conf ``[F, S, S]``.
        Raises: ViewrtError when the stream is not empty or the frame count differs.
        """
        Fn = images.shape[0]
        if state.position != 0:
            raise ViewrtError("prefill starts a stream: reset it first")
        if Fn != state.scale_frames:
            raise ViewrtError(f"prefill takes the {state.scale_frames} scale frames, got {Fn}")
        i, dt = torch.arange(Fn), images.dtype
        cam_bias = torch.zeros(Fn, Fn, dtype=dt).masked_fill(i[None, :] > i[:, None], float("-inf"))
        out = self.run(
            images, i.to(dt), (i == 0).to(dt), torch.ones(Fn, dtype=dt), None, None, cam_bias
        )
        state.write_prefill(out)
        return {k: out[k] for k in ("pose_enc", "depth", "depth_conf")}

    @torch.no_grad()
    def stream_step(self, state: StreamState, image: torch.Tensor, keyframe: bool = True) -> dict:
        """One frame at the next absolute position: attends to the cache and itself; a
        keyframe is then cached (evicting by the window rule), a non-keyframe rolled back.

        Args: image float32 ``[3, S, S]`` in [0, 1].
        Returns: dict pose_enc ``[9]``, depth ``[S, S]``, depth_conf ``[S, S]``.
        Raises: ViewrtError before the prefill or at ``max_frame_num``.
        """
        t = state.position
        if t < state.scale_frames:
            raise ViewrtError(f"prefill the {state.scale_frames} scale frames first")
        if t >= self.cfg.max_frame_num:
            raise ViewrtError(f"frame position {t} reaches max_frame_num {self.cfg.max_frame_num}")
        past = state.past(t)
        one = torch.ones(1, dtype=image.dtype)
        out = self.run(image[None], one * t, one * (t == 0), one * 0, past, past.bias, None)
        state.frames_seen += 1
        if keyframe:
            state.commit(t, out)
        return {k: out[k][0] for k in ("pose_enc", "depth", "depth_conf")}

    def stream_reset(self, state: StreamState) -> None:
        """Forget every frame (buffers kept)."""
        state.reset()


def _check_rule(window, scale_frames) -> None:
    for name, v, lo in (("window", window, 1), ("scale_frames", scale_frames, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ViewrtError(f"{name} must be an integer >= {lo}, got {v!r}")


@dataclass
class StreamState:
    """The reference's preallocated cache, by upstream's rule (evict, then attend):

    - ``pinned_k/v[l]`` ``[1, S*T, H, Dh]``: the scale frames, for ever;
    - ``ring_k/v[l]`` ``[1, W*T, H, Dh]``: window frame at position t in ring slot
      ``(t - S) % W`` (a frame overwrites the one W positions older);
    - ``kept_k/v[l]`` ``[1, max_frame_num*6, H, Dh]``: special tokens of evicted frames;
    - ``cam_k/v[j]`` ``[1, max_frame_num, H, Dh]``: the camera head's token per frame.
    """

    window: int
    scale_frames: int
    T: int
    pinned_k: list
    pinned_v: list
    ring_k: list
    ring_v: list
    kept_k: list
    kept_v: list
    cam_k: list
    cam_v: list
    position: int = 0  # keyframes committed (the next frame's absolute index)
    frames_seen: int = 0  # every step, non-keyframes included
    n_kept: int = 0  # evicted frames whose special tokens are kept
    ring_positions: list = field(default_factory=list)  # position held by each ring slot

    @classmethod
    def allocate(cls, model: GCTStream, window: int, scale_frames: int) -> StreamState:
        cfg = model.cfg
        T, H, Dh, M = cfg.tokens_per_frame, cfg.n_heads, cfg.head_dim, cfg.max_frame_num
        dt = next(model.parameters()).dtype
        z = lambda n, count: [torch.zeros(1, n, H, Dh, dtype=dt) for _ in range(count)]  # noqa: E731
        L, Lc = cfg.depth, cfg.camera_layers
        return cls(
            window, scale_frames, T, z(scale_frames * T, L), z(scale_frames * T, L),
            z(window * T, L), z(window * T, L), z(M * SPECIAL_TOKENS, L), z(M * SPECIAL_TOKENS, L),
            z(M, Lc), z(M, Lc), ring_positions=[-1] * window,
        )  # fmt: skip

    def reset(self) -> None:
        self.position = self.frames_seen = self.n_kept = 0
        self.ring_positions = [-1] * self.window

    def write_prefill(self, out: dict) -> None:
        n = self.scale_frames
        for dst, src in ((self.pinned_k, out["k"]), (self.pinned_v, out["v"])):
            for buf, t in zip(dst, src):
                buf[:, : n * self.T] = t
        for dst, src in ((self.cam_k, out["cam_k"]), (self.cam_v, out["cam_v"])):
            for buf, t in zip(dst, src):
                buf[:, :n] = t
        self.position = self.frames_seen = n

    def past(self, t: int) -> Past:
        """What frame ``t`` attends to besides itself: the pinned frames, the ring's frames
        but the one ``t`` overwrites, kept special tokens (the overwritten frame's too)."""
        T, R = self.T, SPECIAL_TOKENS
        slot = (t - self.scale_frames) % self.window
        victim = self.ring_positions[slot]
        live = [s for s, p in enumerate(self.ring_positions) if p >= 0 and s != slot]

        def gather(pinned, ring, kept):
            parts = [
                pinned,
                *(ring[:, s * T : (s + 1) * T] for s in live),
                kept[:, : self.n_kept * R],
            ]
            if victim >= 0:
                parts.append(ring[:, slot * T : slot * T + R])
            return torch.cat(parts, dim=1)

        ks = [gather(p, r, k) for p, r, k in zip(self.pinned_k, self.ring_k, self.kept_k)]
        vs = [gather(p, r, k) for p, r, k in zip(self.pinned_v, self.ring_v, self.kept_v)]
        cks = [c[:, :t] for c in self.cam_k]
        cvs = [c[:, :t] for c in self.cam_v]
        return Past(ks, vs, cks, cvs)

    def commit(self, t: int, out: dict) -> None:
        """Cache keyframe ``t``: its ring slot's old frame keeps its special tokens."""
        T, R = self.T, SPECIAL_TOKENS
        slot = (t - self.scale_frames) % self.window
        if self.ring_positions[slot] >= 0:
            for kept, ring in ((self.kept_k, self.ring_k), (self.kept_v, self.ring_v)):
                for kb, rb in zip(kept, ring):
                    kb[:, self.n_kept * R : (self.n_kept + 1) * R] = rb[:, slot * T : slot * T + R]
            self.n_kept += 1
        for ring, own in ((self.ring_k, out["k"]), (self.ring_v, out["v"])):
            for rb, o in zip(ring, own):
                rb[:, slot * T : (slot + 1) * T] = o
        for cam, own in ((self.cam_k, out["cam_k"]), (self.cam_v, out["cam_v"])):
            for cb, o in zip(cam, own):
                cb[:, t : t + 1] = o
        self.ring_positions[slot] = t
        self.position = t + 1


def count_flops(cfg: GCTStreamConfig, frames_cached: int, n_frames: int = 1) -> dict[str, float]:
    """Analytic FLOPs (2 per multiply-add) of one streaming step with ``frames_cached``
    full frames in the window (retained special tokens and the camera cache counted as
    ``frames_cached`` frames' worth too), and of a prefill of ``n_frames`` frames.

    Returns: {"step": one frame, "prefill": the scale frames together}. Norms, softmax,
    RoPE and activations are not counted.
    """
    T, C, L, m, p2 = (
        cfg.tokens_per_frame,
        cfg.embed_dim,
        cfg.depth,
        cfg.mlp_ratio,
        cfg.patch_size**2,
    )
    proj = 2 * T * C * 4 * C + 2 * T * C * m * C * 2  # qkv + out, MLP
    frame = proj + 2 * 2 * T * T * C

    def global_(keys):
        return proj + 2 * 2 * T * keys * C

    keys = frames_cached * T + T
    cam_layer = 2 * C * 4 * C + 2 * C * m * C * 2 + 2 * 2 * (frames_cached + 1) * C
    heads = 2 * (2 * C) * C + cfg.camera_iters * (
        cfg.camera_depth * cam_layer + 2 * 2 * POSE_DIM * C
    )
    heads += len(cfg.depth_taps) * 2 * T * 2 * C * C + 2 * T * C * 2 * p2
    step = 2 * T * 3 * p2 * C + L * (frame + global_(keys)) + heads
    n = n_frames * T
    prefill = n_frames * (2 * T * 3 * p2 * C + L * frame + heads) + L * (
        proj * n_frames + 2 * 2 * n * n * C
    )
    return {"step": float(step), "prefill": float(prefill)}
