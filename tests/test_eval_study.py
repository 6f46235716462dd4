"""gcl-eval study, fast parts: the study file, the statistics and table, run planning, bad input.

The end-to-end study (real gcl-synth and gcl-train subprocesses) is in test_eval_study_e2e.py.
"""

from __future__ import annotations

import json
import re
import statistics
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import CIFAR_TEST, CIFAR_TRAIN

os.environ["HF_HUB_OFFLINE"] = "1"

from gcl.eval.cli import main  # noqa: E402
from gcl.eval.study.runner import forget, plan, plan_run, synth_cost  # noqa: E402
from gcl.eval.study.config import StudyError, deep_merge, load_study  # noqa: E402
from gcl.eval.study.report import format_report, summarize, write_report  # noqa: E402
from gcl.eval.study.stats import (mean_std, paired_deltas, paired_power, paired_test, seeds_for_power,  # noqa: E402
                                  t_interval)
from gcl.eval.study.runs import RUN_STATE, check_same_inputs, synth_config  # noqa: E402
from gcl.eval.study.schema import SynthOptions  # noqa: E402

BASE = {
    "name": "unit", "seeds": [0, 1, 2], "control": "ctrl",
    "eval": {"bank": str(CIFAR_TRAIN), "test": str(CIFAR_TEST)},
    "shard_sets": {"s": {"generator": "taesd", "limit": 8, "views": 1}},
    "train": {"epochs": 1, "batch_size": 8},
    "arms": {"ctrl": {"shards": "s", "gen_prob": 0}, "gen": {"shards": "s", "gen_prob": 0.5, "x": 0.5}},
}


def _study_file(tmp_path: Path, **changes) -> Path:
    data = json.loads(json.dumps(BASE))
    data["output"] = str(tmp_path / "out")  # run folders and merged recipes stay out of the repository
    data.update(changes)
    path = tmp_path / "study" / "study.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def _result(study, arm, seed, knn, linear=None, seconds=60.0):
    rec = {"arm": arm, "seed": seed, "digest": study.digest(arm), "knn_top1": knn, "train": {"seconds": seconds},
           "eval": {"n_bank": 100, "n_test": 50}, "synth": {"seconds": 30.0, "flops_per_image": 2.5e9, "source": "cost"}}
    if linear is not None:
        rec["linear_top1"] = linear
    path = study.result_path(arm, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return rec


def test_statistics_by_hand():
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and std == pytest.approx(1.527525, abs=1e-6)  # sample std (n - 1)
    assert mean_std([5.0]) == (5.0, None) and mean_std([]) == (None, None)
    deltas = paired_deltas({0: 51.0, 1: 49.5, 2: 50.2}, {0: 50.0, 1: 50.0, 3: 1.0})
    assert deltas == {0: pytest.approx(1.0), 1: pytest.approx(-0.5)}  # seed 2 has no control, seed 3 no arm
    low, high = t_interval([1.0, 2.0, 4.0])  # 7/3 ± 4.3027 x 1.5275 / sqrt(3)
    assert low == pytest.approx(7 / 3 - 3.7946, abs=1e-3) and high == pytest.approx(7 / 3 + 3.7946, abs=1e-3)
    assert t_interval([1.0]) is None


def test_paired_power_matches_simulated_one_sided_t_tests():
    import numpy as np
    from scipy.stats import ttest_1samp

    rng = np.random.default_rng(0)
    for effect, std, n in ((1.0, 1.3, 3), (1.0, 1.3, 10), (0.5, 0.4, 5)):
        deltas = rng.normal(effect, std, size=(20_000, n))
        simulated = float(np.mean(ttest_1samp(deltas, 0.0, axis=1, alternative="greater").pvalue < 0.05))
        assert paired_power(effect, std, n) == pytest.approx(simulated, abs=0.012)
    assert paired_power(0.0, 1.0, 5) == pytest.approx(0.05, abs=1e-6)  # no effect: the test's own false-positive rate
    needed = seeds_for_power(1.0, 1.3)
    assert paired_power(1.0, 1.3, needed) >= 0.8 > paired_power(1.0, 1.3, needed - 1)
    assert seeds_for_power(0.01, 10.0, most=50) is None


def test_paired_test_is_scipys_one_sided_t_test():
    from scipy.stats import t, ttest_1samp

    deltas = [1.25, 1.0, 1.25, 0.4]
    res = paired_test(deltas)
    ref = ttest_1samp(deltas, 0.0, alternative="greater")
    assert res.p == pytest.approx(ref.pvalue) and res.n == 4
    se = statistics.stdev(deltas) / 2
    assert res.lower == pytest.approx(statistics.mean(deltas) - t.ppf(0.95, 3) * se)
    assert res.ci == pytest.approx((statistics.mean(deltas) - t.ppf(0.975, 3) * se,
                                    statistics.mean(deltas) + t.ppf(0.975, 3) * se))
    assert res.helps and not paired_test([3.0, -0.1]).helps  # mean +1.45 but its lower bound is below 0
    assert paired_test([2.0]).lower is None and paired_test([]) is None


def _rows_of(study):
    return {r.arm: r for r in summarize(study, [json.loads(p.read_text()) for p in (study.folder / "runs").glob("*.json")])}


def test_table_pairs_by_seed_and_applies_the_decision_rule(tmp_path):
    study = load_study(_study_file(tmp_path))
    assert (study.decision.metric, study.decision.split, study.decision.alpha) == ("mean", "test", 0.05)
    for seed, (c, g) in enumerate([(50.0, 51.5), (52.0, 53.0), (49.0, 50.5)]):
        _result(study, "ctrl", seed, c, linear=c + 5)
        _result(study, "gen", seed, g, linear=c + 6, seconds=120.0)
    rows = _rows_of(study)
    assert rows["gen"].deltas == {0: pytest.approx(1.5), 1: pytest.approx(1.0), 2: pytest.approx(1.5)}
    # primary metric: (kNN + linear) / 2 -> deltas (1.5 + 1) / 2, (1 + 1) / 2, (1.5 + 1) / 2
    assert rows["gen"].primary_deltas == {0: pytest.approx(1.25), 1: pytest.approx(1.0), 2: pytest.approx(1.25)}
    assert rows["ctrl"].deltas == {} and not rows["ctrl"].uses_generated and rows["gen"].x == 0.5
    md, png = write_report(study, log=lambda *_: None, train_flops={"ctrl": 10e9, "gen": 10e9})
    text = md.read_text()
    gen_line = next(line for line in text.splitlines() if line.startswith("| gen |"))
    t = paired_test([1.25, 1.0, 1.25])
    assert (f"| 3 | 51.67 ± 1.26 | 56.33 ± 1.53 | 54.00 ± 1.39 | +1.17 (s0 +1.25, s1 +1.00, s2 +1.25) | +1.17 | "
            f"{t.lower:+.2f} | [{t.ci[0]:+.2f}, {t.ci[1]:+.2f}] | {t.p:.3f} | **helps** | +1.33 | +1.00 | 2.0 |") in gen_line
    assert "30 s, 2.50 GFLOP/img | 10.0 | 1.25x |" in gen_line  # (10 train + 2.5 synthesis) / 10
    assert "none (no generated views) | 10.0 | 1.00x |" in text
    assert "| ctrl | 3 | 50.33 ± 1.53 |" in text and "(control) | — | — | — | — |" in text
    assert "primary metric = mean of kNN and linear top-1; one-sided paired t-test" in text
    # the power line: gen's deltas scatter by std(1.25, 1, 1.25) = 0.144 (ctrl has none to pool)
    power = next(line for line in text.splitlines() if line.startswith("Power:"))
    assert power.startswith("Power: paired Δ mean scatter by 0.14 points")
    assert f"on 3 seeds finds a true +1.0 effect {paired_power(1.0, 0.1443376, 3):.0%} of the time" in power
    assert f"80% power needs {seeds_for_power(1.0, 0.1443376)} seeds at the point estimate." in power
    assert "| last.ckpt | test | 0.14 | 3 | 1.53 |" in text  # control std: its mean metric 52.5, 54.5, 51.5
    assert png.stat().st_size > 10_000


def test_the_decision_can_read_the_validation_split_and_averaged_weights_are_reported(tmp_path):
    study = load_study(_study_file(tmp_path, decision={"split": "val", "metric": "knn"},
                                   eval={"bank": str(CIFAR_TRAIN), "test": None, "checkpoints": ["last", "avg"],
                                         "val_queries": f"{CIFAR_TRAIN}[100:200]", "val_bank": f"{CIFAR_TRAIN}[0:100]"}))
    for seed, (c, g) in enumerate([(50.0, 52.0), (51.0, 51.5)]):
        for arm, knn in (("ctrl", c), ("gen", g)):
            rec = _result(study, arm, seed, 0.0)
            rec["scores"] = {"last": {"val": {"knn_top1": knn}}, "avg": {"val": {"knn_top1": knn + seed}}}
            study.result_path(arm, seed).write_text(json.dumps(rec))
    rows = _rows_of(study)
    assert rows["gen"].primary_deltas == {0: pytest.approx(2.0), 1: pytest.approx(0.5)}
    text = md_text = write_report(study, log=lambda *_: None)[0].read_text()
    assert "on the validation split" in md_text and "primary metric = kNN top-1" in text
    assert "| last.ckpt | val | 1.06 | 2 |" in text and "| avg.ckpt | val | 1.06 | 2 |" in text


@pytest.mark.parametrize("change,message", [
    ({"eval": {"bank": "b.npz", "test": "t.npz", "val_queries": "t.npz[0:10]"}}, "held out of the test split"),
    ({"eval": {"bank": "b.npz", "test": "t.npz", "val_queries": "b.npz[0:10]"}}, "every query would find itself"),
    ({"eval": {"bank": "b.npz", "test": "t.npz", "val_queries": "b.npz[4:10]", "val_bank": "b.npz[10:]"},
      "shard_sets": {"s": {"generator": "taesd", "input": "b.npz", "limit": 8}}}, "pretraining images"),
    ({"eval": {"bank": "b.npz", "test": "t.npz", "val_queries": "b.npz[8:10]", "val_bank": "b.npz[10:]"},
      "shard_sets": {"s": {"generator": "taesd", "input": "b.npz"}}}, "pretraining images"),
    ({"eval": {"bank": "b.npz", "test": "t.npz", "checkpoints": ["avg"]}}, "starting with last"),
    ({"decision": {"metric": "median"}}, "metric must be one of"),
    ({"decision": {"alpha": 0.7}}, "decision: alpha must be < 0.5, got 0.7"),
    ({"decision": {"split": "val"}}, "split val needs eval: val_queries"),
    ({"bar": 1.0}, "unknown key(s) bar"),
])
def test_validation_split_and_decision_are_checked(tmp_path, change, message):
    with pytest.raises(StudyError, match=re.escape(message)):
        load_study(_study_file(tmp_path, **change))
    if "eval" in change and "pretraining" in message:  # queries after the pretraining images are fine
        ok = dict(change, eval=dict(change["eval"], val_queries="b.npz[8:10]"),
                  shard_sets={"s": {"generator": "taesd", "input": "b.npz", "limit": 8}})
        assert load_study(_study_file(tmp_path, **ok)).eval.val_queries == "b.npz[8:10]"


def test_train_flops_are_measured_by_gcl_train_per_arm(tmp_path):
    from gcl.eval.study.runs import measure_train_flops

    arms = dict(BASE["arms"], three={"shards": "s", "method": "supcon", "family_views": 3, "members": ["orig"] * 3})
    study = load_study(_study_file(tmp_path, arms=arms))
    flops = measure_train_flops(study)
    assert set(flops) == {"ctrl", "gen", "three"} and flops["ctrl"] == flops["gen"] > 0
    assert abs(flops["three"] / flops["ctrl"] - 1.5) < 0.01
    _result(study, "ctrl", 0, 50.0)
    md, _ = write_report(study, log=lambda *_: None, train_flops={})  # no measurement: dashes, no crash
    assert "| — | — |" in md.read_text()


def test_an_arm_can_name_its_own_compute_matched_control(tmp_path):
    arms = dict(BASE["arms"], two={"shards": "s", "gen_prob": 0}, gen={"shards": "s", "gen_prob": 0.5, "control": "two"})
    study = load_study(_study_file(tmp_path, arms=arms, decision={"metric": "knn"}, seeds=[0, 1]))
    assert (study.control_of("gen"), study.control_of("two"), study.control_of("ctrl")) == ("two", "ctrl", None)
    for seed, (c, t, g) in enumerate([(50.0, 45.0, 46.5), (51.0, 44.0, 45.2)]):
        _result(study, "ctrl", seed, c, linear=c)
        _result(study, "two", seed, t, linear=t)
        _result(study, "gen", seed, g, linear=t - 1)
    md, _ = write_report(study, log=lambda *_: None, train_flops={"ctrl": 15e9, "two": 10e9, "gen": 10e9})
    text = md.read_text()
    gen_line = next(line for line in text.splitlines() if line.startswith("| gen |"))
    # paired against `two`, not the study's control; 2 seeds: t(0.975, 1) = 12.71, so the interval spans 0
    assert "| vs two: +1.35 (s0 +1.50, s1 +1.20) | +1.35 |" in gen_line and "| [-0.56, +3.26] |" in gen_line
    # one-sided: 1.35 - t(0.95, 1) 6.314 x 0.212 / sqrt(2) = +0.40 > 0, although the 95% interval spans 0
    assert "| +0.40 | [-0.56, +3.26] | 0.035 | **helps** | +1.35 | -1.00 |" in gen_line
    assert gen_line.endswith("| 10.0 | 1.25x |")  # (10 training + 2.5 synthesis) / two's 10
    assert "| -6.00 (s0 -5.00, s1 -7.00) | -6.00 |" in text and "| [-18.71, +6.71] |" in text


def test_the_verdict_waits_for_every_planned_seed_and_the_code_that_trained_is_shown(tmp_path):
    study = load_study(_study_file(tmp_path))  # 3 planned seeds
    code = {"commit": "a" * 40, "dirty": False, "num_workers": 2, "version": "0.1.0"}
    for seed, (c, g) in enumerate([(50.0, 51.5), (52.0, 53.4)]):
        for arm, top1 in (("ctrl", c), ("gen", g)):
            rec = _result(study, arm, seed, top1, linear=top1)
            rec["train"]["code"] = [code]
            study.result_path(arm, seed).write_text(json.dumps(rec))
    text = write_report(study, log=lambda *_: None, train_flops={})[0].read_text()
    gen_line = next(line for line in text.splitlines() if line.startswith("| gen |"))
    t = paired_test([1.5, 1.4])
    assert t.helps  # the rule would say "helps" here, but only 2 of the 3 planned seeds are in
    assert f"| {t.p:.3f} | interim (2/3 seeds): no verdict yet |" in gen_line and "**helps**" not in gen_line
    assert "Trained by: commit aaaaaaaaaaaa, 2 loader worker(s): 4 run(s)." in text
    rec = _result(study, "gen", 2, 52.0, linear=52.0)  # the third seed, trained by other code
    rec["train"]["code"] = [dict(code, commit="b" * 40, dirty=True)]
    study.result_path("gen", 2).write_text(json.dumps(rec))
    _result(study, "ctrl", 2, 50.0, linear=50.0)  # an old result without a code record
    text = write_report(study, log=lambda *_: None, train_flops={})[0].read_text()
    gen_line = next(line for line in text.splitlines() if line.startswith("| gen |"))
    assert "| **helps** |" in gen_line  # 3/3 seeds: deltas +1.5, +1.4, +2.0
    assert ("**Runs trained by different code** (compare only runs of one version): "
            "code version not recorded: 1 run(s); commit aaaaaaaaaaaa, 2 loader worker(s): 4 run(s); "
            "commit bbbbbbbbbbbb with local changes, 2 loader worker(s): 1 run(s).") in text


def test_a_screen_selects_the_largest_mean_delta_above_its_bar_once_every_run_is_in(tmp_path):
    arms = dict(BASE["arms"], gen2={"shards": "s", "gen_prob": 0.25}, four={"shards": "s", "gen_prob": 0},
                gen4={"shards": "s", "gen_prob": 0.5, "control": "four"})
    ev = {"bank": str(CIFAR_TRAIN), "test": None, "val_queries": f"{CIFAR_TRAIN}[100:200]", "val_bank": f"{CIFAR_TRAIN}[0:100]"}
    study = load_study(_study_file(tmp_path, arms=arms, eval=ev, seeds=[0, 1],
                                   decision={"split": "val", "metric": "knn", "select_min_delta": 0.5}))
    # `four` is gen4's control, so it is not a candidate although it is paired against ctrl
    assert study.screened_arms() == ["gen", "gen2", "gen4"]

    def put(arm, seed, knn):
        rec = _result(study, arm, seed, 0.0)
        rec["scores"] = {"last": {"val": {"knn_top1": knn}}}
        study.result_path(arm, seed).write_text(json.dumps(rec))

    def selection():
        text = write_report(study, log=lambda *_: None, train_flops={})[0].read_text()
        assert "**Selection rule** (as the study file states it): of the screened arms (gen, gen2, gen4)" in text
        return next(line for line in text.splitlines() if line.startswith("Selection:"))

    for seed in (0, 1):
        put("ctrl", seed, 50.0)
        put("four", seed, 60.0)  # +10 over ctrl: a control's own row never wins
        put("gen", seed, 50.3)
        put("gen4", seed, 60.0 + seed)  # mean Δ +0.5 over four
    put("gen2", 0, 53.0)
    assert selection() == "Selection: interim (5/6 paired runs): no choice yet; largest mean Δ so far: gen2 +3.00."
    put("gen2", 1, 47.1)  # mean Δ +0.05: gen4's +0.50 now leads and meets the bar exactly
    assert selection().startswith("Selection: **gen4** (mean Δ +0.50 ≥ +0.50) goes to a confirmatory study.")
    put("gen4", 1, 60.8)  # +0.4: below the bar, so nothing goes on
    assert selection() == "Selection: none (the largest mean Δ, gen4's +0.40, is below +0.50)."
    study_without = load_study(_study_file(tmp_path, eval=ev, decision={"split": "val"}))
    assert "Selection" not in write_report(study_without, log=lambda *_: None, train_flops={})[0].read_text()


@pytest.mark.parametrize("decision,message", [
    ({"select_min_delta": 0.5}, "a screen's rule and needs split: val"),
    ({"split": "val", "select_min_delta": "half"}, "decision: select_min_delta must be a number"),
])
def test_a_selection_rule_is_checked(tmp_path, decision, message):
    ev = {"bank": str(CIFAR_TRAIN), "test": str(CIFAR_TEST), "val_queries": f"{CIFAR_TRAIN}[100:200]",
          "val_bank": f"{CIFAR_TRAIN}[0:100]"}
    with pytest.raises(StudyError, match=re.escape(message)):
        load_study(_study_file(tmp_path, eval=ev, decision=decision))
    lone = {"ctrl": BASE["arms"]["ctrl"]}
    with pytest.raises(StudyError, match="needs an arm to choose"):
        load_study(_study_file(tmp_path, eval=ev, arms=lone, decision={"split": "val", "select_min_delta": 0.5}))


@pytest.mark.parametrize("control", ["nope", "gen"])
def test_an_arms_control_must_be_another_arm(tmp_path, control):
    arms = dict(BASE["arms"], gen={"shards": "s", "gen_prob": 0.5, "control": control})
    with pytest.raises(StudyError, match="must name another arm"):
        load_study(_study_file(tmp_path, arms=arms))


def test_each_sweep_series_gets_its_own_panel(tmp_path):
    from PIL import Image

    arms = dict(BASE["arms"], ctrl={"shards": "s", "gen_prob": 0, "x": 0, "series": "strength"},
                weak={"shards": "s", "gen_prob": 0.2, "x": 0.25, "series": "strength"})
    study = load_study(_study_file(tmp_path, arms=arms))
    assert study.arms["weak"].series == "strength" and study.arms["gen"].series is None
    for seed in (0, 1):
        for arm, knn in (("ctrl", 50.0), ("gen", 51.0), ("weak", 50.5)):
            _result(study, arm, seed, knn + seed)
    rows = {r.arm: r for r in summarize(study, [json.loads(p.read_text()) for p in (study.folder / "runs").glob("*.json")])}
    assert (rows["weak"].series, rows["weak"].x, rows["gen"].series) == ("strength", 0.25, None)
    _, png = write_report(study, log=lambda *_: None)
    # the arms panel, the strength sweep and the plot.label (gen-prob) panel: 7 + 5 + 5 inches at 110 dpi
    assert Image.open(png).size[0] == 17 * 110
    only_strength = dict(arms, gen={"shards": "s", "gen_prob": 0.5})
    study = load_study(_study_file(tmp_path, arms=only_strength))
    _, png = write_report(study, log=lambda *_: None)
    assert Image.open(png).size[0] == 12 * 110


def test_missing_runs_are_listed_and_missing_numbers_are_dashes(tmp_path):
    study = load_study(_study_file(tmp_path, decision={"metric": "knn"}))
    for seed, (c, g) in enumerate([(50.0, 53.0), (52.0, 51.9)]):
        _result(study, "ctrl", seed, c)
        _result(study, "gen", seed, g)
    rows = summarize(study, [json.loads(p.read_text()) for p in (study.folder / "runs").glob("*.json")])
    gen = next(r for r in rows if r.arm == "gen")
    assert gen.positive == 1 and len(gen.deltas) == 2
    text = format_report(study, rows, [], [])
    assert "| interim (2/3 seeds): no verdict yet |" in text and "Missing: ctrl-s2, gen-s2." in text
    assert "| gen | 2 | 52.45 ± 0.78 | — |" in text  # no linear numbers: a dash, not a crash


def test_edited_arm_makes_results_stale(tmp_path):
    path = _study_file(tmp_path)
    study = load_study(path)
    _result(study, "gen", 0, 50.0)
    assert plan_run(study, "gen", 0).action == "done" and plan_run(study, "ctrl", 0).action == "train"
    arms = dict(BASE["arms"], gen={"shards": "s", "gen_prob": 0.7})
    edited = load_study(_study_file(tmp_path, arms=arms))
    assert edited.digest("gen") != study.digest("gen") and edited.digest("ctrl") == study.digest("ctrl")
    assert plan_run(edited, "gen", 0).action == "stale"
    r = CliRunner().invoke(main, ["study", str(path), "--seeds", "0"])
    assert r.exit_code == 1 and "1 run(s) are stale" in r.output and "--rerun-stale" in r.output
    assert len(r.output.strip().splitlines()) == 1
    shard_opts = dict(BASE["shard_sets"], s={"generator": "taesd", "limit": 8, "views": 2})
    assert load_study(_study_file(tmp_path, shard_sets=shard_opts)).digest("ctrl") != study.digest("ctrl")


def test_run_folder_states_plan_train_resume_evaluate(tmp_path):
    study = load_study(_study_file(tmp_path))
    run = study.run_dir("gen", 1)
    assert plan_run(study, "gen", 1).action == "train"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    (run / RUN_STATE).write_text(json.dumps({"digest": study.digest("gen"), "sittings": []}))
    (run / "run.json").write_text(json.dumps({"status": "running"}))
    assert plan_run(study, "gen", 1).action == "resume"  # killed after a checkpoint: continue it
    (run / "run.json").write_text(json.dumps({"status": "finished"}))
    assert plan_run(study, "gen", 1).action == "evaluate"  # trained, killed before its result was written
    (run / RUN_STATE).write_text(json.dumps({"digest": "0" * 64, "sittings": []}))
    p = plan_run(study, "gen", 1)
    assert p.action == "stale" and "run folder" in p.why
    assert forget(study, p).action == "train" and not run.exists()
    assert [(p.arm, p.seed) for p in plan(study, ["ctrl", "gen"], [0, 1])] == [("ctrl", 0), ("gen", 0), ("ctrl", 1), ("gen", 1)]


def test_deep_merge_and_synth_config():
    base = {"optimizer": {"name": "lars", "lr": 0.4}, "augmentations": [{"crop_size": 32, "min_scale": 0.08}], "epochs": 9}
    merged = deep_merge(base, {"optimizer": {"lr": 0.1}, "augmentations": {"crop_size": 16}, "members": ["orig", "gen"]})
    assert merged == {"optimizer": {"name": "lars", "lr": 0.1}, "augmentations": [{"crop_size": 16, "min_scale": 0.08}],
                      "epochs": 9, "members": ["orig", "gen"]}
    assert base["optimizer"]["lr"] == 0.4  # the base recipe is not modified
    options = SynthOptions.model_validate({"shard_size": 8, "residual": True, "seed": 0, "model": None, "recipe": "noise"})
    # the options the file set, defaults and nulls included (gcl-synth's own defaults fill the rest)
    assert synth_config(options) == {"model": None, "recipe": "noise", "residual": True, "seed": 0, "shard_size": 8}


def test_shard_sets_must_share_input_and_layout():
    m = {"input": {"fingerprint": "abc/limit=8"}, "shards": [{"samples": 4}, {"samples": 4}]}
    check_same_inputs({"a": m, "b": json.loads(json.dumps(m))})
    other = {"input": {"fingerprint": "abc/limit=16"}, "shards": [{"samples": 4}, {"samples": 4}]}
    with pytest.raises(StudyError, match="differ in input images"):
        check_same_inputs({"a": m, "b": other})
    with pytest.raises(StudyError, match="shard layout"):
        check_same_inputs({"a": m, "b": {"input": m["input"], "shards": [{"samples": 8}]}})


def test_a_merged_set_depends_on_its_sources_and_plain_digests_keep_their_formula(tmp_path):
    import hashlib

    sets = {"s": {"limit": 8, "views": 1}, "t": {"limit": 8, "views": 1, "recipe": "noise(strength=0.25)"},
            "st": {"merge": ["s", "t"]}}
    arms = {"ctrl": {"shards": "s", "gen_prob": 0}, "mixed": {"shards": "st", "gen_prob": 0.5}}
    study = load_study(_study_file(tmp_path, shard_sets=sets, arms=arms))
    # a plain set's arm digest is what it always was (runs already made keep their results)
    blob = json.dumps({"recipe": study.merged["ctrl"], "shard_set": sets["s"]}, sort_keys=True)
    assert study.digest("ctrl") == hashlib.sha256(blob.encode()).hexdigest()
    assert study.set_options("st") == {"merge": {"s": sets["s"], "t": sets["t"]}}
    assert study.build_order({"st", "s"}) == ["s", "t", "st"] and study.build_order({"st"}) == ["s", "t", "st"]
    before = study.digest("mixed")
    sets["t"]["views"] = 2  # a source changed: the merged set's arm is another experiment
    changed = load_study(_study_file(tmp_path, shard_sets=sets, arms=arms))
    assert changed.digest("mixed") != before and changed.digest("ctrl") == study.digest("ctrl")


def test_synth_cost_prefers_the_manifest_cost_block():
    assert synth_cost({"cost": {"flops_per_image": 1e9, "seconds": 12.0, "images": 8}})["source"] == "cost"
    cost = synth_cost({"cost": {"flops_per_image": 1e9, "seconds": 12.0, "images": 8, "cpu_seconds": 20.5,
                                "load_avg_1m": 3.2}})
    assert (cost["cpu_seconds"], cost["load_avg_1m"]) == (20.5, 3.2)
    old = synth_cost({"throughput": {"seconds": 5.0, "generated_samples": 8}})
    assert old == {"seconds": 5.0, "flops_per_image": None, "images": 8, "source": "throughput"}


@pytest.mark.parametrize("change,message", [
    ({"colour": 1}, "unknown key(s) colour in the study file"),
    ({"control": "nope"}, "control 'nope' is not an arm"),
    ({"eval": {"kk": 3}}, "unknown key(s) kk in eval"),
    ({"seeds": []}, "'seeds' must be a non-empty list"),
    ({"arms": {"ctrl": {"shards": "missing"}}}, "arms:ctrl needs 'shards: SET'"),
    ({"arms": {"ctrl": {"shards": "s", "output": "x"}}}, "arms:ctrl sets output"),
    ({"shard_sets": {"s": {"output": "x"}}}, "shard_sets:s sets output"),
    ({"train": {"recipe": "cifar10/nope"}}, "recipe 'cifar10/nope' not found"),
    ({"plot": {"y": "gen_prob"}}, "unknown key(s) y in plot"),
    ({"arms": {"ctrl": {"shards": "s", "series": "strength"}}}, "series 'strength' needs the arm's x"),
    ({"arms": {"ctrl": {"shards": "s", "x": 0, "series": 3}}}, "series must be a non-empty text"),
    ({"shard_sets": {"s": {"limit": 8}, "m": {"merge": ["s"]}}}, "merge must list two or more distinct synthesized"),
    ({"shard_sets": {"s": {"limit": 8}, "m": {"merge": ["s", "zz"]}}}, "merge must list two or more distinct"),
    ({"shard_sets": {"s": {"limit": 8}, "t": {"limit": 8}, "m": {"merge": ["s", "t"], "views": 2}}},
     "a merged set takes only 'merge: [SET, SET, ...]', not views"),
])
def test_bad_study_files_are_one_line_errors(tmp_path, change, message):
    r = CliRunner().invoke(main, ["study", str(_study_file(tmp_path, **change)), "--dry-run"])
    assert r.exit_code == 1 and message in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_unreadable_study_file_and_bad_selection(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    for args, message in ((["study", str(bad)], "is not valid YAML"),
                          (["study", str(tmp_path / "none.yaml")], "study file not found"),
                          (["study", str(_study_file(tmp_path)), "--only", "zz"], "--only: unknown arm(s) zz"),
                          (["study", str(_study_file(tmp_path)), "--seeds", "7"], "not in the study's seeds")):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, r.output


def test_arm_recipe_typo_is_caught_by_gcl_train_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arms = dict(BASE["arms"], gen={"shards": "s", "learning_rate": 0.1})
    r = CliRunner().invoke(main, ["study", str(_study_file(tmp_path, arms=arms)), "--dry-run"])
    assert r.exit_code == 1 and "arm gen rejected by gcl-train: unknown key(s) learning_rate" in r.output
    assert not (tmp_path / "out" / "studies" / "unit" / "shards").exists()  # nothing synthesized


def test_report_only_needs_results(tmp_path):
    r = CliRunner().invoke(main, ["study", str(_study_file(tmp_path)), "--report-only"])
    assert r.exit_code == 1 and "no results" in r.output


def test_a_study_never_deletes_or_writes_into_a_folder_it_did_not_make(tmp_path):
    """A plain gcl-train run (with the user's notes) where the study would put its run is refused in
    one line, with --rerun-stale too, and nothing of it is deleted; the study's own stale run is."""
    path = _study_file(tmp_path)
    study = load_study(path)
    run = study.run_dir("gen", 0)
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    (run / "notes.txt").write_text("my own run, keep it")
    for args in (["--seeds", "0"], ["--seeds", "0", "--rerun-stale"], ["--seeds", "0", "--dry-run"]):
        r = CliRunner().invoke(main, ["study", str(path), *args])
        assert r.exit_code == 1 and "holds files this study did not make" in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
        assert (run / "notes.txt").read_text() == "my own run, keep it" and (run / "checkpoints" / "last.ckpt").exists()
    other = load_study(_study_file(tmp_path, name="other"))  # same output folder, another study's marker
    (run / RUN_STATE).write_text(json.dumps({"study": "other", "digest": other.digest("gen"), "sittings": []}))
    with pytest.raises(StudyError, match="holds files this study did not make"):
        forget(study, plan_run(study, "gen", 0))
    (run / RUN_STATE).write_text(json.dumps({"study": "unit", "digest": "0" * 64, "sittings": []}))
    assert forget(study, plan_run(study, "gen", 0)).action == "train" and not run.exists()


def test_a_study_file_cannot_choose_the_dask_scheduler_or_a_shard_command(tmp_path):
    sets = {"s": dict(BASE["shard_sets"]["s"], scheduler="tcp://198.51.100.7:8786")}
    r = CliRunner().invoke(main, ["study", str(_study_file(tmp_path, shard_sets=sets)), "--dry-run"])
    assert r.exit_code == 1 and "shard_sets:s sets scheduler" in r.output and "--scheduler" in r.output, r.output
    for section in ({"train": dict(BASE["train"], shards_base="pipe:touch PWNED; cat")},
                    {"arms": dict(BASE["arms"], gen={"shards": "s", "shards_base": "pipe:touch PWNED; cat"})}):
        r = CliRunner().invoke(main, ["study", str(_study_file(tmp_path, **section)), "--dry-run"])
        assert r.exit_code == 1 and "sets shards_base" in r.output, r.output
    assert "--scheduler" in CliRunner().invoke(main, ["study", "--help"]).output


def test_shipped_studies_state_their_rule_and_hold_validation_out():
    repo = Path(__file__).resolve().parents[1]
    studies = {p.parent.name: load_study(p) for p in (repo / "studies").glob("*/study.yaml")}
    assert {"cifar10-gen-views", "cifar10-confirm", "cifar10-screen", "cifar10-gpu", "quickstart"} <= set(studies)
    confirm = studies["cifar10-confirm"]
    d = confirm.decision
    assert (d.metric, d.split, d.alpha, d.effect) == ("mean", "test", 0.05, 1.0) and len(confirm.seeds) >= 12
    assert set(confirm.arms) == {"hand3", "taef2_res_extra"} and confirm.control_of("taef2_res_extra") == "hand3"
    # the pairs differ only in the third member; both average their last 5 epochs into avg.ckpt
    a, c = confirm.merged["taef2_res_extra"], confirm.merged["hand3"]
    assert {k for k in a if a[k] != c.get(k)} == {"members"} and a["average_last_epochs"] == 5
    assert confirm.eval.checkpoints == ["last", "avg"] and confirm.eval.val_queries.endswith("[15000:20000]")
    assert confirm.shard_sets["taef2_res"]["limit"] == 5000  # pretraining images 0-4999: disjoint from validation
    # the screen: decides on validation, never scores test, same size as the confirmation, and each
    # arm differs from its own control in what it feeds the loss only (same views per family)
    screen = studies["cifar10-screen"]
    assert screen.decision.split == "val" and screen.eval.test is None and screen.seeds == [0, 1, 2]
    assert screen.decision.select_min_delta == 0.5 and confirm.decision.select_min_delta is None
    assert sorted(screen.screened_arms()) == sorted(set(screen.arms) - {"hand3", "hand4"})
    assert screen.eval.val_queries == confirm.eval.val_queries and screen.eval.val_bank == confirm.eval.val_bank
    assert screen.merged["hand3"] == confirm.merged["hand3"]
    assert screen.set_options("taef2_res") == confirm.shard_sets["taef2_res"]
    controls = {screen.control_of(arm) for arm in screen.arms}
    for arm in set(screen.arms) - controls:
        control = screen.control_of(arm)
        if control is not None:
            a, c = screen.merged[arm], screen.merged[control]
            assert len(a["members"]) == len(c["members"]) and set(c["members"]) == {"orig"}
            assert {k for k in a if a[k] != c.get(k)} <= {"members", "method_kwargs"}, arm
    # the scarce-data validation study: 1,000 class-balanced images x 100 epochs = 400 steps of 250,
    # validation only, its fit split held out of the bank, and a 5k x 20 reference of the same steps
    scarce, regime = studies["cifar10-scarce-val"], studies["cifar10-regime-5k"]
    for s in (scarce, regime):
        assert s.decision.split == "val" and s.eval.test is None and s.eval.val_queries == confirm.eval.val_queries
        assert s.eval.val_bank.endswith("[5000:15000]") and s.eval.fit_queries in s.shard_sets
    k8 = scarce.shard_sets["taef2_res_k8"]
    assert (k8["limit"], k8["per_class"], k8["views"]) == (5000, 100, 8)
    steps = {name: s.merged["hand3"]["epochs"] * n // s.merged["hand3"]["batch_size"]
             for name, s, n in (("scarce", scarce, 1000), ("regime", regime, 5000))}
    assert steps == {"scarce": 400, "regime": 400}
    assert sorted(scarce.screened_arms()) == ["taef2_res_k8_extra", "taef2_res_k8_extra_w05"]
    # the second regime check: the same images, recipe and evaluation at three times the epochs,
    # the control alone; the confirmatory study: its arm against hand3 on test, 16 fresh seeds,
    # both verdicts fixed, the images, recipe and validation of the checks
    long_val, final = studies["cifar10-scarce-long-val"], studies["cifar10-scarce"]
    assert set(long_val.arms) == {"hand3"} and long_val.eval.test is None
    assert long_val.set_options("taef2_res_k8") == scarce.set_options("taef2_res_k8") == final.set_options("taef2_res_k8")
    assert {k for k in long_val.merged["hand3"] if long_val.merged["hand3"][k] != scarce.merged["hand3"][k]} == {"epochs"}
    assert final.merged["hand3"] == scarce.merged["hand3"]  # 100 epochs: the regime was not data-limited
    assert final.merged["taef2_res_k8_extra"] == scarce.merged["taef2_res_k8_extra"]
    d = final.decision
    assert (d.metric, d.split, d.alpha, d.equivalence_margin) == ("mean", "test", 0.05, 1.0)
    assert len(final.seeds) >= 16 and not set(final.seeds) & (set(scarce.seeds) | set(long_val.seeds))
    assert set(final.arms) == {"hand3", "taef2_res_k8_extra"} and final.control_of("taef2_res_k8_extra") == "hand3"
    assert (final.eval.val_queries, final.eval.val_bank) == (scarce.eval.val_queries, scarce.eval.val_bank)
