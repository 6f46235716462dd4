"""A study's report from its result files: results.md (one row per arm, paired deltas against the
control) and results.png (accuracy per arm with every seed, and accuracy against a numeric arm
field when the study names one). Rebuilt from the JSONs alone by `gcl-eval study --report-only`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gcl.eval.study.config import Study
from gcl.eval.study.evidence import equivalence_lines, family_line, power_line, regime_lines
from gcl.eval.study.plot import plot_report
from gcl.eval.study.stats import PairedTest, count_positive, mean_std, paired_deltas, paired_test, pooled_delta_std
from gcl.eval.study.result_schema import read_result


def split_scores(result: dict, split: str, checkpoint: str = "last") -> dict | None:
    """{'knn', 'linear', 'mean'} top-1 of one result on one split (None when it was not scored).
    Results written before splits and checkpoints were recorded hold last.ckpt's test scores at
    the top level."""
    scores = (result.get("scores") or {}).get(checkpoint, {}).get(split)
    if scores is None and split == "test" and checkpoint == "last" and "scores" not in result and "knn_top1" in result:
        scores = result
    if not scores or "knn_top1" not in scores:
        return None
    out = {"knn": float(scores["knn_top1"])}
    if "linear_top1" in scores:
        out["linear"] = float(scores["linear_top1"])
        out["mean"] = (out["knn"] + out["linear"]) / 2
    return out


@dataclass
class ArmRow:
    arm: str
    # seed -> top-1 on the decision split, last.ckpt: knn, linear and the primary metric
    knn: dict[int, float] = field(default_factory=dict)
    linear: dict[int, float] = field(default_factory=dict)
    primary: dict[int, float] = field(default_factory=dict)
    deltas: dict[int, float] = field(default_factory=dict)  # seed -> kNN delta vs control
    linear_deltas: dict[int, float] = field(default_factory=dict)  # seed -> linear top-1 delta vs control
    primary_deltas: dict[int, float] = field(default_factory=dict)  # seed -> primary-metric delta vs control
    train_seconds: list[float] = field(default_factory=list)
    synth: dict | None = None
    shard_set: str = ""
    uses_generated: bool = True
    x: float | None = None
    series: str | None = None  # which sweep panel x belongs to (None: the study's plot.label panel)
    train_flops: float | None = None  # training FLOPs per training image over the run (all epochs)

    @property
    def n(self) -> int:
        return len(self.knn)

    @property
    def positive(self) -> int:
        return count_positive(self.primary_deltas)


def _lookup(recipe: dict, dotted: str):
    value = recipe
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def uses_generated(recipe: dict) -> bool:
    """Whether an arm reads generated views at all (else its shard set's synthesis cost is not its cost).
    A recipe without gen_prob gets gcl-train's default, which is not 0: counted as using them."""
    members = recipe.get("members")
    if isinstance(members, list):
        return any(m != "orig" for m in members)
    return recipe.get("gen_prob", 1) > 0


def load_results(study: Study, problems: list[str] | None = None) -> tuple[list[dict], list[str]]:
    """Current results of the study's arms and seeds, and the names of stale ones (left out).
    Each file is parsed with result_schema: what it cannot hold (a file of the wrong shape, a
    score that is not a number from 0 to 100) is left out and said in `problems`."""
    results, stale = [], []
    for arm in study.arms:
        for seed in study.seeds:
            path = study.result_path(arm, seed)
            if not path.is_file():
                continue
            record, notes = read_result(path, arm, seed)
            if problems is not None:
                problems.extend(notes)
            if record is None:
                continue
            if record.get("digest") == study.digest(arm):
                results.append(record)
            else:
                stale.append(study.run_name(arm, seed))
    return results, stale


def summarize(study: Study, results: list[dict], train_flops: dict[str, int] | None = None) -> list[ArmRow]:
    """train_flops: arm -> the run's training FLOPs per training image (measure_train_flops)."""
    train_flops = train_flops or {}
    rows = {a: ArmRow(a, shard_set=study.arms[a].shards, uses_generated=uses_generated(study.merged[a]),
                      train_flops=train_flops.get(a),
                      x=study.arms[a].x if study.arms[a].x is not None else
                      (_lookup(study.merged[a], study.plot_x) if study.plot_x else None),
                      series=study.arms[a].series) for a in study.arms}
    metric, split = study.decision.metric, study.decision.split
    for r in results:
        row = rows[r["arm"]]
        scores = split_scores(r, split)
        if scores is not None:
            row.knn[r["seed"]] = scores["knn"]
            if "linear" in scores:
                row.linear[r["seed"]] = scores["linear"]
            if metric in scores:
                row.primary[r["seed"]] = scores[metric]
        row.train_seconds.append(r["train"]["seconds"])
        row.synth = r.get("synth")
    for row in rows.values():
        control = study.control_of(row.arm)
        if control is not None:
            row.deltas = paired_deltas(row.knn, rows[control].knn)
            row.linear_deltas = paired_deltas(row.linear, rows[control].linear)
            row.primary_deltas = paired_deltas(row.primary, rows[control].primary)
    return list(rows.values())


def _pm(values: list[float]) -> str:
    mean, std = mean_std(values)
    if mean is None:
        return "—"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _deltas(control: str | None, deltas: dict[int, float], with_positive: bool = False, study_control: str = "") -> str:
    """Mean and per-seed paired deltas; an arm paired against its own control says which."""
    if control is None:
        return "(control)"
    if not deltas:
        return "—"
    mean, _ = mean_std(list(deltas.values()))
    positive = f"; {count_positive(deltas)}/{len(deltas)} > 0" if with_positive else ""
    against = f"vs {control}: " if control != study_control else ""
    return against + f"{mean:+.2f} (" + ", ".join(f"s{s} {d:+.2f}" for s, d in deltas.items()) + positive + ")"


def _synth(row: ArmRow) -> str:
    if not row.uses_generated:
        return "none (no generated views)"
    s = row.synth or {}
    parts = [row.shard_set]
    if s.get("seconds") is not None:
        parts.append(f"{s['seconds']:.0f} s" + (" (last sitting)" if s.get("source") == "throughput" else "")
                     + (f" ({s['cpu_seconds']:.0f} CPU-s, load {s['load_avg_1m']:.1f})"
                        if isinstance(s.get("cpu_seconds"), (int, float)) and isinstance(s.get("load_avg_1m"), (int, float))
                        else ""))
    if s.get("flops_per_image") is not None:
        parts.append(f"{s['flops_per_image'] / 1e9:.2f} GFLOP/img")
    return ", ".join(parts)


def compute_ratio(row: ArmRow, control: ArmRow) -> float | None:
    """(training FLOPs + the shard set's synthesis FLOPs, per image) / the control's training FLOPs.
    Synthesis counts only for arms that read generated views; it is the whole set's cost (all K
    views), paid once however many arms share the set."""
    if row.train_flops is None or not control.train_flops:
        return None
    synth = (row.synth or {}).get("flops_per_image") if row.uses_generated else 0.0
    if synth is None:
        return None
    return (row.train_flops + synth) / control.train_flops


METRIC_NAMES = {"mean": "mean of kNN and linear top-1", "knn": "kNN top-1", "linear": "linear top-1"}


def _test_cells(test: PairedTest | None, alpha: float, planned: int) -> str:
    """Mean Δ | one-sided lower bound | 95% CI | p | verdict. The verdict waits for all `planned`
    seeds: reading the rule at every interim look and stopping on a good one would raise the
    false-positive rate above alpha, so interim rows show the interval but no verdict."""
    if test is None:
        return "— | — | — | — | —"
    if test.lower is None:
        return f"{test.mean:+.2f} | — | — | — | one seed: no test"
    verdict = ("**helps**" if test.helps else "not shown") if test.n >= planned else \
        f"interim ({test.n}/{planned} seeds): no verdict yet"
    return (f"{test.mean:+.2f} | {test.lower:+.2f} | [{test.ci[0]:+.2f}, {test.ci[1]:+.2f}] | {test.p:.3f} | "
            f"{verdict}")


def format_table(study: Study, rows: list[ArmRow]) -> str:
    d = study.decision
    level = f"{1 - d.alpha:.0%}"
    head = (f"| arm | n | kNN top-1 | linear top-1 | {d.metric} | Δ {d.metric} vs control (per seed) | Δ {d.metric} "
            f"| {level} lower bound | 95% CI | p (one-sided) | verdict | Δ kNN | Δ linear | train min | synth cost "
            "| train GFLOP/img | compute vs control |")
    lines = [head, "|" + " --- |" * 17]
    by_name = {r.arm: r for r in rows}
    for r in rows:
        control = study.control_of(r.arm)
        ratio = compute_ratio(r, by_name[control or r.arm])
        minutes, _ = mean_std(r.train_seconds)
        test = paired_test(list(r.primary_deltas.values()), d.alpha) if control is not None else None
        per_seed = _deltas(control, r.primary_deltas, study_control=study.control)
        lines.append(f"| {r.arm} | {r.n} | {_pm(list(r.knn.values()))} | {_pm(list(r.linear.values()))} | "
                     f"{_pm(list(r.primary.values()))} | {per_seed} | "
                     f"{'(control) | — | — | — | —' if control is None else _test_cells(test, d.alpha, len(study.seeds))} | "
                     f"{_mean_delta(control, r.deltas)} | {_mean_delta(control, r.linear_deltas)} | "
                     f"{'—' if minutes is None else f'{minutes / 60:.1f}'} | "
                     f"{_synth(r)} | {'—' if r.train_flops is None else f'{r.train_flops / 1e9:.1f}'} | "
                     f"{'—' if ratio is None else f'{ratio:.2f}x'} |")
    return "\n".join(lines)


def _mean_delta(control: str | None, deltas: dict[int, float]) -> str:
    if control is None or not deltas:
        return "—"
    return f"{mean_std(list(deltas.values()))[0]:+.2f}"


def selection_lines(study: Study, rows: list[ArmRow]) -> list[str]:
    """A screen's choice by the rule in its study file: the screened arm with the largest mean paired
    Δ of the primary metric, if that Δ reaches the bar. Like the verdict, it is read only when every
    screened arm has all its planned seeds."""
    bar = study.decision.select_min_delta
    if bar is None:
        return []
    by_name = {r.arm: r for r in rows}
    screened = study.screened_arms()
    rule = (f"**Selection rule** (as the study file states it): of the screened arms ({', '.join(screened)}), the one "
            "with the largest mean paired Δ of the primary metric over its control goes to a confirmatory study on the test split "
            f"with fresh seeds if that Δ is at least {bar:+.2f} points; otherwise none does.")
    means = {a: mean_std(list(by_name[a].primary_deltas.values()))[0] for a in screened if by_name[a].primary_deltas}
    leader = max(means, key=lambda a: means[a], default=None)  # the first listed arm wins a tie
    done = sum(len(by_name[a].primary_deltas) for a in screened)
    planned = len(screened) * len(study.seeds)
    if done < planned:
        so_far = f"; largest mean Δ so far: {leader} {means[leader]:+.2f}" if leader else ""
        return [rule, "", f"Selection: interim ({done}/{planned} paired runs): no choice yet{so_far}.", ""]
    family = family_line(study, pooled_delta_std([by_name[a].primary_deltas for a in screened]))
    if means[leader] >= bar:
        choice = (f"Selection: **{leader}** (mean Δ {means[leader]:+.2f} ≥ {bar:+.2f}) goes to a confirmatory study. "
                  f"It is a candidate, not a result: the best of {len(screened)} arms on {len(study.seeds)} seeds, so "
                  "its Δ is biased upwards; only the fresh seeds on test can make a claim.")
    else:
        choice = f"Selection: none (the largest mean Δ, {leader}'s {means[leader]:+.2f}, is below {bar:+.2f})."
    return [rule, "", choice, "", *([family, ""] if family else [])]


def noise_lines(study: Study, results: list[dict]) -> list[str]:
    """The scatter of paired deltas of the primary metric per checkpoint and split: what
    averaged weights (avg.ckpt) buy, measured on the same runs."""
    out = []
    metric = study.decision.metric
    for checkpoint in study.eval.checkpoints:
        for split in ("val", "test"):
            values: dict[str, dict[int, float]] = {}
            for r in results:
                scores = split_scores(r, split, checkpoint)
                if scores and metric in scores:
                    values.setdefault(r["arm"], {})[r["seed"]] = scores[metric]
            deltas = [paired_deltas(values.get(a, {}), values.get(study.control_of(a), {}))
                      for a in study.arms if study.control_of(a) is not None]
            noise = pooled_delta_std(deltas)
            ctrl, ctrl_std = mean_std(list(values.get(study.control, {}).values()))
            if noise is not None:
                out.append(f"| {checkpoint}.ckpt | {split} | {noise:.2f} | {sum(len(x) for x in deltas)} | "
                           f"{'—' if ctrl_std is None else f'{ctrl_std:.2f}'} |")
    if not out:
        return []
    return ["Noise (std of paired Δ " + metric + " around each arm's mean, pooled; and the control's run-to-run "
            "std), per checkpoint and split:", "", "| checkpoint | split | paired Δ std | pairs | control std |",
            "| --- | --- | --- | --- | --- |", *out, ""]


def code_lines(results: list[dict]) -> list[str]:
    """Which code trained the runs (each sitting's commit, local changes and loader workers, as
    run.json recorded them): paired runs trained by different code are not the controlled
    comparison the table assumes, so a mix is flagged."""
    runs_by_code: dict[str, int] = {}
    for r in results:
        sittings = (r.get("train") or {}).get("code") or [{}]
        for key in {_code_label(s) for s in sittings}:
            runs_by_code[key] = runs_by_code.get(key, 0) + 1
    if not runs_by_code:
        return []
    listed = "; ".join(f"{key}: {n} run(s)" for key, n in sorted(runs_by_code.items()))
    if len(runs_by_code) == 1:
        return [f"Trained by: {listed}.", ""]
    return [f"**Runs trained by different code** (compare only runs of one version): {listed}.", ""]


def untimed_lines(results: list[dict]) -> list[str]:
    """Runs with more training sittings (gcl-train's own count in run.json) than the study timed: a
    sitting killed outright left no time record, so their train minutes are lower bounds."""
    short = [f"{r['arm']}-s{r['seed']}" for r in results
             if len((r.get("train") or {}).get("code") or []) > int((r.get("train") or {}).get("sittings") or 0)]
    if not short:
        return []
    return [f"Train minutes of {', '.join(short)} are lower bounds: a sitting of each was killed before its time "
            "was recorded.", ""]


def _code_label(sitting: dict) -> str:
    if not sitting.get("commit"):
        return "code version not recorded"
    label = f"commit {sitting['commit'][:12]}" + (" with local changes" if sitting.get("dirty") else "")
    workers = sitting.get("num_workers")
    return label + ("" if workers is None else f", {workers} loader worker(s)")


def format_report(study: Study, rows: list[ArmRow], results: list[dict], stale: list[str],
                  problems: list[str] = ()) -> str:
    ev, d = study.eval, study.decision
    split = ("the test split" + f" ({ev.test})") if d.split == "test" else f"the validation split ({ev.val_queries})"
    out = [f"# Study {study.name}", "",
           f"Seeds {study.seeds}; control `{study.control}`. Scores of each run's last.ckpt on {split}: kNN "
           f"k={ev.k}, T={ev.temperature}, and a linear probe on frozen features{'' if ev.linear else ' (off)'}. "
           "Mean ± sample std over seeds; Δ is paired by seed (same seed = same initialisation, data order and "
           "augmentation draws).", "",
           f"**Decision rule** (as the study file states it): primary metric = {METRIC_NAMES[d.metric]}; "
           f"one-sided paired t-test of arm − control; an arm **helps** only if the {1 - d.alpha:.0%} lower "
           "confidence bound of its mean Δ is above 0. The two-sided 95% interval is shown with every verdict; "
           "'not shown' means the data do not carry a gain (an interval containing 0 is no evidence either way). "
           f"The rule is read once all {len(study.seeds)} planned seeds have a paired result; until then the verdict "
           "says 'interim' (stopping at a good interim look would make false wins more likely than alpha).",
           "", format_table(study, rows), "", *selection_lines(study, rows)]
    if study.note:
        out[2:2] = [study.note.strip(), ""]
    out += equivalence_lines(study, rows)
    noise = pooled_delta_std([r.primary_deltas for r in rows])
    if noise:
        n = max((len(r.primary_deltas) for r in rows), default=0)
        df = sum(len(r.primary_deltas) - 1 for r in rows if len(r.primary_deltas) > 1)
        out += [power_line(study, noise, df, n), ""]
    out += noise_lines(study, results)
    out += regime_lines(study, results)
    out += code_lines(results)
    out += untimed_lines(results)
    out.append("Train minutes: wall time per run. Train GFLOP/img: every view's forward and backward pass and the "
               "loss, per training image over all epochs (FlopCounterMode; augmentation left out); compute vs "
               "control adds the shard set's synthesis FLOPs per image for arms that read generated views.")
    missing = [study.run_name(r.arm, s) for r in rows for s in study.seeds if s not in r.knn]
    failed = [study.run_name(a, s) for a in study.arms for s in study.seeds if study.failed_path(a, s).is_file()]
    for label, names in (("Missing", missing), ("Failed (see runs/*.failed.json)", failed),
                         ("Stale, left out (arm changed since they ran)", stale)):
        if names:
            out.append(f"{label}: {', '.join(names)}.")
    if problems:
        out.append(f"Left out of every number above ({len(problems)}): " + "; ".join(problems) + ".")
    return "\n".join(out).rstrip() + "\n"


def write_report(study: Study, log=print, train_flops: dict[str, int] | None = None) -> tuple[Path, Path] | None:
    """results.md and results.png in the study folder; None when no run has a result yet.
    train_flops: arm -> the run's training FLOPs per training image (measure_train_flops), for the cost columns."""
    from gcl.io import write_bytes_atomic

    problems: list[str] = []
    results, stale = load_results(study, problems)
    for problem in problems:
        log(f"left out: {problem}")
    if not results:
        log("no results yet: nothing to report")
        return None
    rows = summarize(study, results, train_flops)
    md, png = study.folder / "results.md", study.folder / "results.png"
    write_bytes_atomic(md, format_report(study, rows, results, stale, problems).encode())
    plot_report(study, rows, png)
    log(format_table(study, rows))
    log(f"wrote {md} and {png}")
    return md, png
