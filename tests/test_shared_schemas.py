"""Shared files are parsed into typed schemas before any value is used: the attack cases of the
third hostile-input round (alias bombs, unchecked recipe and run.json values, corrupt or
list-valued plan.json / manifest / stats.json) each end in one line, quickly."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcl.errors import UserError


def alias_bomb(top_key: str) -> str:
    """About 1.3 KB of YAML that expands to 9^9 items when walked (9 levels of 9 aliases)."""
    lines = ["x0: &lvl_level_0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 9):
        refs = ", ".join([f"*lvl_level_{i - 1}"] * 9)
        lines.append(f"x{i}: &lvl_level_{i} [{refs}]")
    lines.append(f"{top_key}: *lvl_level_8")
    return "\n".join(lines) + "\n"


def _one_line(result, *needles: str) -> str:
    assert result.exit_code not in (0, None) and "Traceback" not in result.output, result.output[-2000:]
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.output[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_a_yaml_alias_bomb_is_one_line_within_a_second(tmp_path):
    from gcl.eval.study.config import StudyError, read_yaml
    from gcl.train.check import check_recipe
    from gcl.train.cli import main

    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(alias_bomb("method_kwargs"))
    assert 1000 < len(recipe.read_bytes()) < 1600
    t0 = time.perf_counter()
    result = CliRunner().invoke(main, ["--recipe", str(recipe), "--shards", "x.json", "--output", str(tmp_path / "r")])
    _one_line(result, "bomb.yaml", "aliases")
    assert "aliases" in check_recipe(str(recipe))
    study = tmp_path / "study.yaml"
    study.write_text(alias_bomb("seeds"))
    with pytest.raises(StudyError, match="aliases"):
        read_yaml(study, "study file")
    assert time.perf_counter() - t0 < 1.0


def test_small_aliases_load_as_copies_and_bad_yaml_is_refused():
    import yaml

    from gcl.yamlsafe import safe_load

    assert safe_load("a: 1\nb: [1, {c: 2}]\n") == {"a": 1, "b": [1, {"c": 2}]}  # plain YAML loads as before
    shared = safe_load("a: &weak {k: [1]}\nb: *weak\n")  # a study file may name a block once and reuse it
    shared["a"]["k"].append(2)
    assert shared == {"a": {"k": [1, 2]}, "b": {"k": [1]}}  # two values, not one object in two places
    for text, message in (("a: 1\na: 2\n", "given twice"), ("[" * 5000 + "]" * 5000, "nested too deeply"),
                          ("a: " + "9" * 5000, "cannot be read"), ("a: &x [1, *x]\n", "contains it"),
                          (alias_bomb("a"), "expand the document past")):
        with pytest.raises(yaml.YAMLError, match=message):
            safe_load(text)


@pytest.mark.parametrize("recipe,key", [
    ("augmentations: [{crop_size: 100000}]", "augmentations[0].crop_size"),  # 480 GB of floats per batch
    ("augmentations: {crop_size: 0}", "augmentations[0].crop_size"),
    ("std: [0, 0, 0]", "std[0]"),  # a NaN loss, reported as done
    ("scheduler: {name: bogus}", "scheduler.name"),  # silently a constant lr
    ('cifar_stem: "no"', "cifar_stem"),  # was True
    ("accelerator: tpu", "accelerator"),
    ("precision: bogus", "precision"),
    ("mean: [1, 2]", "mean"),
    ('optimizer: {lr: "0.4"}', "optimizer.lr"),
    ("epochs: 2.5", "epochs"),
    ("seed: 4294967296", "seed"),  # Lightning would draw a random seed instead
    ("num_workers: 100000", "num_workers"),
    ("method_kwargs: {temperature: .nan}", "method_kwargs.temperature"),
])
def test_recipe_check_refuses_unchecked_values_in_one_line(tmp_path, capsys, recipe, key):
    from gcl.train.check import main

    path = tmp_path / "r.yaml"
    path.write_text(recipe + "\n")
    assert main([str(path)]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"error {path}: key '{key}'"), line


def test_every_bundled_recipe_still_loads():
    from gcl.train.check import main
    from gcl.train.config import RECIPES_DIR

    assert main([str(p) for p in sorted(RECIPES_DIR.glob("*/*.yaml"))]) == 0


@pytest.mark.parametrize("field,value,key", [
    ("epochs_done", float("inf"), "epochs_done"), ("epochs_done", "x", "epochs_done"),
    ("config.epochs", 2.5, "epochs"), ("config.batch_size", 4.5, "batch_size"), ("config.seed", "x", "seed"),
    ("config.optimizer.lr", "0.4", "optimizer.lr"), ("config.num_workers", 10**6, "num_workers"),
    ("sittings", [{"num_workers": 10**9}], "sittings[0].num_workers"), ("status", ["finished"], "status"),
])
def test_resume_refuses_a_tampered_run_json_in_one_line(tmp_path, field, value, key):
    from gcl.train.cli import main
    from gcl.train.config import TrainConfig

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"")
    info = {"config": TrainConfig(shards=["m.manifest.json"]).to_dict(), "status": "stopped", "epochs_done": 1}
    target, parts = info, field.split(".")
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = value
    (out / "run.json").write_text(json.dumps(info))
    result = CliRunner().invoke(main, ["--output", str(out), "--resume"])
    _one_line(result, "run.json", f"key '{key}'")


def test_a_study_result_with_a_nan_or_out_of_range_score_is_missing_or_left_out(tmp_path):
    from gcl.eval.study.result_schema import read_result

    good = json.loads(next(Path(__file__).resolve().parent.parent.glob("studies/*/runs/*.json")).read_text())
    path = tmp_path / "a-s0.json"
    path.write_text(json.dumps(good))
    assert read_result(path, good["arm"], good["seed"]) == (good, [])
    for key, value, kept, message in (("knn_top1", float("nan"), True, "knn_top1 = nan is not a top-1/top-5"),
                                      ("knn_top1", 250.0, True, "knn_top1 = 250.0 is not a top-1/top-5"),
                                      ("seed", "0", False, "seed: Input should be a valid integer"),
                                      ("train", [], False, "train: Input should be a valid dictionary")):
        path.write_text(json.dumps({**good, key: value}))
        record, notes = read_result(path, good["arm"], good["seed"])
        assert (record is not None) == kept and len(notes) == 1 and message in notes[0], notes
        if kept:
            assert key not in record  # a bad score is a missing score, never a number in a mean


@pytest.fixture(scope="module")
def synth_output(tmp_path_factory, cifar_test_npz, taef2_dir) -> Path:
    """A finished gcl-synth output folder: plan.json, one shard, its stats.json and the manifest."""
    from gcl.synth.cli import main

    out = tmp_path_factory.mktemp("synth") / "out"
    args = ["run", "--no-progress", "--model", str(taef2_dir), "--input", str(cifar_test_npz), "--limit", "4",
            "--resolution", "32", "--shard-size", "4", "--batch-size", "4", "--name", "s", "--output", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("file", ["plan.json", "s.manifest.json", "s-000000.stats.json"])
@pytest.mark.parametrize("content", ["[1, 2]", "{\"name\": ", "{\"shards\": {}}", "\"text\""])
def test_a_corrupt_or_list_valued_file_in_a_synth_output_is_one_line(tmp_path, synth_output, file, content):
    from gcl.synth.cli import main

    out = tmp_path / "out"
    shutil.copytree(synth_output, out)
    (out / file).write_text(content)
    if file == "s.manifest.json":
        result = CliRunner().invoke(main, ["verify", str(out / file)])
    else:
        result = CliRunner().invoke(main, ["status", str(out)])
    _one_line(result, file)


def test_loaders_raise_user_errors_only():
    """The schema readers' errors are UserErrors (each CLI prints them as one line)."""
    from gcl.manifest import ManifestError, StatsError
    from gcl.synth.plan import PlanMismatch
    from gcl.train.schema import ConfigError

    errors = (ManifestError, StatsError, PlanMismatch, ConfigError)
    assert all(issubclass(e, UserError) for e in errors)
