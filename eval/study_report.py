"""A study's report from its result files: results.md (one row per arm, paired deltas against the
control) and results.png (accuracy per arm with every seed, and accuracy against a numeric arm
field when the study names one). Rebuilt from the JSONs alone by `gcl-eval study --report-only`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from gcl.eval.study_config import Study


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); std is None below two values."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval for the mean of paired deltas (None below two values). With 3
    seeds t(0.975, 2) = 4.30: the interval is wide, which is the honest size of a 3-seed claim."""
    mean, std = mean_std(values)
    if std is None:
        return None
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return mean - half, mean + half


def pooled_delta_std(rows: list["ArmRow"]) -> float | None:
    """The training noise of a paired difference: the std of per-seed kNN deltas around each
    arm's own mean, pooled over arms ((n - 1)-weighted variances); None below two seeds."""
    num = den = 0.0
    for r in rows:
        _, std = mean_std(list(r.deltas.values()))
        if std is not None:
            num += (len(r.deltas) - 1) * std**2
            den += len(r.deltas) - 1
    return math.sqrt(num / den) if den else None


def paired_power(effect: float, std: float, n: int, alpha: float = 0.05) -> float:
    """Chance that a two-sided paired t-test on n seeds finds a true mean difference `effect`
    when paired differences scatter with `std` (noncentral t)."""
    from scipy.stats import nct, t

    df, shift = n - 1, effect / (std / math.sqrt(n))
    crit = float(t.ppf(1 - alpha / 2, df))
    return float(1 - nct.cdf(crit, df, shift) + nct.cdf(-crit, df, shift))


def seeds_for_power(effect: float, std: float, power: float = 0.8, most: int = 1000) -> int | None:
    """The fewest seeds (>= 2) that give `power` for `effect`; None beyond `most`."""
    return next((n for n in range(2, most + 1) if paired_power(effect, std, n) >= power), None)


def count_positive(deltas: dict[int, float]) -> int:
    return sum(d > 0 for d in deltas.values())


def paired_deltas(arm: dict[int, float], control: dict[int, float]) -> dict[int, float]:
    """Per seed, arm minus control, on the seeds both have (same seed = same data order)."""
    return {s: arm[s] - control[s] for s in sorted(arm) if s in control}


@dataclass
class ArmRow:
    arm: str
    knn: dict[int, float] = field(default_factory=dict)  # seed -> kNN top-1
    linear: dict[int, float] = field(default_factory=dict)  # seed -> linear top-1
    deltas: dict[int, float] = field(default_factory=dict)  # seed -> kNN delta vs control
    linear_deltas: dict[int, float] = field(default_factory=dict)  # seed -> linear top-1 delta vs control
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
        return count_positive(self.deltas)

    def meets(self, bar: float) -> bool:
        mean, _ = mean_std(list(self.deltas.values()))
        return bool(self.deltas) and mean >= bar and self.positive == len(self.deltas)


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


def load_results(study: Study) -> tuple[list[dict], list[str]]:
    """Current results of the study's arms and seeds, and the names of stale ones (left out)."""
    results, stale = [], []
    for arm in study.arms:
        for seed in study.seeds:
            path = study.result_path(arm, seed)
            if not path.is_file():
                continue
            record = json.loads(path.read_text())
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
    for r in results:
        row = rows[r["arm"]]
        row.knn[r["seed"]] = r["knn_top1"]
        if "linear_top1" in r:
            row.linear[r["seed"]] = r["linear_top1"]
        row.train_seconds.append(r["train"]["seconds"])
        row.synth = r.get("synth")
    for row in rows.values():
        control = study.control_of(row.arm)
        if control is not None:
            row.deltas = paired_deltas(row.knn, rows[control].knn)
            row.linear_deltas = paired_deltas(row.linear, rows[control].linear)
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
        parts.append(f"{s['seconds']:.0f} s" + (" (last sitting)" if s.get("source") == "throughput" else ""))
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


def _interval(deltas: dict[int, float]) -> str:
    ci = t_interval(list(deltas.values()))
    return "—" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def format_table(study: Study, rows: list[ArmRow]) -> str:
    head = (f"| arm | n | kNN top-1 | linear top-1 | Δ kNN vs {study.control} (mean; per seed) | positive seeds "
            "| Δ kNN 95% CI | Δ linear (mean; per seed) | train min | synth cost | train GFLOP/img | compute vs control |")
    lines = [head, "|" + " --- |" * 12]
    by_name = {r.arm: r for r in rows}
    for r in rows:
        control = study.control_of(r.arm)
        ratio = compute_ratio(r, by_name[control or r.arm])
        pos = "—" if control is None or not r.deltas else f"{r.positive}/{len(r.deltas)}"
        minutes, _ = mean_std(r.train_seconds)
        lines.append(f"| {r.arm} | {r.n} | {_pm(list(r.knn.values()))} | {_pm(list(r.linear.values()))} | "
                     f"{_deltas(control, r.deltas, study_control=study.control)} | {pos} | {_interval(r.deltas)} | "
                     f"{_deltas(control, r.linear_deltas, True, study.control)} | "
                     f"{'—' if minutes is None else f'{minutes / 60:.1f}'} | "
                     f"{_synth(r)} | {'—' if r.train_flops is None else f'{r.train_flops / 1e9:.1f}'} | "
                     f"{'—' if ratio is None else f'{ratio:.2f}x'} |")
    return "\n".join(lines)


def format_report(study: Study, rows: list[ArmRow], results: list[dict], stale: list[str]) -> str:
    ev = study.eval
    n_bank = results[0]["eval"]["n_bank"] if results else "?"
    n_test = results[0]["eval"]["n_test"] if results else "?"
    out = [f"# Study {study.name}", "",
           f"Seeds {study.seeds}; control `{study.control}`. Each run's last.ckpt (nothing chosen on the test split): "
           f"kNN k={ev.k}, T={ev.temperature} with {n_bank} bank images ({ev.bank}) and {n_test} test images "
           f"({ev.test}); linear probe on frozen features{'' if ev.linear else ' (off)'}. Mean ± sample std over "
           "seeds; Δ is paired by seed (same seed = same data order). Train minutes: wall time per run. "
           "Train GFLOP/img: every view's forward and backward pass and the loss, per training image over "
           "all epochs (FlopCounterMode; augmentation left out); compute vs control adds the shard set's "
           "synthesis FLOPs per image for arms that read generated views. 95% CI: paired Student-t interval "
           "of the mean Δ kNN over seeds (an interval that contains 0 is no evidence either way).", "",
           format_table(study, rows), ""]
    if study.note:
        out[2:2] = [study.note.strip(), ""]
    if study.bar is not None:
        winners = [r.arm for r in rows if study.control_of(r.arm) is not None and r.meets(study.bar)]
        out.append(f"Bar (mean Δ kNN ≥ {study.bar:+.2f} with every seed positive): "
                   + (", ".join(winners) if winners else "no arm meets it yet") + ".")
        noise = pooled_delta_std(rows)
        if noise:
            n = len(study.seeds)
            needed = seeds_for_power(study.bar, noise)
            out.append(f"Noise: paired Δ kNN scatter by {noise:.2f} points (std around each arm's mean, pooled over "
                       f"arms); at that noise a paired t-test on {n} seeds finds a true {study.bar:+.2f} effect "
                       f"{paired_power(study.bar, noise, n):.0%} of the time, and 80% power needs "
                       f"{needed if needed else 'more than 1000'} seeds.")
    missing = [study.run_name(r.arm, s) for r in rows for s in study.seeds if s not in r.knn]
    failed = [study.run_name(a, s) for a in study.arms for s in study.seeds if study.failed_path(a, s).is_file()]
    for label, names in (("Missing", missing), ("Failed (see runs/*.failed.json)", failed),
                         ("Stale, left out (arm changed since they ran)", stale)):
        if names:
            out.append(f"{label}: {', '.join(names)}.")
    return "\n".join(out).rstrip() + "\n"


def plot_report(study: Study, rows: list[ArmRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_x = [r for r in rows if r.x is not None and r.knn]
    # one panel per sweep: arms naming a series share its panel; the others use plot.label's
    default_axis = study.plot_label or study.plot_x or "x"
    panels: dict[str, list[ArmRow]] = {}
    for r in with_x:
        panels.setdefault(r.series or default_axis, []).append(r)
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(7 + 5 * len(panels), 4.5), squeeze=False)
    ax = axes[0][0]
    for i, r in enumerate(rows):
        for values, marker, colour, dx in ((r.knn, "o", "tab:blue", -0.12), (r.linear, "s", "tab:orange", 0.12)):
            if values:
                ax.scatter([i + dx] * len(values), list(values.values()), marker=marker, color=colour, alpha=0.6, s=18)
                ax.hlines(mean_std(list(values.values()))[0], i + dx - 0.1, i + dx + 0.1, color=colour)
    ax.set_xticks(range(len(rows)), [r.arm for r in rows], rotation=30, ha="right")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{study.name}: kNN (o) and linear (s) per seed; bar = mean")
    control = rows[[r.arm for r in rows].index(study.control)]
    for ax2, (axis_title, members) in zip(axes[0][1:], panels.items()):
        members = sorted(members, key=lambda r: r.x)
        means = [mean_std(list(r.knn.values())) for r in members]
        ax2.plot([r.x for r in members], [m for m, _ in means], color="tab:blue", linewidth=1, alpha=0.5)
        for r, (mean, std) in zip(members, means):
            ax2.errorbar([r.x], [mean], yerr=[std or 0.0], fmt="o", capsize=3, label=r.arm)
            ax2.scatter([r.x] * r.n, list(r.knn.values()), color="grey", s=8, alpha=0.5)
        if control.knn:
            ax2.axhline(mean_std(list(control.knn.values()))[0], color="black", linestyle="--", linewidth=1,
                        label=f"{study.control} (control)")
        ax2.set_xlabel(axis_title)
        ax2.set_ylabel("kNN top-1 (%)")
        ax2.set_title("kNN top-1 along the sweep (mean ± std, seeds in grey)")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)


def write_report(study: Study, log=print, train_flops: dict[str, int] | None = None) -> tuple[Path, Path] | None:
    """results.md and results.png in the study folder; None when no run has a result yet.
    train_flops: arm -> the run's training FLOPs per training image (measure_train_flops), for the cost columns."""
    from gcl.io import write_bytes_atomic

    results, stale = load_results(study)
    if not results:
        log("no results yet: nothing to report")
        return None
    rows = summarize(study, results, train_flops)
    md, png = study.folder / "results.md", study.folder / "results.png"
    write_bytes_atomic(md, format_report(study, rows, results, stale).encode())
    plot_report(study, rows, png)
    log(format_table(study, rows))
    log(f"wrote {md} and {png}")
    return md, png
