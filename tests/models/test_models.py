"""The PyTorch reference models: incremental == batch, layouts and keys of the released
checkpoints, the numerics the reference fixes (norms, GELU, attention), FLOP counts.

Inputs are fresh random posed views on every run (no fixed data seed); every comparison
has an explicit tolerance and checks that what it compares is not flat.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import helpers
from viewrt.errors import ViewrtError
from viewrt.models import (
    LVSM_PRESETS,
    PRESETS,
    EfficientLVSM,
    LVSMDecoderOnly,
    TorchKVCache,
    build_model,
    efficient_lvsm,
    layers,
    lvsm,
)
from viewrt.models.layers import (
    LayerNorm,
    RMSNorm,
    attention,
    explicit_attention,
    patchify,
    unpatchify,
)

ATOL = 1e-5  # fp32, incremental vs batch and explicit vs SDPA attention


# ----------------------------------------------------------------------------- inputs


def posed_views(rng: np.random.Generator, n: int, size: int) -> torch.Tensor:
    return torch.from_numpy(helpers.posed_views(rng, n, size))  # [n, 9, S, S]


def target_rays(rng: np.random.Generator, n: int, size: int) -> torch.Tensor:
    return torch.from_numpy(helpers.target_rays(rng, n, size))  # [n, 6, S, S]


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def _assert_not_flat(images: torch.Tensor) -> None:
    """Images that are compared must carry signal (not constant, not saturated)."""
    assert float(images.std()) > 1e-3, (
        "rendered images are flat: the comparison would prove nothing"
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def rng():
    return np.random.default_rng()


@pytest.fixture(scope="module")
def tiny() -> EfficientLVSM:
    return build_model("tiny")[0]


# ------------------------------------------------------------- incremental == batch


@pytest.mark.parametrize("n_views", range(1, 7))
def test_incremental_cache_equals_batch_forward(tiny, rng, n_views):
    size = tiny.cfg.image_size
    views = posed_views(rng, n_views, size)
    cache = TorchKVCache(tiny, max_views=6)
    for i in range(n_views):
        cache.add(i, views[i : i + 1])
    assert len(cache) == n_views
    for n_targets in (1, 2, 3):
        targets = target_rays(rng, n_targets, size)[None]
        with torch.no_grad():
            batch = tiny(views[None], targets)
        inc = cache.render(targets)
        assert batch.shape == inc.shape == (1, n_targets, 3, size, size)
        _assert_not_flat(batch)
        assert _maxdiff(inc, batch) <= ATOL


@pytest.mark.parametrize("n_views", range(2, 7))
def test_removing_a_view_equals_never_adding_it(tiny, rng, n_views):
    size = tiny.cfg.image_size
    views = posed_views(rng, n_views, size)
    targets = target_rays(rng, 2, size)[None]
    with torch.no_grad():
        full = tiny(views[None], targets)
    for gone in range(n_views):
        cache = TorchKVCache(tiny, max_views=n_views)
        for i in range(n_views):
            cache.add(100 + i, views[i : i + 1])
        cache.remove(100 + gone)
        assert sorted(cache.view_ids) == [100 + i for i in range(n_views) if i != gone]
        keep = [i for i in range(n_views) if i != gone]
        with torch.no_grad():
            expected = tiny(views[keep][None], targets)
        got = cache.render(targets)
        _assert_not_flat(expected)
        assert _maxdiff(got, expected) <= ATOL
        assert _maxdiff(got, full) > 1e-4, (
            "removing a view changed nothing: the decoder ignores the cache"
        )


def test_remove_then_add_reuses_the_freed_slot(tiny, rng):
    size = tiny.cfg.image_size
    views = posed_views(rng, 5, size)
    targets = target_rays(rng, 2, size)[None]
    cache = TorchKVCache(tiny, max_views=3)
    for i in range(3):
        cache.add(i, views[i : i + 1])
    with pytest.raises(ViewrtError, match="full"):
        cache.add(3, views[3:4])
    cache.remove(0)
    cache.add(3, views[3:4])
    cache.remove(2)
    cache.add(4, views[4:5])
    with torch.no_grad():
        expected = tiny(views[[1, 3, 4]][None], targets)
    _assert_not_flat(expected)
    assert _maxdiff(cache.render(targets), expected) <= ATOL


def test_empty_cache_refuses_to_render(tiny, rng):
    cache = TorchKVCache(tiny, max_views=2)
    cache.add(7, posed_views(rng, 1, tiny.cfg.image_size))
    cache.remove(7)
    with pytest.raises(ViewrtError, match="no views"):
        cache.render(target_rays(rng, 1, tiny.cfg.image_size)[None])


@pytest.mark.parametrize("n_views", [3, 6])
def test_view_order_does_not_matter(tiny, rng, n_views):
    """Cross-attention has no positional terms: any order of cached views renders the same."""
    size = tiny.cfg.image_size
    views = posed_views(rng, n_views, size)
    targets = target_rays(rng, 3, size)[None]
    perm = rng.permutation(n_views)
    while n_views > 1 and (perm == np.arange(n_views)).all():
        perm = rng.permutation(n_views)
    with torch.no_grad():
        batch = tiny(views[None], targets)
        permuted_batch = tiny(views[perm][None], targets)
    cache = TorchKVCache(tiny, max_views=n_views)
    for i in perm:
        cache.add(int(i), views[i : i + 1])
    _assert_not_flat(batch)
    assert _maxdiff(permuted_batch, batch) <= ATOL
    assert _maxdiff(cache.render(targets), batch) <= ATOL


def test_targets_render_independently_and_batch_items_do_not_mix(tiny, rng):
    """All targets of a scene form one query sequence, yet each target's image depends on
    that target alone; batch items attend only to their own views."""
    size = tiny.cfg.image_size
    views = posed_views(rng, 6, size).reshape(2, 3, 9, size, size)
    targets = target_rays(rng, 6, size).reshape(2, 3, 6, size, size)
    with torch.no_grad():
        together = tiny(views, targets)  # [2, 3, 3, S, S]
        for b in range(2):
            for t in range(3):
                alone = tiny(views[b : b + 1], targets[b : b + 1, t : t + 1])
                assert _maxdiff(alone[0, 0], together[b, t]) <= ATOL
    _assert_not_flat(together)
    assert _maxdiff(together[0], together[1]) > 1e-3


# ------------------------------------------------------------------------ attention


@pytest.mark.parametrize(
    "shape_q, shape_k", [((2, 3, 16, 32), (2, 3, 48, 32)), ((1, 12, 64, 64), (1, 12, 64, 64))]
)
def test_explicit_attention_equals_sdpa(shape_q, shape_k):
    q, k, v = torch.randn(shape_q) * 2, torch.randn(shape_k) * 2, torch.randn(shape_k)
    sdpa = attention(q, k, v)
    explicit = attention(q, k, v, explicit=True)
    # float64 reference: softmax(q k^T / sqrt(Dh)) v
    ref = (
        torch.softmax(q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
        @ v.double()
    )
    assert float(ref.std()) > 1e-2
    assert _maxdiff(explicit, sdpa) <= ATOL
    assert _maxdiff(explicit, ref) <= ATOL
    assert _maxdiff(sdpa, ref) <= ATOL


def test_explicit_attention_model_matches_sdpa_model(tiny, rng):
    size = tiny.cfg.image_size
    views, targets = posed_views(rng, 3, size)[None], target_rays(rng, 2, size)[None]
    with torch.no_grad():
        sdpa = tiny(views, targets)
        with explicit_attention(tiny):
            explicit = tiny(views, targets)
    _assert_not_flat(sdpa)
    assert _maxdiff(explicit, sdpa) <= ATOL


def test_explicit_attention_is_a_property_of_the_model_not_the_process(tiny):
    other = EfficientLVSM(tiny.cfg)
    mods = lambda m: [x for x in m.modules() if hasattr(x, "explicit_attention")]  # noqa: E731
    assert mods(tiny) and not any(x.explicit_attention for x in mods(tiny))
    with explicit_attention(tiny):
        assert all(x.explicit_attention for x in mods(tiny))
        assert not any(x.explicit_attention for x in mods(other))  # another model is unaffected
        with explicit_attention(tiny, False):
            assert not any(x.explicit_attention for x in mods(tiny))
        assert all(x.explicit_attention for x in mods(tiny))
    with pytest.raises(RuntimeError), explicit_attention(tiny):
        raise RuntimeError("boom")
    assert not any(x.explicit_attention for x in mods(tiny))


# --------------------------------------------------------------------------- layout


def test_patchify_token_layout_by_index_arithmetic():
    """``b c (hh ph) (ww pw) -> b (hh ww) (ph pw c)``: channel fastest, then pw, then ph;
    tokens row-major. Checked element by element from the index formula."""
    b, c, h, w, p = 2, 9, 16, 24, 8
    x = torch.randn(b, c, h, w)
    tok = patchify(x, p)
    assert tok.shape == (b, (h // p) * (w // p), p * p * c)
    bi, ci, yi, xi = np.meshgrid(
        np.arange(b), np.arange(c), np.arange(h), np.arange(w), indexing="ij"
    )
    hh, ph = np.divmod(yi, p)
    ww, pw = np.divmod(xi, p)
    t = hh * (w // p) + ww
    f = (ph * p + pw) * c + ci
    assert torch.equal(tok[bi, t, f], x[bi, ci, yi, xi])
    # one element written out by hand: pixel (y=13, x=18) of channel 4 in image 1
    # -> token (13 // 8) * 3 + 18 // 8 = 5, feature ((13 % 8) * 8 + 18 % 8) * 9 + 4 = 382
    assert tok[1, 5, 382] == x[1, 4, 13, 18]


def test_unpatchify_inverts_patchify_exactly():
    for c, h, w, p in ((3, 32, 32, 8), (9, 16, 24, 4), (6, 8, 8, 8)):
        x = torch.randn(3, c, h, w)
        assert torch.equal(unpatchify(patchify(x, p), p, h, w), x)
        tok = torch.randn(3, (h // p) * (w // p), p * p * c)
        assert torch.equal(patchify(unpatchify(tok, p, h, w), p), tok)


def test_tokenizer_is_patchify_then_linear_without_bias(tiny, rng):
    views = posed_views(rng, 2, tiny.cfg.image_size)
    w = tiny.rgbp_tokenizer[1].weight  # [d, 9*p*p]
    with torch.no_grad():
        got = tiny.rgbp_tokenizer(views)
    expected = patchify(views, tiny.cfg.patch_size).double() @ w.detach().double().T
    assert float(expected.std()) > 1e-2
    assert _maxdiff(got, expected) <= ATOL


def test_cross_attention_kv_rows_are_k_then_v(tiny, rng):
    """to_kv [2d, d]: the first d rows make K (then k_norm), the last d rows make V."""
    cfg = tiny.cfg
    enc = torch.randn(2, cfg.tokens_per_view, cfg.d_model)
    ca = tiny.self_cross_blocks[1].cross_attn
    with torch.no_grad():
        k, v = ca.project_kv(enc)
        ln = F.layer_norm(enc.double(), (cfg.d_model,), eps=1e-5)
        w = ca.to_kv.weight.double()
        k_raw = (ln @ w[: cfg.d_model].T).unflatten(-1, (cfg.n_heads, cfg.head_dim))
        k_ref = (
            k_raw
            / torch.sqrt(k_raw.pow(2).mean(-1, keepdim=True) + 1e-5)
            * ca.k_norm.weight.double()
        )
        v_ref = (ln @ w[cfg.d_model :].T).unflatten(-1, (cfg.n_heads, cfg.head_dim))
    assert k.shape == v.shape == (2, cfg.tokens_per_view, cfg.n_heads, cfg.head_dim)
    assert _maxdiff(k, k_ref) <= ATOL
    assert _maxdiff(v, v_ref) <= ATOL
    assert _maxdiff(k, v) > 1e-2


# ----------------------------------------------------------------- keys and shapes


def _efficient_lvsm_keys(
    d: int, p: int, n_layers: int, head_dim: int
) -> dict[str, tuple[int, ...]]:
    """The released checkpoints' state-dict keys, from shared/reference/efficient-lvsm.md."""
    keys = {
        "rgbp_tokenizer.1.weight": (d, 9 * p * p),
        "target_pose_tokenizer.1.weight": (d, 6 * p * p),
        "image_token_decoder.1.weight": (3 * p * p, d),
    }
    for i in range(n_layers):
        enc, dec = f"input_self_attn_blocks.{i}", f"self_cross_blocks.{i}"
        for attn in (f"{enc}.attn", f"{dec}.self_attn"):
            keys[f"{attn}.to_qkv.weight"] = (3 * d, d)
            keys[f"{attn}.fc.weight"] = (d, d)
            keys[f"{attn}.q_norm.weight"] = (head_dim,)
            keys[f"{attn}.k_norm.weight"] = (head_dim,)
        keys[f"{dec}.cross_attn.to_q.weight"] = (d, d)
        keys[f"{dec}.cross_attn.to_kv.weight"] = (2 * d, d)
        keys[f"{dec}.cross_attn.fc.weight"] = (d, d)
        keys[f"{dec}.cross_attn.q_norm.weight"] = (head_dim,)
        keys[f"{dec}.cross_attn.k_norm.weight"] = (head_dim,)
        for blk in (enc, dec):
            keys[f"{blk}.mlp.mlp.0.weight"] = (4 * d, d)
            keys[f"{blk}.mlp.mlp.2.weight"] = (d, 4 * d)
    return keys


def test_res256_state_dict_matches_the_released_checkpoint_keys():
    cfg = PRESETS["res256"]
    assert (
        cfg.d_model,
        cfg.head_dim,
        cfg.n_heads,
        cfg.n_layers,
        cfg.patch_size,
        cfg.tokens_per_view,
    ) == (768, 64, 12, 12, 8, 1024)
    with torch.device("meta"):
        model = EfficientLVSM(cfg)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = _efficient_lvsm_keys(768, 8, 12, 64)
    assert set(got) - set(expected) == set(), "keys the released checkpoint does not have"
    assert set(expected) - set(got) == set(), "keys of the released checkpoint the model lacks"
    assert got == expected
    assert not any("bias" in k for k in got)
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params - 199e6) <= 0.01 * 199e6, n_params


def test_tiny_state_dict_follows_the_same_key_scheme(tiny):
    cfg = tiny.cfg
    got = {k: tuple(v.shape) for k, v in tiny.state_dict().items()}
    assert got == _efficient_lvsm_keys(cfg.d_model, cfg.patch_size, cfg.n_layers, cfg.head_dim)


def test_lvsm_paper_state_dict_keys():
    cfg = LVSM_PRESETS["lvsm-paper"]
    d, p, hd = 768, 8, 64
    assert (cfg.d_model, cfg.head_dim, cfg.n_layers, cfg.patch_size) == (d, hd, 24, p)
    with torch.device("meta"):
        model = LVSMDecoderOnly(cfg)
    expected = {
        "image_tokenizer.1.weight": (d, 9 * p * p),
        "target_pose_tokenizer.1.weight": (d, 6 * p * p),
        "transformer_input_layernorm.weight": (d,),
        "image_token_decoder.0.weight": (d,),
        "image_token_decoder.1.weight": (3 * p * p, d),
    }
    for i in range(24):
        b = f"transformer_blocks.{i}"
        expected |= {
            f"{b}.norm1.weight": (d,), f"{b}.norm2.weight": (d,),
            f"{b}.attn.to_qkv.weight": (3 * d, d), f"{b}.attn.fc.weight": (d, d),
            f"{b}.attn.q_norm.weight": (hd,), f"{b}.attn.k_norm.weight": (hd,),
            f"{b}.mlp.mlp.0.weight": (4 * d, d), f"{b}.mlp.mlp.2.weight": (d, 4 * d),
        }  # fmt: skip
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
    assert not any("bias" in k for k in got)


# ------------------------------------------------------------------------- numerics


def test_efficient_lvsm_layer_norms_have_no_parameters(tiny):
    norms = [m for m in tiny.modules() if isinstance(m, LayerNorm)]
    # per layer pair: enc norm1, norm2; dec norm1, norm2, norm_q, norm_kv; plus the head
    assert len(norms) == 6 * tiny.cfg.n_layers + 1
    assert all(m.weight is None and not list(m.parameters()) for m in norms)
    one_d = [k for k, v in tiny.state_dict().items() if v.ndim == 1]
    assert one_d and all(k.endswith(("q_norm.weight", "k_norm.weight")) for k in one_d)


def test_layer_norm_is_plain_eps_1e5_and_lvsm_weight_has_no_bias():
    d = 64
    # variance ~1e-6, so eps = 1e-5 dominates: eps 1e-6 or 1e-12 would give other numbers
    x = 1e-3 * torch.randn(4, 10, d)
    ref = (x.double() - x.double().mean(-1, keepdim=True)) / torch.sqrt(
        x.double().var(-1, unbiased=False, keepdim=True) + 1e-5
    )
    got = LayerNorm(d)(x)
    assert float(ref.abs().max()) > 0.1
    assert _maxdiff(got, ref) <= 1e-4
    wrong_eps = (x.double() - x.double().mean(-1, keepdim=True)) / torch.sqrt(
        x.double().var(-1, unbiased=False, keepdim=True) + 1e-6
    )
    assert _maxdiff(got, wrong_eps) > 1e-2
    affine = LayerNorm(d, affine=True)
    with torch.no_grad():
        affine.weight.copy_(0.5 + torch.rand(d))
    assert [n for n, _ in affine.named_parameters()] == ["weight"]
    assert _maxdiff(affine(x), ref * affine.weight.double()) <= 1e-4


@pytest.mark.parametrize("module_dtype", [torch.float32, torch.float16])
def test_rms_norm_computes_in_float32_and_casts_back(module_dtype):
    dh = 64
    norm = RMSNorm(dh)
    with torch.no_grad():
        norm.weight.copy_(0.5 + 1.5 * torch.rand(dh))
    norm = norm.to(module_dtype)
    # magnitudes where x^2 overflows fp16 (> 65504): an fp16 computation gives inf/0 here
    x = (
        torch.randn(8, 5, dh) * torch.tensor([1.0, 30.0, 300.0, 1000.0]).repeat(2)[:, None, None]
    ).half()
    y = norm(x)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    assert torch.equal(y, norm(x.float()).half())  # the same as fp32 computation cast back
    xd = x.double()
    ref = xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight.detach().double()
    assert float(ref.abs().max()) > 1.0
    assert _maxdiff(y, ref) <= 2**-10 * float(ref.abs().max())  # one fp16 rounding
    naive = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight.half()
    assert not torch.isfinite(naive).all() or _maxdiff(naive, ref) > 1e-2  # what fp32 avoids


def test_gelu_is_exact_erf(tiny):
    act = tiny.input_self_attn_blocks[0].mlp.mlp[1]
    x = torch.linspace(-5, 5, 2001, dtype=torch.float64)
    exact = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    tanh_approx = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert _maxdiff(exact, tanh_approx) > 1e-4  # the test can tell the two apart
    assert _maxdiff(act(x), exact) <= 1e-12
    mlp = tiny.self_cross_blocks[0].mlp
    h = torch.randn(3, 7, tiny.cfg.d_model)
    w0, w2 = mlp.mlp[0].weight.double(), mlp.mlp[2].weight.double()
    pre = h.double() @ w0.T
    ref = (0.5 * pre * (1 + torch.erf(pre / math.sqrt(2)))) @ w2.T
    with torch.no_grad():
        assert _maxdiff(mlp(h), ref) <= ATOL


# -------------------------------------------------------------------------- FLOPs


def _measured_flops(fn, model) -> int:
    """FLOPs of the matmuls ``fn`` runs (explicit attention, so they are all counted)."""
    counter = FlopCounterMode(display=False)
    with explicit_attention(model), torch.no_grad(), counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("n_views, n_targets", [(1, 1), (3, 2), (5, 4)])
def test_count_flops_equals_the_matmuls_the_model_runs(tiny, n_views, n_targets):
    cfg, s = tiny.cfg, tiny.cfg.image_size
    flops = efficient_lvsm.count_flops(cfg, n_views, n_targets)
    assert (
        _measured_flops(lambda: tiny.encode_view(torch.rand(1, 9, s, s)), tiny) == flops["encode"]
    )
    kv = [
        (torch.randn(1, n_views * cfg.tokens_per_view, cfg.n_heads, cfg.head_dim),) * 2
        for _ in range(cfg.n_layers)
    ]
    assert (
        _measured_flops(lambda: tiny.render(torch.rand(1, n_targets, 6, s, s), kv), tiny)
        == flops["decode"]
    )


@pytest.mark.parametrize("n_views, n_targets", [(1, 1), (3, 2)])
def test_lvsm_count_flops_equals_the_matmuls_the_model_runs(n_views, n_targets):
    model = build_model("lvsm-tiny")[0]
    s = model.cfg.image_size
    measured = _measured_flops(
        lambda: model(torch.rand(1, n_views, 9, s, s), torch.rand(1, n_targets, 6, s, s)), model
    )
    assert measured == lvsm.count_flops(model.cfg, n_views, n_targets)


@pytest.mark.parametrize("preset", ["tiny", "small", "res256"])
def test_count_flops_scaling(preset):
    cfg = PRESETS[preset]
    f = {(v, t): efficient_lvsm.count_flops(cfg, v, t) for v in (1, 2, 3, 8) for t in (1, 2, 5)}
    for v in (1, 2, 3, 8):
        for t in (2, 5):
            assert f[v, t]["decode"] == t * f[v, 1]["decode"]  # linear in targets
        assert len({f[v, t]["encode"] for t in (1, 2, 5)}) == 1  # encoding ignores targets
    # the decoder term is affine in the number of cached views, slope = cross-attention QK^T + PV
    slope = 4 * cfg.n_layers * cfg.tokens_per_view**2 * cfg.d_model
    for t in (1, 2, 5):
        assert f[2, t]["decode"] - f[1, t]["decode"] == t * slope
        assert f[8, t]["decode"] - f[3, t]["decode"] == 5 * t * slope
    assert len({f[v, 1]["encode"] for v in (1, 2, 3, 8)}) == 1
    # LVSM decoder-only: grows quadratically in views, Efficient-LVSM's render linearly
    lcfg = {
        "tiny": LVSM_PRESETS["lvsm-tiny"],
        "small": LVSM_PRESETS["lvsm-small"],
        "res256": LVSM_PRESETS["lvsm-paper"],
    }[preset]
    l1, l2, l3 = (lvsm.count_flops(lcfg, v, 1) for v in (8, 16, 24))
    e1, e2, e3 = (efficient_lvsm.count_flops(cfg, v, 1)["decode"] for v in (8, 16, 24))
    assert l3 - 2 * l2 + l1 > 0 and e3 - 2 * e2 + e1 == 0


def test_mixed_fp16_model_stays_within_1e2_of_fp32(tiny, rng):
    """The fp16 deployment precision (fp16 weights and matmuls, fp32 residual stream and
    norms, fp16 K/V) renders within 1e-2 of fp32 in PyTorch too."""
    import copy

    half = layers.mixed_fp16(copy.deepcopy(tiny))
    size = tiny.cfg.image_size
    views, targets = posed_views(rng, 3, size), target_rays(rng, 2, size)[None]
    with torch.no_grad():
        kv16 = half.encode_view(views.half())
        kv32 = tiny.encode_view(views)
        assert {t.dtype for pair in kv16 for t in pair} == {torch.float16}
        ref = tiny(views[None], targets)
        got = half(views.half()[None], targets.half())
    peak = max(float(t.abs().max()) for pair in kv32 for t in pair)
    kv_err = max(_maxdiff(a, b) for p16, p32 in zip(kv16, kv32) for a, b in zip(p16, p32))
    assert 0 < kv_err <= 1e-2 * max(1.0, peak)
    _assert_not_flat(ref)
    assert 0 < _maxdiff(got, ref) <= 1e-2
