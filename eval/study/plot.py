"""results.png: accuracy per arm with every seed, and accuracy along a numeric arm field (one panel
per sweep) when the study names one."""

from __future__ import annotations

from pathlib import Path

from gcl.eval.study.stats import mean_std


def plot_report(study, rows: list, path: Path) -> None:
    """rows: the report's ArmRow list (per-seed kNN and linear top-1, x and series of each arm)."""
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
    ax.set_title(f"{study.name}: kNN (o) and linear (s) per seed ({study.decision.split}); line = mean")
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
