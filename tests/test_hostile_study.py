"""Hostile study files and result files: nothing in a study file becomes a gcl-synth flag of its
own choosing, data sets compare by identity, values are typed and finite, tampered results are
left out with a note, and a YAML alias bomb is one line in well under a second."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

os.environ["HF_HUB_OFFLINE"] = "1"

from gcl.eval.cli import main  # noqa: E402
from gcl.eval.study.config import StudyError, load_study  # noqa: E402
from gcl.eval.study.report import format_report, load_results, selection_lines, summarize, write_report  # noqa: E402
from gcl.eval.study.runs import SYNTH_CONFIG, synth_command, synth_config  # noqa: E402
from synthcall import resolved  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ATTACKER = "tcp://198.51.100.7:8786"


def _npz(path: Path, n: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8), labels=np.arange(n) % 4)
    return path


def _write(tmp_path: Path, data: dict, text: str | None = None) -> Path:
    path = tmp_path / "study" / "study.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else yaml.safe_dump(data))
    return path


def _base(tmp_path: Path, **changes) -> dict:
    data = {"name": "hostile", "seeds": [0, 1], "control": "ctrl", "output": str(tmp_path / "out"),
            "eval": {"bank": "b.npz", "test": "t.npz"},
            "shard_sets": {"s": {"generator": "taesd", "limit": 8, "views": 1}},
            "train": {"epochs": 1, "batch_size": 8},
            "arms": {"ctrl": {"shards": "s", "gen_prob": 0}, "gen": {"shards": "s", "gen_prob": 0.5}}}
    data.update(changes)
    return data


def _refused(tmp_path: Path, message: str, **changes) -> str:
    with pytest.raises(StudyError) as info:
        load_study(_write(tmp_path, _base(tmp_path, **changes)))
    line = str(info.value)
    assert "\n" not in line and message in line, line
    return line


@pytest.mark.parametrize("options,message", [
    ({f"scheduler={ATTACKER}": True}, "unknown key(s) scheduler=tcp://"),
    ({"residual": f"--scheduler={ATTACKER}"}, "shard_sets:s: residual must be true or false"),
    ({"manifest=/any/file": True}, "unknown key(s) manifest=/any/file"),
    ({"residual": ["--overwrite", "--output=/elsewhere", "--name=victim"]}, "residual must be true or false"),
    ({"overwrite": True}, "shard_sets:s sets overwrite; the study runner chooses those itself"),
    ({"views": "2 --scheduler tcp://x"}, "views must be an integer"),
])
def test_a_shard_set_key_or_value_never_becomes_a_flag(tmp_path, options, message):
    sets = {"s": {"generator": "taesd", "limit": 8, "views": 1, **options}}
    line = _refused(tmp_path, message, shard_sets=sets)
    assert line.startswith(str(tmp_path / "study" / "study.yaml"))  # the line names the file


def test_text_values_stay_values_in_the_synthesis_call(tmp_path, monkeypatch):
    """A text option that reads like a flag stays that option's value: gcl-synth reads it from the
    set's config file (and would then reject it as a recipe), never as a scheduler, an output or an
    overwrite; the call itself carries the runner's flags only."""
    sets = {"s": {"generator": "taesd", "limit": 8, "recipe": f"--scheduler={ATTACKER}",
                  "model": "--overwrite", "input": "--output=/elsewhere"}}
    study = load_study(_write(tmp_path, _base(tmp_path, shard_sets=sets)))
    folder = study.shard_dir("s")
    folder.mkdir(parents=True)
    (folder / SYNTH_CONFIG).write_text(json.dumps(synth_config(study.synth["s"])))
    cmd = synth_command(study, "s")
    assert cmd[4:] == [f"--config={folder / SYNTH_CONFIG}", f"--output={folder}", "--name=s", "--no-progress"]
    cfg, said, code = resolved(cmd[4:], monkeypatch)
    assert code == 0, said
    assert cfg.scheduler is None and cfg.overwrite is False and cfg.manifest_copy is None
    assert (cfg.output, cfg.name) == (str(folder), "s")
    assert (cfg.recipe, cfg.model, cfg.input) == (f"--scheduler={ATTACKER}", "--overwrite", "--output=/elsewhere")
    # the command line's scheduler (gcl-eval study --scheduler) is the only way to pick one
    cfg, said, _ = resolved(synth_command(study, "s", "tcp://127.0.0.1:1")[4:], monkeypatch)
    assert cfg.scheduler == "tcp://127.0.0.1:1", said


def test_dry_run_prints_the_synthesis_and_training_calls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _npz(tmp_path / "b.npz"), _npz(tmp_path / "t.npz", 20)
    data = _base(tmp_path, shard_sets={"s": {"generator": "taesd", "input": "b.npz", "limit": 8, "views": 1,
                                              "recipe": "noise(strength=0.5)", "residual": True}})
    r = CliRunner().invoke(main, ["study", str(_write(tmp_path, data)), "--dry-run"])
    assert r.exit_code == 0, r.output
    out = r.output
    assert ('shard set s config: {"generator": "taesd", "input": "b.npz", "limit": 8, "recipe": "noise(strength=0.5)", '
            '"residual": true, "views": 1}' in out), out
    assert re.search(r"gcl-synth run --config=\S+/s/study-synth-config.json --output=\S+/s --name=s --no-progress", out)
    assert re.search(r"ctrl-s0: gcl-train --recipe=\S+ctrl-s0/recipe.yaml --shards=\S+ --output=\S+ --seed=0", out)
    assert "arm gen recipe: {" in out and '"gen_prob": 0.5' in out


@pytest.mark.parametrize("spell", [
    lambda d: f"{d}/data/../data/x.npz",  # climbs out and back
    lambda d: f"{d}//data//x.npz",  # doubled slashes
    lambda d: "data/x.npz",  # relative to the current folder
    lambda d: f"{d}/copy/x-copy.npz",  # another file with the same bytes
    lambda d: f"{d}/link.npz",  # a symlink to it
])
def test_validation_overlap_is_found_however_the_file_is_spelled(tmp_path, monkeypatch, spell):
    monkeypatch.chdir(tmp_path)
    real = _npz(tmp_path / "data" / "x.npz", 40)
    (tmp_path / "copy").mkdir()
    shutil.copy(real, tmp_path / "copy" / "x-copy.npz")
    (tmp_path / "link.npz").symlink_to(real)
    _npz(tmp_path / "t.npz", 20)
    ev = {"bank": str(real), "test": "t.npz", "val_queries": f"{spell(tmp_path)}[4:10]", "val_bank": f"{real}[20:40]"}
    sets = {"s": {"generator": "taesd", "input": str(real), "limit": 8}}
    _refused(tmp_path, "overlap shard set s's pretraining images", eval=ev, shard_sets=sets)
    ok = dict(ev, val_queries=f"{spell(tmp_path)}[8:20]")  # after the pretraining images: held out
    assert load_study(_write(tmp_path, _base(tmp_path, eval=ok, shard_sets=sets))).eval.val_queries == ok["val_queries"]
    bank_overlap = dict(ok, val_bank=f"{spell(tmp_path)}[15:40]")
    _refused(tmp_path, "every query would find itself", eval=bank_overlap, shard_sets=sets)
    test_is_val = dict(ok, bank="t.npz", test=spell(tmp_path), val_queries=f"{real}[8:20]")
    _refused(tmp_path, "held out of the test split", eval=test_is_val, shard_sets=sets)


def test_bank_equal_to_test_and_empty_or_reversed_slices_are_refused_at_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _npz(tmp_path / "data" / "x.npz")
    _refused(tmp_path, "share images", eval={"bank": "data/x.npz", "test": "./data/../data/x.npz"})
    _refused(tmp_path, "share images", eval={"bank": "data/x.npz[0:30]", "test": "data/x.npz[20:40]"})
    assert load_study(_write(tmp_path, _base(tmp_path, eval={"bank": "data/x.npz[0:20]", "test": "data/x.npz[20:40]"})))
    for bad in ("data/x.npz[20:10]", "data/x.npz[5:5]", "data/x.npz[:0]"):
        _refused(tmp_path, "holds no images", eval={"bank": "b.npz", "test": "t.npz", "val_queries": bad})
    # pretraining on the test images is the same leak as on validation images
    _refused(tmp_path, "test data/x.npz overlap shard set s", eval={"bank": "b.npz", "test": "data/x.npz"},
             shard_sets={"s": {"input": "./data/x.npz", "limit": 8}})


def test_per_class_sets_are_checked_against_the_rows_their_classes_reach(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _npz(tmp_path / "x.npz", 40)  # labels 0,1,2,3,0,1,...: two of each class end at row 8
    ev = {"bank": "x.npz[20:40]", "test": "t.npz", "val_queries": "x.npz[8:20]", "val_bank": "x.npz[20:40]"}
    assert load_study(_write(tmp_path, _base(tmp_path, eval=ev, shard_sets={"s": {"input": "x.npz", "per_class": 2}})))
    _refused(tmp_path, "overlap shard set s's pretraining images (rows 0-11 of x.npz)", eval=ev,
             shard_sets={"s": {"input": "x.npz", "per_class": 3}})


@pytest.mark.parametrize("section,change,message", [
    ("eval", {"limit_bank": -5}, "eval: limit_bank must be >= 1, got -5"),
    ("eval", {"limit_bank": math.nan}, "eval: limit_bank must be an integer"),
    ("eval", {"limit_bank": 1.5}, "eval: limit_bank must be an integer, got 1.5"),
    ("eval", {"limit_test": 3.5}, "eval: limit_test must be an integer, got 3.5"),
    ("eval", {"k": 1.5}, "eval: k must be an integer"),
    ("eval", {"batch_size": 2.5}, "eval: batch_size must be an integer"),
    ("eval", {"temperature": math.inf}, "eval: temperature must be a finite number"),
    ("eval", {"temperature": "0.07"}, "eval: temperature must be a number"),
    ("eval", {"linear": "no"}, "eval: linear must be true or false"),
    ("decision", {"select_min_delta": math.nan, "split": "val"}, "select_min_delta must be a finite number"),
    ("decision", {"select_min_delta": -math.inf, "split": "val"}, "select_min_delta must be a finite number"),
    ("decision", {"equivalence_margin": 0}, "decision: equivalence_margin must be > 0"),
    ("decision", {"equivalence_margin": math.nan}, "equivalence_margin must be a finite number"),
    ("decision", {"equivalence_margin": "1"}, "equivalence_margin must be a number"),
    ("decision", {"effect": True}, "decision: effect must be a number"),
])
def test_values_are_typed_ranged_and_finite(tmp_path, section, change, message):
    data = _base(tmp_path)
    data[section] = {**data.get(section, {}), **change}
    if section == "decision" and change.get("split") == "val":
        data["eval"] = {"bank": "b.npz[0:10]", "test": None, "val_queries": "b.npz[10:20]"}
    with pytest.raises(StudyError, match=re.escape(message)):
        load_study(_write(tmp_path, data))


@pytest.mark.parametrize("metric", ["mean", "linear"])
def test_a_metric_that_needs_the_linear_probe_needs_it_on(tmp_path, metric):
    _refused(tmp_path, f"decision: metric {metric} needs the linear probe",
             eval={"bank": "b.npz", "test": "t.npz", "linear": False}, decision={"metric": metric})
    study = load_study(_write(tmp_path, _base(tmp_path, eval={"bank": "b.npz", "test": "t.npz", "linear": False},
                                              decision={"metric": "knn"})))
    assert study.decision.metric == "knn"


def test_the_equivalence_margin_is_read_from_the_decision(tmp_path):
    study = load_study(_write(tmp_path, _base(tmp_path, decision={"equivalence_margin": 1.0})))
    assert study.decision.equivalence_margin == 1.0
    assert load_study(_write(tmp_path, _base(tmp_path))).decision.equivalence_margin is None


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text,message", [
    ("name: bomb\n" + _bomb(), "expand the document past"),
    ("name: &n [*n]\n", "refers to a value that contains it"),
    ("name: " + "[" * 5000 + "]" * 5000 + "\n", "nest"),  # libyaml's own cap (1000) or ours
    ("name: " + "[" * 100 + "]" * 100 + "\n", "'name' must be"),
    ("name: x\nseeds: [1" + "0" * 5000 + "]\n", "a value cannot be read"),
    ("name: 2026-13-45\n", "a value cannot be read"),
])
def test_yaml_bombs_are_one_line_in_well_under_a_second(tmp_path, text, message):
    path = _write(tmp_path, {}, text=text)
    assert len(text) < 20_000
    t0 = time.perf_counter()
    r = CliRunner().invoke(main, ["study", str(path), "--dry-run"])
    took = time.perf_counter() - t0
    assert r.exit_code == 1 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output[-500:]
    assert "Traceback" not in r.output and took < 1.0, took


def test_aliases_that_reuse_a_block_still_load():
    study = load_study(REPO / "studies" / "cifar10-gen-views" / "study.yaml")  # &weak / *weak, &full / *full
    weak = study.arms["taef2_res_extra_weakaug"].overrides["gen_augmentations"]
    assert study.merged["hand3_weak3"]["augmentations"][2] == weak and weak["min_scale"] == 0.3


def test_confirmation_digests_are_those_its_committed_results_carry():
    """What goes into an arm's digest is unchanged: the committed results stay current."""
    study = load_study(REPO / "studies" / "cifar10-confirm" / "study.yaml")
    for arm in study.arms:
        for seed in study.seeds:
            recorded = json.loads(study.result_path(arm, seed).read_text())["digest"]
            assert study.digest(arm) == recorded, (arm, seed)


def _screen(tmp_path: Path):
    data = _base(tmp_path, seeds=[0, 1], control="ctrl",
                 eval={"bank": "b.npz[0:10]", "test": None, "val_queries": "b.npz[10:20]"},
                 decision={"split": "val", "metric": "knn", "select_min_delta": 0.5},
                 arms={"ctrl": {"shards": "s", "gen_prob": 0}, "bad": {"shards": "s", "gen_prob": 0.25},
                       "good": {"shards": "s", "gen_prob": 0.5}})
    return load_study(_write(tmp_path, data))


def _record(study, arm, seed, knn, **extra) -> dict:
    rec = {"arm": arm, "seed": seed, "digest": study.digest(arm), "train": {"seconds": 60.0},
           "scores": {"last": {"val": {"knn_top1": knn}}}, **extra}
    path = study.result_path(arm, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return rec


def test_one_nan_score_is_a_missing_score_and_does_not_hide_the_leader(tmp_path):
    study = _screen(tmp_path)
    for seed in (0, 1):
        _record(study, "ctrl", seed, 50.0)
        _record(study, "good", seed, 53.0)
        _record(study, "bad", seed, 50.5)
    _record(study, "bad", 1, math.nan)  # written by json.dumps as NaN, which json.loads reads back
    problems: list[str] = []
    results, _ = load_results(study, problems)
    rows = summarize(study, results, {})
    text = " ".join(selection_lines(study, rows))
    assert "largest mean Δ so far: good +3.00" in text and "interim (3/4" in text, text
    assert len(problems) == 1 and "bad-s1.json" in problems[0] and "nan" in problems[0]
    report = format_report(study, rows, results, [], problems)
    assert "Left out of every number above (1): bad-s1.json" in report


@pytest.mark.parametrize("content", [
    '{"arm": "gen", "seed": 0, "digest": "D", "train": {"seconds": "60"}}',  # a text for a number
    '{"arm": "gen", "seed": 0, "digest": "D", "train": {"seconds": 60}, "scores": ["last"]}',  # a list
    '{"arm": "gen", "seed": 0, "digest": "D", "train": {"seconds": 1e999}}',  # infinity
    '{"arm": "gen", "seed": 0, "digest": "D", "train": {"seconds": 60}, "knn_top1": 1' + "0" * 5000 + '}',  # huge
    '{"arm": "gen", "seed": 0, "digest": "D", "train": {"seconds": 60}, "train": {"code": [{"commit": 7}]}}',
    '{"arm": "gen", "seed": 0, "digest": "D", "train": {"seconds": 1' + "0" * 400 + '}}',  # past any float
    '{"arm": "ctrl", "seed": 0, "digest": "D", "train": {"seconds": 60}, "knn_top1": 50}',  # another run's
    '[' * 100000 + ']' * 100000,  # nested past the parser's stack
    '"just a string"',
    '{"arm": "gen", "seed": 0, "digest": "D", "train": {"seconds": 60, "code": {"commit": "abc"}}}',
])
def test_report_only_on_tampered_results_is_a_counted_skip(tmp_path, content):
    path = _write(tmp_path, _base(tmp_path))
    study = load_study(path)
    _record(study, "ctrl", 0, 50.0, knn_top1=50.0)
    bad = study.result_path("gen", 0)
    bad.write_text(content.replace('"D"', json.dumps(study.digest("gen"))))
    lines: list[str] = []
    md, _ = write_report(study, lines.append, train_flops={})
    assert [ln for ln in lines if ln.startswith("left out: gen-s0.json")], lines
    assert "gen-s0.json" in md.read_text()


def test_report_only_command_counts_what_it_leaves_out(tmp_path):
    path = _write(tmp_path, _base(tmp_path))
    study = load_study(path)
    _record(study, "ctrl", 0, 50.0, knn_top1=50.0)
    _record(study, "ctrl", 1, 51.0, knn_top1=math.nan)
    study.result_path("gen", 0).write_text('{"arm": "gen", "seed": 0, "digest": 7, "train": []}')
    study.result_path("gen", 1).write_text("[1e999]")
    r = CliRunner().invoke(main, ["study", str(path), "--report-only"])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output[-2000:]
    left_out = [ln for ln in r.output.splitlines() if ln.startswith("left out: ")]
    assert len(left_out) == 3 and "ctrl-s1.json: knn_top1 = nan" in left_out[0], left_out
    assert "Left out of every number above (3)" in (study.folder / "results.md").read_text()


def test_an_output_folder_named_like_a_flag_stays_a_folder_in_both_calls(tmp_path, monkeypatch):
    from gcl.eval.study.runs import train_command
    from gcl.train.cli import main as train_main

    from gcl.synth.cli import merge as merge_command

    monkeypatch.chdir(tmp_path)
    sets = {"s": {"limit": 8}, "t": {"limit": 8, "views": 1}, "st": {"merge": ["s", "t"]}}
    study = load_study(_write(tmp_path, _base(tmp_path, output=f"--scheduler={ATTACKER}", shard_sets=sets)))
    merged = merge_command.make_context("merge", synth_command(study, "st")[4:]).params
    assert merged["sources"] == (str(study.manifest_path("s")), str(study.manifest_path("t")))
    assert merged["output"] == str(study.shard_dir("st")) and merged["name"] == "st"
    study.shard_dir("s").mkdir(parents=True)
    (study.shard_dir("s") / SYNTH_CONFIG).write_text(json.dumps(synth_config(study.synth["s"])))
    synth, said, _ = resolved(synth_command(study, "s")[4:], monkeypatch)
    assert synth.scheduler is None and synth.output == str(study.shard_dir("s")), said
    cmd = train_command(study, "gen", 1, Path("r.yaml"), study.manifest_path("s"), resume=False)
    params = train_main.make_context("gcl-train", cmd[3:]).params
    assert params["output"] == str(study.run_dir("gen", 1)) and params["seed"] == 1 and params["resume"] is False
    assert params["shards"] == (str(study.manifest_path("s")),) and params["shards_base"] is None


@pytest.mark.parametrize("queries", ["b.npz[30:50]", "b.npz[40:]", "b.npz[45:60]"])
def test_a_slice_past_the_end_of_its_file_is_refused_before_any_work(tmp_path, monkeypatch, queries):
    monkeypatch.chdir(tmp_path)
    _npz(tmp_path / "b.npz", 40), _npz(tmp_path / "t.npz", 20)
    data = _base(tmp_path, eval={"bank": "b.npz[0:20]", "test": "t.npz", "val_queries": queries})
    r = CliRunner().invoke(main, ["study", str(_write(tmp_path, data)), "--dry-run"])
    assert r.exit_code == 1 and "reaches past the file's 40 images" in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "out").exists()
