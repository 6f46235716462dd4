"""What a study's numbers carry: TOST beside the superiority test, zero-variance deltas, power with
the uncertainty of its noise, a screen's family-wise false pass, and the seconds of a sitting that
was killed outright."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"

from gcl.eval.study.config import StudyError, load_study  # noqa: E402
from gcl.eval.study.report import format_report, load_results, summarize  # noqa: E402
from gcl.eval.study.stats import (equivalence_test, family_false_pass, paired_power, paired_test,  # noqa: E402
                                  std_interval)
from test_eval_study import _result, _study_file  # noqa: E402


@pytest.mark.parametrize("deltas", [[0.2, -0.3, 0.5, 0.1, -0.1, 0.4], [0.9, 1.4, 0.2, 1.1], [-2.0, 0.5, -1.2, 0.1, -0.4]])
@pytest.mark.parametrize("margin", [0.5, 1.0])
def test_tost_is_two_of_scipys_one_sided_t_tests(deltas, margin):
    from scipy.stats import t, ttest_1samp

    eq = equivalence_test(deltas, margin)
    above = ttest_1samp(deltas, -margin, alternative="greater").pvalue
    below = ttest_1samp(deltas, margin, alternative="less").pvalue
    assert eq.p == pytest.approx(max(above, below), rel=1e-9)
    assert eq.equivalent == (max(above, below) < 0.05)  # both one-sided tests reject <=> the 90% interval is inside
    n, sd = len(deltas), np.std(deltas, ddof=1)
    half = t.ppf(0.95, n - 1) * sd / np.sqrt(n)
    assert eq.ci == pytest.approx((np.mean(deltas) - half, np.mean(deltas) + half))


def test_deltas_that_do_not_vary_give_no_verdict_not_p_zero():
    for deltas in ([1.0, 1.0, 1.0], [0.0, 0.0]):
        test, eq = paired_test(deltas), equivalence_test(deltas, 1.0)
        assert test.lower is None and test.p is None and not test.helps
        assert eq.ci is None and eq.p is None and not eq.equivalent


def test_the_noise_interval_is_the_chi_square_interval_and_spans_the_quoted_power():
    from scipy.stats import chi2

    low, high = std_interval(1.19, 11)
    assert low == pytest.approx(1.19 * np.sqrt(11 / chi2.ppf(0.975, 11)))
    assert high == pytest.approx(1.19 * np.sqrt(11 / chi2.ppf(0.025, 11)))
    assert (round(low, 2), round(high, 2)) == (0.84, 2.02)  # cifar10-confirm: 12 pairs, std 1.19
    assert paired_power(1.0, high, 12) < paired_power(1.0, 1.19, 12) < paired_power(1.0, low, 12)
    assert std_interval(1.0, 0) is None


def test_family_false_pass_matches_a_simulated_screen():
    """Five null arms, four sharing one control and one with its own: simulate the runs themselves."""
    rng = np.random.default_rng(0)
    run_sd = 1.4 / np.sqrt(2)  # paired deltas of independent runs scatter by sqrt(2) x a run's scatter
    draws, seeds = 100_000, 3
    control_a = rng.normal(0, run_sd, (draws, seeds))
    control_b = rng.normal(0, run_sd, (draws, seeds))
    deltas = [rng.normal(0, run_sd, (draws, seeds)) - control_a for _ in range(4)]
    deltas.append(rng.normal(0, run_sd, (draws, seeds)) - control_b)
    simulated = np.mean(np.any(np.stack([d.mean(axis=1) for d in deltas]) >= 0.5, axis=0))
    assert family_false_pass([4, 1], seeds, 1.4, 0.5) == pytest.approx(simulated, abs=0.01)
    assert family_false_pass([1], seeds, 1.4, 0.5) == pytest.approx(np.mean(deltas[4].mean(axis=1) >= 0.5), abs=0.01)


def _report(tmp_path, margin, arm_deltas, seeds=(0, 1, 2, 3, 4, 5)):
    decision = {"metric": "knn"} if margin is None else {"metric": "knn", "equivalence_margin": margin}
    study = load_study(_study_file(tmp_path, seeds=list(seeds), decision=decision))
    for seed, delta in zip(seeds, arm_deltas):
        _result(study, "ctrl", seed, 50.0 + seed * 0.1)
        _result(study, "gen", seed, 50.0 + seed * 0.1 + delta)
    results, stale = load_results(study)
    return format_report(study, summarize(study, results), results, stale)


def test_the_report_states_both_verdicts_once_every_seed_is_in(tmp_path):
    md = _report(tmp_path, 1.0, [0.2, -0.3, 0.5, 0.1, -0.1, 0.4])
    assert "**Equivalence rule**" in md and "TOST" in md
    row = next(line for line in md.splitlines() if line.startswith("| gen | 6 |") and "equivalent" in line)
    assert "**equivalent**" in row and "no practical difference (within ±1.0)" in row
    md = _report(tmp_path / "b", 1.0, [2.0, -1.5, 2.5, -0.5, 0.3, 1.9])  # wide: neither verdict
    row = next(line for line in md.splitlines() if line.startswith("| gen | 6 |") and "TOST" not in line
               and "inconclusive" in line)
    assert "not shown" in row
    md = _report(tmp_path / "c", None, [0.2, -0.3, 0.5, 0.1, -0.1, 0.4])  # no margin in the rule: no TOST
    assert "Equivalence rule" not in md


def test_an_interim_report_gives_no_equivalence_verdict(tmp_path):
    decision = {"metric": "knn", "equivalence_margin": 1.0}
    study = load_study(_study_file(tmp_path, seeds=[0, 1, 2, 3], decision=decision))
    for seed, delta in zip((0, 1, 2), (0.1, -0.1, 0.05)):
        _result(study, "ctrl", seed, 50.0)
        _result(study, "gen", seed, 50.0 + delta)
    results, stale = load_results(study)
    md = format_report(study, summarize(study, results), results, stale)
    assert "interim (3/4 seeds)" in md and "**equivalent**" not in md


@pytest.mark.parametrize("margin", [0, -1.0, ".nan", ".inf", "'1.0'", "true"])
def test_the_margin_must_be_a_positive_number(tmp_path, margin):
    path = _study_file(tmp_path)
    path.write_text(path.read_text() + f"decision: {{equivalence_margin: {margin}}}\n")
    with pytest.raises(StudyError, match="equivalence_margin"):
        load_study(path)


def test_the_power_line_shows_its_range(tmp_path):
    md = _report(tmp_path, None, [0.2, -0.3, 0.5, 0.1, -0.1, 0.4])
    line = next(line for line in md.splitlines() if line.startswith("Power:"))
    assert "over the 95% interval of that scatter" in line and "5 degrees of freedom" in line


def test_a_screen_reports_the_chance_that_some_null_arm_passes(tmp_path):
    arms = {"ctrl": {"shards": "s", "gen_prob": 0}, "a": {"shards": "s", "gen_prob": 0.5},
            "b": {"shards": "s", "gen_prob": 0.3}}
    eval_ = {"bank": "x.npz[0:10]", "test": None, "val_queries": "x.npz[20:30]"}
    study = load_study(_study_file(tmp_path, arms=arms, eval=eval_,
                                   decision={"metric": "knn", "split": "val", "select_min_delta": 0.5}))
    for seed in (0, 1, 2):
        for arm, score in (("ctrl", 50.0), ("a", 50.3 + seed * 0.4), ("b", 49.0 + seed * 0.7)):
            rec = _result(study, arm, seed, score)
            rec["scores"] = {"last": {"val": {"knn_top1": score}}}
            study.result_path(arm, seed).write_text(json.dumps(rec))
    results, stale = load_results(study)
    md = format_report(study, summarize(study, results), results, stale)
    line = next(line for line in md.splitlines() if line.startswith("False passes"))
    assert "with 2 such arms" in line and "at least one clears it" in line


CLOCK_CHILD = """
import sys, time
from pathlib import Path
from gcl.eval.study.runs import SittingClock
SittingClock.TICK_S = 0.2
state = {"digest": "d", "sittings": []}
sitting = {"seconds": 0.0, "code": None, "resume": False}
state["sittings"].append(sitting)
with SittingClock(Path(sys.argv[1]), state, sitting):
    print("started", flush=True)
    time.sleep(60)
"""


def test_a_sitting_killed_outright_keeps_its_seconds(tmp_path):
    path = tmp_path / "study-run.json"
    child = subprocess.Popen([sys.executable, "-c", CLOCK_CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "started"
    time.sleep(1.5)
    child.send_signal(signal.SIGKILL)  # no finally, no atexit: only what is already on disk survives
    child.wait()
    state = json.loads(path.read_text())
    assert len(state["sittings"]) == 1  # the killed sitting is counted
    assert 1.0 <= state["sittings"][0]["seconds"] <= 2.0 and state["sittings"][0]["code"] is None


def test_a_sitting_that_ends_records_its_exit_code(tmp_path):
    from gcl.eval.study.runs import SittingClock

    state = {"sittings": [{"seconds": 0.0, "code": None, "resume": True}]}
    with SittingClock(tmp_path / "s.json", state, state["sittings"][0]) as clock:
        time.sleep(0.2)
        clock.code = 3
    saved = json.loads((tmp_path / "s.json").read_text())["sittings"][0]
    assert saved["code"] == 3 and saved["seconds"] >= 0.2 and saved["resume"] is True


def test_runs_with_untimed_sittings_are_named(tmp_path):
    study = load_study(_study_file(tmp_path))
    for seed in (0, 1, 2):
        _result(study, "ctrl", seed, 50.0)
        rec = _result(study, "gen", seed, 51.0)
        rec["train"] = {"seconds": 60.0, "sittings": 1, "code": [{"commit": "a"}] * (2 if seed == 1 else 1)}
        study.result_path("gen", seed).write_text(json.dumps(rec))
    results, stale = load_results(study)
    md = format_report(study, summarize(study, results), results, stale)
    assert "Train minutes of gen-s1 are lower bounds" in md and "gen-s0" not in md.split("lower bounds")[0][-40:]


def test_shipped_study_files_still_load():
    for path in sorted(Path("studies").glob("*/study.yaml")):
        assert load_study(path).name == yaml.safe_load(path.read_text())["name"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.parent.name for p in Path("studies").glob("*/results.md")))
def test_each_shipped_results_md_is_what_its_committed_runs_give(tmp_path, name):
    """README and docs quote these tables: a hand edit, or a table written by older report code,
    would quote numbers the committed runs do not give."""
    from click.testing import CliRunner

    from gcl.eval.cli import main

    source, copy = Path("studies") / name, tmp_path / "studies" / name
    copy.mkdir(parents=True)
    (copy / "study.yaml").write_bytes((source / "study.yaml").read_bytes())
    (copy / "runs").mkdir()
    for result in (source / "runs").glob("*.json"):
        (copy / "runs" / result.name).write_bytes(result.read_bytes())
    r = CliRunner().invoke(main, ["study", str(copy / "study.yaml"), "--report-only"])
    assert r.exit_code == 0, r.output
    assert (copy / "results.md").read_text() == (source / "results.md").read_text(), (
        f"studies/{name}/results.md differs from what its runs give: gcl-eval study {source}/study.yaml --report-only")


def _fit_study(tmp_path, **eval_changes):
    eval_ = {"bank": "x.npz", "test": None, "val_queries": "x.npz[30:40]", "val_bank": "x.npz[10:30]",
             "fit_queries": "s", **eval_changes}
    shard_sets = {"s": {"generator": "taesd", "input": "x.npz", "limit": 10, "views": 1}}
    return _study_file(tmp_path, eval=eval_, shard_sets=shard_sets, decision={"metric": "knn", "split": "val"})


def test_the_fit_split_scores_the_pretraining_images_against_the_val_bank(tmp_path):
    from gcl.eval.study.scoring import EvalData

    study = load_study(_fit_study(tmp_path))
    splits = EvalData(study.eval, study.manifest_path("s")).splits()
    assert set(splits) == {"val", "fit"}
    bank, queries = splits["fit"]
    assert (bank.path, bank.start, bank.stop) == ("x.npz", 10, 30) and queries.path == str(study.manifest_path("s"))
    for seed, (fit, val) in enumerate([(80.0, 50.0), (78.0, 51.0)]):
        rec = _result(study, "ctrl", seed, val)
        rec["scores"] = {"last": {"val": {"knn_top1": val}, "fit": {"knn_top1": fit}}}
        study.result_path("ctrl", seed).write_text(json.dumps(rec))
    results, stale = load_results(study)
    md = format_report(study, summarize(study, results), results, stale)
    assert "| ctrl | 2 | 79.00 | 50.50 | +28.50 (+30.00, +27.00) |" in md


@pytest.mark.parametrize("change, message", [
    ({"fit_queries": "nope"}, "must name a synthesized shard set"),
    ({"val_bank": "x.npz[5:30]"}, "holds shard set s's pretraining images"),
])
def test_a_fit_split_is_checked(tmp_path, change, message):
    with pytest.raises(StudyError, match=message):
        load_study(_fit_study(tmp_path, **change))


def test_synthesis_progress_counts_the_shards_gcl_synth_planned(tmp_path):
    from gcl.eval.study.progress import synthesis_progress

    options = {"limit": 5000, "per_class": 100}
    assert synthesis_progress(tmp_path, options) == (0, None)  # per_class: the limit does not say how many
    (tmp_path / "plan.json").write_text(json.dumps({"num_shards": 1}))
    (tmp_path / "s-000000.stats.json").write_text("{}")
    assert synthesis_progress(tmp_path, options) == (1, 1)
