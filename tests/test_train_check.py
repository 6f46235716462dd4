"""python -m gcl.train.check: gcl-train's verdict on a recipe without training (used by gcl-eval study)."""

from __future__ import annotations

import yaml

from gcl.train.check import check_recipe, main
from gcl.train.config import RECIPES_DIR


def _recipe(tmp_path, name, data) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_check_accepts_bundled_recipes_and_names_each_problem(tmp_path, capsys):
    assert check_recipe(str(RECIPES_DIR / "cifar10" / "supcon.yaml")) is None
    assert "unknown key(s) learning_rate" in check_recipe(_recipe(tmp_path, "a", {"learning_rate": 0.1}))
    assert "unknown backbone 'resnet99'" in check_recipe(_recipe(tmp_path, "b", {"backbone": "resnet99"}))
    assert check_recipe(_recipe(tmp_path, "t", {"backbone": "timm:resnet10t"})) is None
    assert "add --no-cifar-stem" in check_recipe(_recipe(tmp_path, "u", {"backbone": "timm:convnext_atto"}))
    msg = check_recipe(_recipe(tmp_path, "c", {"method": "supcon", "method_kwargs": {"tau": 1}}))
    assert "unknown method_kwargs tau for supcon" in msg
    assert "need the multi-positive loss: add --method supcon" in check_recipe(_recipe(tmp_path, "d", {"family_views": 3}))
    good = str(RECIPES_DIR / "cifar10" / "simclr.yaml")
    assert main([good, _recipe(tmp_path, "e", {"epochs": 0})]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"ok {good}" and out[1].startswith("error ") and "key 'epochs': must be greater than or equal to 1, got 0" in out[1]


def test_flops_per_family_scale_with_views_and_leave_the_model_untouched(tmp_path, capsys):
    import torch

    from gcl.train.config import family_count, load_config
    from gcl.train.methods import get_method

    study = yaml.safe_load((RECIPES_DIR / "cifar10" / "simclr_study.yaml").read_text())
    two = _recipe(tmp_path, "two", study)
    three = _recipe(tmp_path, "three", dict(study, method="supcon", family_views=3, members=["orig", "orig", "gen"]))
    longer = _recipe(tmp_path, "longer", dict(study, epochs=40))
    assert main(["--flops", two, three, longer]) == 0
    lines = capsys.readouterr().out.splitlines()
    flops = [int(ln.rpartition("train_flops_per_image=")[2]) for ln in lines]
    assert lines[0].startswith(f"ok {two} ")
    # ResNet-20 + 512-d projector: ~245 MFLOP per view forward+backward at 32 px, 20 epochs, 2 views
    assert 8e9 < flops[0] < 12e9
    assert abs(flops[1] / flops[0] - 1.5) < 0.01  # a third view costs half again (the loss is a sliver)
    assert flops[2] == 2 * flops[0]  # twice the epochs, twice the work

    cfg = load_config(_recipe(tmp_path, "moco", dict(study, method="mocov2plus", method_kwargs={})),
                      {"shards": ("x.json",)})
    model = get_method(cfg.method)(cfg.to_dict(), 1, 0, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.flops_per_family(family_count(cfg)) > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # queue, pointer, weights, BN statistics
    assert all(p.grad is None for p in model.parameters())
