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
    msg = check_recipe(_recipe(tmp_path, "c", {"method": "supcon", "method_kwargs": {"tau": 1}}))
    assert "unknown method_kwargs tau for supcon" in msg
    assert "need the multi-positive loss: add --method supcon" in check_recipe(_recipe(tmp_path, "d", {"family_views": 3}))
    good = str(RECIPES_DIR / "cifar10" / "simclr.yaml")
    assert main([good, _recipe(tmp_path, "e", {"epochs": 0})]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"ok {good}" and out[1].startswith("error ") and "--epochs must be >= 1" in out[1]
