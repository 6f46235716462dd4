"""gcl-train --set KEY.SUB=VALUE: nested recipe values from the command line, checked like the recipe's."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from test_train_data import make_shards
from test_train_run import _recipe

os.environ["HF_HUB_OFFLINE"] = "1"

from gcl.errors import UserError  # noqa: E402
from gcl.train.cli import main  # noqa: E402
from gcl.train.config import load_config  # noqa: E402


def _load(*sets):
    return load_config("cifar10/simclr", {"shards": ("a.tar",)}, sets=sets)


def test_nested_values_and_list_entries_are_set():
    cfg = _load("method_kwargs.temperature=0.3", "augmentations.0.min_scale=0.2", "optimizer.name=sgd",
                "mean=[0.5, 0.5, 0.5]", "augmentations.1.min_scale=0.5")
    assert cfg.method_kwargs["temperature"] == 0.3 and cfg.optimizer.name == "sgd" and cfg.mean == (0.5, 0.5, 0.5)
    assert [a.min_scale for a in cfg.augmentations] == [0.2, 0.5]  # index 1 added a second entry
    assert cfg.augmentations[1].crop_size == 32  # the added entry's other fields are defaults
    assert cfg.method_kwargs["proj_output_dim"] == 256  # the recipe's other method_kwargs stay
    assert _load("augmentations.0.min_scale=0.2", "augmentations.0.min_scale=0.3").augmentations[0].min_scale == 0.3


@pytest.mark.parametrize("item,message", [
    ("optimizer.lrr=0.1", "unknown key(s) lrr in"),  # names the valid keys at that level
    ("tempreature=0.3", "allowed: method, backbone"),
    ("epochs=ten", "--set epochs: takes an integer, not 'ten'"),
    ("cifar_stem=1", "--set cifar_stem: takes true or false"),
    ("augmentations.3.min_scale=0.2", "augmentations is a list of 1; use an index from 0 to 1"),
    ("output=/elsewhere", "set with --output, not --set"),
    ("shards_base=pipe:curl x", "set with --shards-base, not --set"),
    ("shards=pipe:curl x", "never a command"),
    ("temperature", "write KEY=VALUE"),
])
def test_bad_sets_are_one_line_errors(item, message):
    with pytest.raises(UserError) as err:
        _load(item)
    assert message in str(err.value) and "\n" not in str(err.value)
    if message.startswith("unknown key(s) lrr"):
        assert "allowed: name, lr, weight_decay" in str(err.value)


def test_set_lands_in_run_json_and_bad_ones_stop_before_work(tmp_path):
    shards = make_shards(tmp_path / "s", n=32, per_shard=16)
    base = ["--shards", str(shards), "--recipe", _recipe(tmp_path), "--backbone", "resnet20", "--batch-size", "8",
            "--epochs", "1", "--max-steps-per-epoch", "1"]
    out = tmp_path / "run"
    r = CliRunner().invoke(main, base + ["--output", str(out), "--set", "method_kwargs.temperature=0.3",
                                         "--set", "augmentations.0.min_scale=0.2"])
    assert r.exit_code == 0, r.output
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["method_kwargs"]["temperature"] == 0.3 and config["augmentations"][0]["min_scale"] == 0.2
    for item, words in (("method_kwargs.tempreture=0.3", "unknown method_kwargs tempreture for simclr; allowed:"),
                        ("epochs=ten", "takes an integer")):
        bad = tmp_path / f"bad-{len(words)}"
        r = CliRunner().invoke(main, base + ["--output", str(bad), "--set", item])
        assert r.exit_code != 0 and words in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and not bad.exists()
    # a resumed run keeps its values: another --set is refused, the same one is not
    r = CliRunner().invoke(main, ["--output", str(out), "--resume", "--set", "method_kwargs.temperature=0.5"])
    assert r.exit_code != 0 and "recipe key method_kwargs.temperature 0.5 (the run's: 0.3)" in r.output, r.output
    r = CliRunner().invoke(main, ["--output", str(out), "--resume", "--set", "method_kwargs.temperature=0.3"])
    assert r.exit_code == 0 and "already finished" in r.output, r.output
