"""Every key of the study file's schema with wrong types, NaN and infinities, negatives, huge
numbers and nesting: each file loads or is refused in one StudyError line naming the file, never
a traceback, never past 10 s. The keys come from the schema itself, so a new key is fuzzed too.
A shard set the schema accepts gives arguments gcl-synth parses to the same values."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gcl.eval.cli import main
from gcl.eval.study.config import StudyError, load_study
from gcl.eval.study.runs import SYNTH_CONFIG, synth_command, synth_config
from gcl.eval.study.schema import (ArmSpec, Decision, EvalSpec, MergeSet, PlotSpec, StudyFile, SynthOptions,
                                   TrainDefaults)
from gcl.synth.cli import run as synth_run_command
from synthcall import resolved

NESTED = json.loads("[" * 40 + "1" + "]" * 40)
VALUES = ["x", "", "--scheduler=tcp://198.51.100.7:8786", -1, 0, 1.5, 10**30, 1e308, -1e308, math.nan, math.inf,
          -math.inf, True, None, [1], {"a": 1}, NESTED]
BASE = {"name": "fuzz", "seeds": [0, 1], "control": "ctrl", "eval": {"bank": "b.npz", "test": "t.npz"},
        "shard_sets": {"s": {"generator": "taesd", "limit": 8, "views": 1}, "t": {"limit": 8},
                       "m": {"merge": ["s", "t"]}},
        "train": {"epochs": 1}, "arms": {"ctrl": {"shards": "s"}, "gen": {"shards": "s", "gen_prob": 0.5}},
        "plot": {}, "decision": {}}
# section -> (where its mapping sits in BASE, the schema class that defines its keys)
SECTIONS = {"top": ((), StudyFile), "eval": (("eval",), EvalSpec), "decision": (("decision",), Decision),
            "shard_set": (("shard_sets", "s"), SynthOptions), "merge": (("shard_sets", "m"), MergeSet),
            "arm": (("arms", "gen"), ArmSpec), "train": (("train",), TrainDefaults), "plot": (("plot",), PlotSpec)}
CASES = [(section, key) for section, (_, model) in SECTIONS.items() for key in model.model_fields]


def _with(where: tuple, key: str, value) -> dict:
    data = json.loads(json.dumps(BASE))
    target = data
    for part in where:
        target = target[part]
    target[key] = value
    return data


def _check_synth_agrees(study, key: str, value, monkeypatch) -> None:
    """gcl-synth reads an accepted value, through the set's --config file, as that value."""
    if key == "reference":  # gcl-synth also checks that the file exists: a file check, not a type
        return
    folder = study.shard_dir("s")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SYNTH_CONFIG).write_text(json.dumps(synth_config(study.synth["s"])))
    cfg, said, code = resolved(synth_command(study, "s")[4:], monkeypatch)
    want = "<cifar10 train>" if key == "input" and value is None else value  # no input: gcl-synth's default
    assert code == 0 and getattr(cfg, key) == want, (key, value, said)


@pytest.mark.parametrize("section,key", CASES)
def test_every_study_key_with_hostile_values(tmp_path, monkeypatch, section, key):
    where, _ = SECTIONS[section]
    path = tmp_path / "study.yaml"
    for value in VALUES:
        data = _with(where, key, value)
        data["output"] = data["output"] if key == "output" and section == "top" else str(tmp_path / "out")
        path.write_text(yaml.safe_dump(data))
        t0 = time.perf_counter()
        try:
            study = load_study(path)
        except StudyError as exc:
            line = str(exc)
            assert "\n" not in line and line, (key, value, line)
            assert line.startswith(f"{path}: ") or line.startswith(f"study file {path} "), line
        else:
            if section == "shard_set":
                _check_synth_agrees(study, key, value, monkeypatch)
        assert time.perf_counter() - t0 < 10, (key, value)


@pytest.mark.parametrize("value", [math.nan, -5, 1.5, "3", 10**30, [1], {"k": 1}])
def test_the_command_says_one_line_for_a_bad_eval_limit(tmp_path, value):
    data = _with(("eval",), "limit_bank", value)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    r = CliRunner().invoke(main, ["study", str(path), "--dry-run"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output[-2000:]
    assert len(r.output.strip().splitlines()) == 1 and "eval: limit_bank" in r.output and str(path) in r.output


def test_unknown_and_non_text_keys_in_every_section(tmp_path):
    path = tmp_path / "study.yaml"
    for section, (where, _) in SECTIONS.items():
        if section in ("arm", "train"):  # their other keys are recipe keys, which gcl-train checks
            continue
        for key in ("bogus", 7, "scheduler=tcp://198.51.100.7:8786"):
            data = _with(where, "__placeholder__", 1)
            target = data
            for part in where:
                target = target[part]
            target[key] = target.pop("__placeholder__")
            path.write_text(yaml.safe_dump(data))
            with pytest.raises(StudyError) as info:
                load_study(path)
            assert "unknown key(s)" in str(info.value) or "a merged set takes only" in str(info.value), info.value
            assert "\n" not in str(info.value)


def test_the_fuzz_base_file_loads(tmp_path):
    """The cases above change one key of a file that loads: each refusal is that key's."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(dict(BASE, output=str(tmp_path / "out"))))
    study = load_study(path)
    assert set(study.shard_sets) == {"s", "t", "m"} and isinstance(study.synth["m"], MergeSet)
    assert Path(study.output) == tmp_path / "out"


def test_the_shard_set_schema_and_gcl_synth_run_name_the_same_options():
    """Every gcl-synth run option is a --config key (the schema a study's shard sets are parsed by)
    or one the command line keeps for itself, and every key is a gcl-synth option, so the two
    cannot drift."""
    from gcl.synthconfig import COMMAND_LINE_KEYS, SynthConfig

    cli = {{"input_": "input", "manifest_copy": "manifest"}.get(p.name, p.name) for p in synth_run_command.params
           if not getattr(p, "hidden", False)}  # a hidden option is an earlier name of a listed one
    assert set(SynthOptions.model_fields) == set(SynthConfig.model_fields)
    assert set(SynthConfig.model_fields) == cli - COMMAND_LINE_KEYS - {"config_file"}, cli ^ set(SynthConfig.model_fields)
