"""The gct-stream PyTorch reference (models/gct_stream.py): batch mode (all frames with the
window mask) and streaming mode (preallocated cache, evict then attend) agree at every
frame, on scripted and random sequences (window eviction, scale frames, non-keyframes,
reset, longer than the window). Float64 holds them to 1e-5 abs (only the logic can differ);
float32 to 1e-5 x max(1, |reference|) (depth is an exp, its rounding scales with it)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from viewrt.errors import ViewrtError
from viewrt.models import build_model
from viewrt.models.gct_stream import PRESETS, GCTStream, count_flops

KEYS = ("pose_enc", "depth", "depth_conf")


@pytest.fixture(scope="module")
def model(one_torch_thread):
    m, _ = build_model("stream-tiny", seed=3)
    return m.double()


def _frames(n, size, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g).to(dtype)


def _close(got, want, atol, scaled=False):
    for k in KEYS:
        tol = atol * (want[k].abs().clamp(min=1) if scaled else 1)
        assert want[k].abs().max() > 0, k
        err = (got[k] - want[k]).abs()
        assert bool((err <= tol).all()), f"{k}: max abs error {err.max().item():.3g}"


def _stream_vs_batch(model, frames, window, scale, keyframes, atol=1e-5, scaled=False):
    """Stream every frame; compare each with batch mode over the keyframes before it plus
    itself (a non-keyframe is the last frame of its own batch, then forgotten)."""
    state = model.new_stream(window, scale)
    pre = model.stream_prefill(state, frames[:scale])
    kept = list(range(scale))
    _close(pre, model.forward_batch(frames[:scale], window, scale), atol, scaled)
    for i in range(scale, len(frames)):
        got = model.stream_step(state, frames[i], keyframe=keyframes[i])
        ref = model.forward_batch(frames[kept + [i]], window, scale)
        _close(got, {k: ref[k][-1] for k in KEYS}, atol, scaled)
        if keyframes[i]:
            kept.append(i)
    assert state.position == len(kept) and state.frames_seen == len(frames)
    return state


def test_stream_equals_batch_scripted(model):
    S = model.cfg.image_size
    frames = _frames(11, S, 0)
    keys = [True] * 11
    keys[5] = keys[6] = False  # two non-keyframes in a row, then more keyframes
    state = _stream_vs_batch(model, frames, window=3, scale=2, keyframes=keys)
    assert state.n_kept == 4  # 9 keyframes: 2 pinned, 3 in the window, 4 evicted with specials
    model.stream_reset(state)  # reset: the same stream again from position 0
    _stream_vs_batch(model, frames[3:], window=3, scale=2, keyframes=[True] * 8)


def test_float32_stream_equals_batch(one_torch_thread):
    m, _ = build_model("stream-tiny", seed=1)
    frames = _frames(8, m.cfg.image_size, 1, torch.float32)
    _stream_vs_batch(m, frames, window=2, scale=1, keyframes=[True] * 8, scaled=True)


@settings(max_examples=8, deadline=None)
@given(
    window=st.integers(1, 4),
    scale=st.integers(1, 3),
    keys=st.lists(st.booleans(), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_stream_equals_batch_random(model, window, scale, keys, seed):
    frames = _frames(scale + len(keys), model.cfg.image_size, seed)
    _stream_vs_batch(model, frames, window, scale, [True] * scale + keys)


def test_window_mask_rule(model):
    T = model.cfg.tokens_per_frame
    mask = model.window_mask(7, window=2, scale_frames=2).reshape(7, T, 7, T)
    full = mask.all(-1).all(1)  # [query frame, key frame] attended in full
    specials = mask[:, 0, :, :6].all(-1)
    assert full[1, 0] and full[0, 1] and not full[1, 2]  # scale frames bidirectional, only them
    assert full[6].tolist() == [True, True, False, False, False, True, True]
    assert specials[6].tolist() == [True] * 7 and not specials[3, 4]  # causal


def test_prediction_depends_on_the_absolute_position(model):
    """RoPE is relative: a frame's prediction depends on its position against the cached
    keys' (rotated at theirs), so the same frame one position later differs (what makes the
    runtime's position test able to fail)."""
    frames = _frames(4, model.cfg.image_size, 5)
    state = model.new_stream(3, 2)
    model.stream_prefill(state, frames[:2])
    past, one = state.past(2), torch.ones(1, dtype=torch.float64)
    with torch.no_grad():
        a, b = (model.run(frames[2:3], one * t, one * 0, one * 0, past)["pose_enc"] for t in (2, 3))
    assert (a - b).abs().max() > 1e-4


def test_stream_refusals(model):
    frames = _frames(3, model.cfg.image_size, 2)
    state = model.new_stream(2, 2)
    with pytest.raises(ViewrtError, match="prefill the 2 scale frames first"):
        model.stream_step(state, frames[0])
    with pytest.raises(ViewrtError, match="takes the 2 scale frames, got 3"):
        model.stream_prefill(state, frames)
    model.stream_prefill(state, frames[:2])
    with pytest.raises(ViewrtError, match="reset it first"):
        model.stream_prefill(state, frames[:2])
    with pytest.raises(ViewrtError, match="window must be an integer >= 1"):
        model.new_stream(0, 2)
    short = GCTStream(replace(model.cfg, max_frame_num=3)).double().eval()
    s = short.new_stream(2, 2)
    short.stream_prefill(s, frames[:2])
    short.stream_step(s, frames[2])
    with pytest.raises(ViewrtError, match="reaches max_frame_num 3"):
        short.stream_step(s, frames[2])


def test_presets_and_flops():
    up = PRESETS["stream-upstream"]
    assert (up.embed_dim, up.patch_size, up.image_size, up.depth, up.n_heads) == (
        1024,
        14,
        518,
        24,
        16,
    )
    assert up.tokens_per_frame == 6 + 37 * 37 and up.head_dim == 64
    tiny = PRESETS["stream-tiny"]
    a, b = count_flops(tiny, 2), count_flops(tiny, 5)
    assert 0 < a["step"] < b["step"] and a["prefill"] > 0
    assert count_flops(up, 16)["step"] > 1e11  # ~1.4k tokens x 24 layer pairs x 1024 wide
