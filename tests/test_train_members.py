"""--members (exact member types per family) and gen_augmentations (their own handcrafted aug)."""

import os

import pytest
import torch
import yaml
from click.testing import CliRunner

from test_train_data import _cfg, make_shards

os.environ["HF_HUB_OFFLINE"] = "1"

from gcl.train.cli import main  # noqa: E402
from gcl.train.config import AugConfig, ConfigError, load_config  # noqa: E402
from gcl.train.data import DataError, build_train_loader  # noqa: E402
from gcl.train.methods import get_method  # noqa: E402


def _batches(loader):
    return list(loader)  # a fresh loader starts at LoaderPosition() (epoch 0, rank 0 of 1)


def test_members_choose_exact_types_and_distinct_generated_views(tmp_path):
    m = make_shards(tmp_path / "s", n=48, per_shard=24, views=2)
    loader, _ = build_train_loader(_cfg(shards=[str(m)], method="supcon", members=["orig", "gen", "gen"]), world=1)
    for b in _batches(loader):
        assert len(b["views"]) == 3 and b["views"][0].shape == (8, 3, 32, 32)
        assert b["generated"].tolist() == [[False, True, True]] * 8
        assert not torch.equal(b["views"][1], b["views"][2])  # two different generated images
    loader, _ = build_train_loader(_cfg(shards=[str(m)], method="supcon", members=["orig"] * 3), world=1)
    for b in _batches(loader):
        assert not b["generated"].any() and torch.equal(b["views"][0], b["views"][2])  # same image, 3 copies
    with pytest.raises(DataError, match="would repeat"):
        build_train_loader(_cfg(shards=[str(m)], method="supcon", members=["gen", "gen", "gen"]), world=1)
    with pytest.raises(DataError, match="would repeat"):  # e.g. --gen-prob 1 --family-views 3, K=2
        build_train_loader(_cfg(shards=[str(m)], method="supcon", family_views=3, gen_prob=1.0), world=1)


@pytest.mark.parametrize("opts,message", [
    ({"members": "orig,gen,gen", "method": "simclr"}, "need the multi-positive loss"),
    ({"members": "orig,fake"}, "key 'members\\[1\\]': must be 'orig', 'gen' or 'gen\\?', got 'fake'"),
    ({"members": "orig"}, "at least 2"),
    ({"members": "orig,gen", "pairing": "orig+gen"}, "drop --pairing"),
    ({"members": "orig,orig,gen", "method": "supcon", "family_views": 4}, "disagrees"),
])
def test_member_option_errors(opts, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, {"shards": ("x.json",), **opts})


def test_gen_augmentations_recipe_key_and_routing(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"method": "supcon", "backbone": "resnet20", "members": ["orig", "orig", "gen"],
                                      "gen_augmentations": {"min_scale": 1.0, "gray_scale_prob": 1.0,
                                                            "color_jitter_prob": 0.0, "horizontal_flip_prob": 0.0}}))
    cfg = load_config(str(recipe), {"shards": ("x.json",)})
    assert cfg.members == ["orig", "orig", "gen"] and cfg.gen_augmentations.gray_scale_prob == 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"gen_augmentations": {"grey": 1.0}}))
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(str(bad), {"shards": ("x.json",)})
    cfg.augmentations = [AugConfig(gray_scale_prob=0.0, color_jitter_prob=0.0)]
    model = get_method("supcon")(cfg.to_dict(), steps_per_epoch=1)
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    generated = torch.tensor([[False, False, True]] * 3 + [[False, False, False]] * 3)
    views = model.augment({"views": [x, x, x], "generated": generated})

    def gray(v):
        return (v[:, 0] - v[:, 1]).abs().flatten(1).amax(1) < 1e-6

    assert gray(views[2]).tolist() == [True] * 3 + [False] * 3
    assert not gray(views[0]).any() and not gray(views[1]).any()


def test_supcon_run_with_extra_generated_positive(tmp_path):
    m = make_shards(tmp_path / "s", n=32, per_shard=16, views=2)
    recipe = tmp_path / "fast.yaml"
    recipe.write_text(yaml.safe_dump({"method_kwargs": {"proj_hidden_dim": 64, "proj_output_dim": 32},
                                      "num_workers": 1, "shuffle_buffer": 20, "optimizer": {"name": "sgd", "lr": 0.1},
                                      "gen_augmentations": {"min_scale": 0.5}}))
    r = CliRunner().invoke(main, ["--shards", str(m), "--recipe", str(recipe), "--method", "supcon", "--backbone",
                                  "resnet20", "--members", "orig,orig,gen", "--batch-size", "8", "--epochs", "1",
                                  "--output", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    cfg = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["gcl"]["config"]
    assert cfg["members"] == ["orig", "orig", "gen"] and cfg["gen_augmentations"]["min_scale"] == 0.5
