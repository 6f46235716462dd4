"""What a study's numbers carry, in words for results.md: the equivalence test beside the
superiority verdict, the power quoted with the uncertainty of the noise it is estimated from, and
a screen's chance of passing a null arm. Pure functions of the report's rows."""

from __future__ import annotations

from collections import Counter

from gcl.eval.study.stats import (EquivalenceTest, PairedTest, equivalence_test, family_false_pass, paired_power,
                                  paired_test, seeds_for_power, std_interval)


def reading(test: PairedTest | None, eq: EquivalenceTest | None, planned: int) -> str:
    """The two verdicts read together, no stronger than the intervals: a gain, no practical
    difference, both (a gain smaller than the margin), or neither (inconclusive)."""
    if test is None or test.n < planned:
        return "interim: no verdict yet"
    if test.lower is None:
        return "no test (the paired deltas do not vary)"
    helps, same = test.helps, eq is not None and eq.equivalent
    if helps and same:
        return f"helps, by less than the ±{eq.margin:.1f} margin"
    if helps:
        return "helps"
    if same:
        return f"no practical difference (within ±{eq.margin:.1f})"
    if eq is None:
        return "not shown to help"
    side = " (the interval reaches below the margin: a loss is not ruled out)" if eq.ci and eq.ci[0] <= -eq.margin \
        else ""
    return "inconclusive: neither a gain nor equivalence shown" + side


def equivalence_lines(study, rows) -> list[str]:
    """One row per paired arm: the TOST interval, p and verdict, and the two verdicts read together.
    Empty when the study file sets no equivalence margin (its rule then has no equivalence part)."""
    d = study.decision
    margin = d.equivalence_margin
    if margin is None:
        return []
    planned = len(study.seeds)
    level = f"{1 - 2 * d.alpha:.0%}"
    lines = [f"**Equivalence rule** (as the study file states it): the arm and its control differ by no practical "
             f"amount if both one-sided paired t-tests (TOST, alpha {d.alpha}) reject a difference of ±{margin:.1f} "
             f"points, i.e. the {level} interval of the mean Δ lies inside (−{margin:.1f}, +{margin:.1f}). Read, like "
             "the superiority rule, once every planned seed is in.", "",
             f"| arm | n | Δ {d.metric} | {level} interval | p (TOST) | equivalence | the two verdicts together |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if study.control_of(row.arm) is None or not row.primary_deltas:
            continue
        deltas = list(row.primary_deltas.values())
        eq = equivalence_test(deltas, margin, d.alpha)
        test = paired_test(deltas, d.alpha)
        if eq.ci is None:
            cells = "— | — | " + ("no test" if eq.n >= planned else f"interim ({eq.n}/{planned} seeds)")
        else:
            verdict = ("**equivalent**" if eq.equivalent else "not shown") if eq.n >= planned else \
                f"interim ({eq.n}/{planned} seeds): no verdict yet"
            cells = f"[{eq.ci[0]:+.2f}, {eq.ci[1]:+.2f}] | {eq.p:.3f} | {verdict}"
        lines.append(f"| {row.arm} | {eq.n} | {eq.mean:+.2f} | {cells} | {reading(test, eq, planned)} |")
    return lines + [""]


def power_line(study, noise: float, df: int, seeds: int) -> str:
    """Power at the pooled noise, with the range it spans over the noise's own 95% interval: a power
    estimated from the same few runs it describes is not a settled number."""
    d = study.decision
    power = paired_power(d.effect, noise, seeds, d.alpha)
    needed = seeds_for_power(d.effect, noise, d.power, d.alpha)
    text = (f"Power: paired Δ {d.metric} scatter by {noise:.2f} points (pooled over arms); at that noise the test on "
            f"{seeds} seeds finds a true {d.effect:+.1f} effect {power:.0%} of the time")
    bounds = std_interval(noise, df)
    if bounds is not None:
        low, high = (paired_power(d.effect, s, seeds, d.alpha) for s in reversed(bounds))
        text += (f" ({low:.0%}-{high:.0%} over the 95% interval of that scatter, [{bounds[0]:.2f}, {bounds[1]:.2f}], "
                 f"{df} degrees of freedom)")
    return text + f"; {d.power:.0%} power needs {needed if needed else 'more than 1000'} seeds at the point estimate."


def family_line(study, noise: float | None) -> str:
    """A screen's chance of choosing an arm that does nothing: at least one of its null arms clears
    the bar, at the study's own noise (the per-arm rate understates it)."""
    bar = study.decision.select_min_delta
    screened = study.screened_arms()
    if bar is None or not screened or noise is None:
        return ""
    groups = list(Counter(study.control_of(a) for a in screened).values())
    one = family_false_pass([1], len(study.seeds), noise, bar)
    some = family_false_pass(groups, len(study.seeds), noise, bar)
    return (f"False passes at the measured noise ({noise:.2f}): an arm with no effect clears {bar:+.2f} on "
            f"{len(study.seeds)} seeds {one:.0%} of the time; with {len(screened)} such arms (those sharing a control "
            f"correlate), at least one clears it {some:.0%} of the time.")


def regime_lines(study, results: list[dict]) -> list[str]:
    """The fit split beside val, per arm (last.ckpt): kNN top-1 of the pretraining images and of
    held-out validation queries against the same bank. A large gap says the encoder fits the few
    images it saw better than it generalises: a data-limited regime."""
    if not study.eval.fit_queries:
        return []
    rows = []
    for arm in study.arms:
        pairs = [(s["fit"]["knn_top1"], s["val"]["knn_top1"]) for r in results if r["arm"] == arm
                 for s in [((r.get("scores") or {}).get("last") or {})] if "fit" in s and "val" in s]
        if pairs:
            fit, val = (sum(p[i] for p in pairs) / len(pairs) for i in (0, 1))
            per_seed = ", ".join(f"{f - v:+.2f}" for f, v in pairs)
            rows.append(f"| {arm} | {len(pairs)} | {fit:.2f} | {val:.2f} | {fit - val:+.2f} ({per_seed}) |")
    if not rows:
        return []
    return [f"Fit against held out (last.ckpt, kNN top-1, bank {study.eval.val_bank or study.eval.bank}): the "
            f"pretraining images of shard set {study.eval.fit_queries} as queries, beside the validation queries.", "",
            "| arm | n | fit kNN | val kNN | fit − val (per seed) |", "| --- | --- | --- | --- | --- |", *rows, ""]
