"""Training (viewrt.models.train) and the shipped demo weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from viewrt.data import synthetic_cameras, synthetic_views
from viewrt.errors import ViewrtError
from viewrt.models import TRAINED_WEIGHTS, build_model, load_checkpoint
from viewrt.models.train import HELDOUT_SEED0, VAL_SEED0, Recipe, evaluate, scene_seed, train


def _tiny(**kw) -> Recipe:
    base = dict(
        image_size=32,
        patch_size=8,
        d_model=64,
        n_layers=1,
        head_dim=32,
        n_scenes=12,
        steps=30,
        batch=4,
        lr=2e-3,
        min_lr=1e-4,
        warmup=3,
        val_scenes=2,
        eval_every=10,
        ckpt_every=10,
        bf16=False,
        threads=1,
        max_views=2,
        cycles=[],
    )
    base.update(kw)
    return Recipe(**base)


def _losses(log):
    return [r["loss"] for r in log["log"] if "loss" in r]


def test_tiny_training_lowers_loss_and_writes_a_strict_checkpoint(tmp_path):
    recipe = _tiny()
    log = train(recipe, tmp_path / "run", resume=False, echo=lambda s: None)
    losses = _losses(log)
    assert len(losses) == recipe.steps
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
    model, report = load_checkpoint(tmp_path / "run" / "checkpoint.pt", recipe.model_config())
    assert report.family == "efficient-lvsm"
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == recipe.steps and "optimizer" in state
    saved = json.loads((tmp_path / "run" / "log.json").read_text())
    assert (
        saved["recipe"]["seed"] == recipe.seed
        and (tmp_path / "run" / "curves.png").stat().st_size > 0
    )
    load_checkpoint(tmp_path / "run" / "model.safetensors", recipe.model_config())


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    recipe = _tiny(steps=12, ckpt_every=100, eval_every=100)
    train(recipe, tmp_path / "a", resume=False, echo=lambda s: None)
    train(recipe, tmp_path / "b", resume=False, echo=lambda s: None, until=5)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 5
    msgs = []
    train(recipe, tmp_path / "b", resume=True, echo=msgs.append)
    assert any("resuming" in m for m in msgs)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_resume_refuses_another_recipe(tmp_path):
    train(_tiny(steps=2), tmp_path, resume=False, echo=lambda s: None)
    with pytest.raises(ViewrtError, match="another recipe"):
        train(_tiny(steps=2, d_model=128, head_dim=32), tmp_path, resume=True, echo=lambda s: None)


def test_seed_ranges_do_not_overlap():
    last_train = scene_seed(0, 499_999)
    assert scene_seed(1, 0) > HELDOUT_SEED0 + 99_999
    assert last_train < VAL_SEED0 < HELDOUT_SEED0
    with pytest.raises(ViewrtError):
        _tiny(n_scenes=500_000).check()


def test_multiview_style_keeps_cameras_and_changes_appearance():
    a, ca, _ = synthetic_views(3, 32, 7, "classic")
    b, cb, _ = synthetic_views(3, 32, 7, "multiview")
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(ca, synthetic_cameras(3, 32, 7)[0])
    assert np.abs(a - b).mean() > 0.01
    with pytest.raises(ViewrtError, match="style"):
        synthetic_views(2, 16, 0, "fancy")


def test_shipped_demo_weights_render_and_use_more_views():
    """The committed demo weights, on held-out scenes: far above the mean-colour oracle,
    and better with 4 input views than with 1."""
    assert TRAINED_WEIGHTS["demo"].is_file()
    model, report = build_model("demo")
    assert report is not None and report.path.endswith("demo.safetensors")
    res = evaluate(model, n_scenes=6)
    assert res["psnr"][3] >= res["oracle_psnr"] + 5.0, res
    assert res["psnr"][3] > res["psnr"][0], res


def test_make_train_recipe_is_the_demo_preset():
    from viewrt.models import PRESETS

    assert Recipe().model_config() == PRESETS["demo"]


def test_train_cli_user_error_is_one_line(tmp_path):
    from click.testing import CliRunner

    from viewrt.cli import main

    res = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--steps", "0"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "--steps" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_demo_preset_exports_and_validates(tmp_path):
    from click.testing import CliRunner

    from viewrt.cli import main

    res = CliRunner().invoke(
        main,
        [
            "export",
            "--preset",
            "demo",
            "--out",
            str(tmp_path / "m"),
            "--max-views",
            "4",
            "--seed",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["checkpoint"].endswith("demo.safetensors")
    assert (
        manifest["validation"]["max_abs_error"]["images"] <= manifest["validation"]["atol"] <= 1e-4
    )


def test_explicit_steps_are_the_whole_run():
    from viewrt.models.train import demo_recipe

    r = demo_recipe(steps=2, autocast="off")
    assert r.total_steps == 2 and not r.cycles  # no warm restart added on top of --steps
    assert demo_recipe(autocast="off").total_steps > 2  # the shipped recipe keeps its restart cycle


def test_mixed_style_pool_alternates_styles():
    from viewrt.models.train import _render_scenes, scene_style

    assert [scene_style("mixed", k) for k in range(4)] == [
        "classic",
        "multiview",
        "classic",
        "multiview",
    ]
    assert scene_style("classic", 1) == "classic"
    pool = _render_scenes([5, 6], 2, 16, "mixed", "x")
    for k, seed in enumerate((5, 6)):
        own = synthetic_views(2, 16, seed, ("classic", "multiview")[k])[0]
        np.testing.assert_allclose(pool["images"][k] / 255.0, own, atol=0.5 / 255 + 1e-9)
    with pytest.raises(ViewrtError, match="style"):
        _tiny(style="fancy").check()


def test_init_starts_from_the_given_weights(tmp_path):
    """A fine-tune starts from ``init``: its first validation equals the given weights'."""
    first = train(_tiny(steps=3), tmp_path / "a", resume=False, echo=lambda s: None)
    weights = tmp_path / "a" / "model.safetensors"
    ft = _tiny(steps=1, init=str(weights), lr=1e-12, min_lr=1e-12, style="mixed", eval_every=1)
    log = train(ft, tmp_path / "b", resume=False, echo=lambda s: None)
    start, _ = load_checkpoint(weights, ft.model_config())
    end, _ = load_checkpoint(tmp_path / "b" / "model.safetensors", ft.model_config())
    for k, v in start.state_dict().items():
        torch.testing.assert_close(end.state_dict()[k], v, atol=1e-6, rtol=0)
    assert log["recipe"]["init"] == str(weights) and first["recipe"]["init"] is None
