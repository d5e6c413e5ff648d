"""Strict checkpoint loading: the upstream layout and its variants load exactly; anything
that does not match fails with one ViewrtError that names the key, field or file."""

from __future__ import annotations

import os
import secrets

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from viewrt.errors import ViewrtError
from viewrt.models import (
    LVSM_PRESETS,
    PRESETS,
    EfficientLVSM,
    EfficientLVSMConfig,
    LVSMDecoderOnly,
    build_model,
    init_weights,
    load_checkpoint,
    save_upstream_checkpoint,
)  # fmt: skip
from viewrt.models.checkpoint import read_state_dict

TINY = PRESETS["tiny"]
EXTRA_KEYS = (  # non-model tensors found in upstream training checkpoints
    "loss_computer.perceptual_loss.vgg.0.weight",
    "_orig_mod.loss_computer.perceptual_loss.vgg.0.bias",
    "repa_projector.0.weight",
    "_orig_mod.repa_projector.2.weight",
)


class NotWeights:
    """A custom object: pickling it makes a checkpoint that is not weights-only."""

    def __init__(self):
        self.lr = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fresh(make=EfficientLVSM, cfg=TINY):
    """A model with freshly seeded weights, unlike the built-in seed-0 ones."""
    return init_weights(make(cfg), seed=secrets.randbits(31) + 1)


def _inputs(size: int, n_views: int = 3, n_targets: int = 2):
    views = torch.rand(1, n_views, 9, size, size) * 2 - 1
    targets = torch.randn(1, n_targets, 6, size, size)
    return views, targets


def _run(model, views, targets) -> torch.Tensor:
    with torch.no_grad():
        return model(views, targets)


def _assert_same_model(a, b) -> None:
    """Bit-identical weights and outputs (loading converts nothing in fp32)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    views, targets = _inputs(a.cfg.image_size)
    out_a, out_b = _run(a, views, targets), _run(b, views, targets)
    assert float(out_a.std()) > 1e-3
    assert torch.equal(out_a, out_b)


def _tiny_sd(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------- what loads


def test_upstream_layout_loads_strictly_and_reproduces_outputs(tmp_path):
    model = _fresh()
    extra = {k: torch.randn(4, 3) for k in EXTRA_KEYS}
    path = save_upstream_checkpoint(
        model, tmp_path / "efficient_lvsm_tiny.pt", compiled_prefix=True, extra=extra
    )

    raw = torch.load(path, weights_only=True)  # the layout really is upstream's
    assert {"model", "optimizer"} <= set(raw)
    assert all(k.startswith("_orig_mod.") or k in extra for k in raw["model"])

    loaded, report = load_checkpoint(path, TINY)
    assert report.family == "efficient-lvsm" and report.config == TINY
    assert sorted(report.ignored_keys) == sorted(EXTRA_KEYS)
    assert report.stripped_prefixes == ["_orig_mod."]
    assert "ignored 4 non-model keys" in report.summary() and str(path) in report.summary()
    _assert_same_model(model, loaded)

    built, build_report = build_model("tiny", str(path))
    assert build_report is not None and sorted(build_report.ignored_keys) == sorted(EXTRA_KEYS)
    _assert_same_model(model, built)
    # and not the built-in weights: a loader that ignored the file would fail here
    views, targets = _inputs(TINY.image_size)
    assert (
        float(
            (_run(built, views, targets) - _run(build_model("tiny")[0], views, targets)).abs().max()
        )
        > 1e-3
    )


@pytest.mark.parametrize("layout", ["bare", "module.", "module._orig_mod.", "state_dict", "fp16"])
def test_other_torch_layouts_load(tmp_path, layout):
    model = _fresh()
    sd = _tiny_sd(model)
    if layout == "bare":
        obj = sd
    elif layout == "state_dict":
        obj = {"state_dict": sd, "epoch": 3}
    elif layout == "fp16":
        obj = {"model": {k: v.half() for k, v in sd.items()}}
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())  # what loading fp16 weights into fp32 gives
    else:
        obj = {"model": {layout + k: v for k, v in sd.items()}}
    torch.save(obj, tmp_path / "ckpt.pth")
    loaded, report = load_checkpoint(tmp_path / "ckpt.pth", TINY)
    expected_prefixes = {
        "module.": ["module."],
        "module._orig_mod.": ["_orig_mod.", "module."],
    }.get(layout, [])
    assert report.stripped_prefixes == expected_prefixes and report.ignored_keys == []
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    _assert_same_model(model, loaded)


def test_safetensors_file_loads(tmp_path):
    model = _fresh()
    path = tmp_path / "model.safetensors"
    save_file({"_orig_mod." + k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded, report = build_model("tiny", str(path))
    assert report.stripped_prefixes == ["_orig_mod."]
    _assert_same_model(model, loaded)


def test_patch_size_is_inferred_from_the_tokenizer_weight(tmp_path):
    cfg4 = EfficientLVSMConfig(image_size=32, patch_size=4, d_model=64, n_layers=2, head_dim=32)
    model = _fresh(cfg=cfg4)
    assert model.rgbp_tokenizer[1].weight.shape == (64, 9 * 4 * 4)
    path = save_upstream_checkpoint(model, tmp_path / "patch4.pt")
    loaded, report = load_checkpoint(path, image_size=32)
    assert (
        report.config.patch_size == 4 and report.config == cfg4 and loaded.cfg.tokens_per_view == 64
    )
    _assert_same_model(model, loaded)
    with pytest.raises(ViewrtError, match=r"patch_size: checkpoint 4, expected 8"):
        build_model("tiny", str(path))
    with pytest.raises(ViewrtError, match="not a multiple of the checkpoint's patch 4"):
        load_checkpoint(path, image_size=30)


def test_head_dim_depth_and_width_are_inferred(tmp_path):
    cfg = EfficientLVSMConfig(
        image_size=16, patch_size=8, d_model=48, n_layers=3, head_dim=16, mlp_mult=2
    )
    path = save_upstream_checkpoint(_fresh(cfg=cfg), tmp_path / "odd.pt")
    _, report = load_checkpoint(path, image_size=16)
    assert report.config == cfg


def test_lvsm_decoder_only_round_trip(tmp_path):
    cfg = LVSM_PRESETS["lvsm-tiny"]
    model = _fresh(LVSMDecoderOnly, cfg)
    path = save_upstream_checkpoint(
        model, tmp_path / "lvsm.pt", extra={"loss_computer.lpips.weight": torch.ones(3)}
    )
    loaded, report = build_model("lvsm-tiny", str(path))
    assert isinstance(loaded, LVSMDecoderOnly)
    assert (
        report.family == "lvsm"
        and report.config == cfg
        and report.ignored_keys == ["loss_computer.lpips.weight"]
    )
    assert torch.equal(
        loaded.transformer_input_layernorm.weight, model.transformer_input_layernorm.weight
    )
    _assert_same_model(model, loaded)
    with pytest.raises(ViewrtError, match="holds a lvsm model, expected efficient-lvsm"):
        build_model("tiny", str(path))
    with pytest.raises(ViewrtError, match=r"d_model: checkpoint 64, expected 384"):
        build_model("lvsm-small", str(path))


# ---------------------------------------------------------------- what is refused


def _save_sd(tmp_path, sd, name="bad.pt"):
    path = tmp_path / name
    torch.save({"model": {"_orig_mod." + k: v for k, v in sd.items()}, "optimizer": {}}, path)
    return path


def test_missing_key_is_named(tmp_path):
    sd = _tiny_sd(_fresh())
    del sd["self_cross_blocks.1.cross_attn.fc.weight"]
    with pytest.raises(
        ViewrtError, match=r"missing keys: self_cross_blocks\.1\.cross_attn\.fc\.weight$"
    ):
        build_model("tiny", str(_save_sd(tmp_path, sd)))


def test_unexpected_key_is_named(tmp_path):
    sd = _tiny_sd(_fresh())
    sd["self_cross_blocks.0.cross_attn.to_q.bias"] = torch.zeros(64)
    with pytest.raises(
        ViewrtError, match=r"unexpected keys: self_cross_blocks\.0\.cross_attn\.to_q\.bias$"
    ):
        build_model("tiny", str(_save_sd(tmp_path, sd)))


def test_misshaped_key_is_named_with_both_shapes(tmp_path):
    sd = _tiny_sd(_fresh())
    sd["self_cross_blocks.1.cross_attn.to_q.weight"] = torch.zeros(64, 65)
    with pytest.raises(
        ViewrtError,
        match=r"mis-shaped keys: self_cross_blocks\.1\.cross_attn\.to_q\.weight \(64, 65\) \(expected \(64, 64\)\)",
    ):
        build_model("tiny", str(_save_sd(tmp_path, sd)))


def test_many_bad_keys_are_listed_briefly(tmp_path):
    sd = {
        k: v for k, v in _tiny_sd(_fresh()).items() if not k.startswith("self_cross_blocks.")
    }  # 22 keys
    with pytest.raises(
        ViewrtError,
        match=r"missing keys: (self_cross_blocks\.0\.[^,]*, ){11}self_cross_blocks\.1\.\S* \.\.\. and 10 more$",
    ) as err:
        build_model("tiny", str(_save_sd(tmp_path, sd)))
    assert "\n" not in str(err.value)


def test_architecture_mismatch_names_the_field(tmp_path):
    path = save_upstream_checkpoint(_fresh(), tmp_path / "tiny.pt")
    with pytest.raises(ViewrtError, match=r"d_model: checkpoint 64, expected 384") as err:
        build_model("small", str(path))
    assert "n_layers: checkpoint 2, expected 6" in str(err.value)
    deeper = EfficientLVSMConfig(image_size=32, patch_size=8, d_model=64, n_layers=3, head_dim=32)
    path3 = save_upstream_checkpoint(_fresh(cfg=deeper), tmp_path / "deeper.pt")
    with pytest.raises(ViewrtError, match=r"n_layers: checkpoint 3, expected 2"):
        build_model("tiny", str(path3))


def test_non_weights_pickle_is_refused(tmp_path):
    path = tmp_path / "with_object.pt"
    torch.save({"model": _tiny_sd(_fresh()), "config": NotWeights()}, path)
    with pytest.raises(ViewrtError, match=r"weights-only.*NotWeights"):
        build_model("tiny", str(path))


def test_missing_file(tmp_path):
    with pytest.raises(ViewrtError, match=r"nothere\.pt: no such file"):
        build_model("tiny", str(tmp_path / "nothere.pt"))
    with pytest.raises(ViewrtError, match="no such file"):
        load_checkpoint(tmp_path)  # a folder is not a checkpoint


def test_corrupt_files_cannot_be_read(tmp_path):
    rng = np.random.default_rng()
    # random bytes (after a 0 byte, which is no pickle opcode, so torch's unpickler fails
    # at once and never reads a GLOBAL from random text)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\0" + rng.bytes(4096))
    truncated = tmp_path / "truncated.pt"
    save_upstream_checkpoint(_fresh(), truncated)
    truncated.write_bytes(truncated.read_bytes()[: os.path.getsize(truncated) // 2])
    bad_st = tmp_path / "junk.safetensors"
    bad_st.write_bytes(rng.bytes(4096))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (junk, truncated, bad_st, empty):
        with pytest.raises(ViewrtError, match="cannot be read") as err:
            build_model("tiny", str(path))
        assert str(path) in str(err.value) and "weights-only" not in str(err.value)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("obj", [[torch.zeros(3)], {"model": {"w": 1.0}}, {}, {"model": {}}])
def test_files_without_a_state_dict_are_refused(tmp_path, obj):
    path = tmp_path / "nosd.pt"
    torch.save(obj, path)
    with pytest.raises(ViewrtError, match="holds no state dict"):
        build_model("tiny", str(path))


def test_unknown_model_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {"encoder.layers.0.weight": torch.zeros(4, 4)}}, path)
    with pytest.raises(ViewrtError, match="not a known model"):
        load_checkpoint(path)


def test_unknown_preset_is_refused():
    with pytest.raises(ViewrtError, match=r"unknown preset 'huge'.*tiny.*lvsm-tiny"):
        build_model("huge")


class _Shell:
    """Pickles to a call of os.system (what a malicious checkpoint does)."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        import os

        return (os.system, (self.cmd,))


def test_malicious_pickle_is_refused_for_safety_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _Shell(f"touch {marker}")}, path)
    with pytest.raises(
        ViewrtError, match=r"not weights-only: refused for safety \(it pickles posix\.system"
    ):
        read_state_dict(path)
    assert not marker.exists()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x04 not a checkpoint")
    with pytest.raises(ViewrtError, match="not a torch.save file, or corrupt"):
        read_state_dict(corrupt)
