"""`gcl-eval compare RUN...`: one table of runs and a plot of accuracy over epochs from their logs.

A run folder (written by gcl-train) holds run.json (method, shards, gen_prob, epochs, ...) and
metrics.csv (one row per logged step/epoch; columns include epoch, knn_top1, linear_top1, blank
where a row did not log that metric). Offline probe results come from RUN/eval/*.json
(gcl-eval knn/linear); when a run has none, the last online value from metrics.csv is shown.
Every number is shown with how it was measured (gcl-eval or online, and on how many bank / test
images), and a column that holds numbers measured in different ways says so under the table:
numbers from different protocols or data sizes are not comparable.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from gcl.eval.results import load_all_results

PLOT_METRICS = ("knn_top1", "linear_top1")
ONLINE_PREFIXES = ("test_", "val_", "")  # first present wins, per row


@dataclass
class RunSummary:
    name: str
    path: str
    method: str = ""
    shards: str = ""
    gen_prob: str = ""
    epochs: str = ""
    knn: str = ""
    linear: str = ""
    protocol: dict[str, str] = field(default_factory=dict)  # probe -> how its number was measured
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # metric -> [(epoch, acc)]
    offline: dict[str, tuple[float, float]] = field(default_factory=dict)  # probe -> (epoch, acc) from gcl-eval
    results: dict[str, list[dict]] = field(default_factory=dict)  # probe -> every gcl-eval result, oldest first
    online: dict[str, tuple[str, float]] = field(default_factory=dict)  # probe -> (how, last value) from gcl-train


def _short(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return ",".join(_short(x) for x in v)
    s = str(v)
    return Path(s.rstrip("/")).name if "/" in s else s  # a manifest/shard path: its file name


def read_metrics(path: Path) -> dict[str, list[tuple[float, float]]]:
    """metric -> [(epoch, value)] for the PLOT_METRICS present; later rows win for a repeated epoch."""
    curves: dict[str, dict[float, float]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            ep = _num(row.get("epoch"))
            if ep is None:
                continue
            for m in PLOT_METRICS:
                # gcl-train logs test_* (reported, never monitored) and val_* (selects best.ckpt);
                # older runs logged the bare name. Show the test curve when there is one.
                v = next((x for x in (_num(row.get(p + m)) for p in ONLINE_PREFIXES) if x is not None), None)
                if v is not None:
                    curves.setdefault(m, {})[ep] = v
    return {m: sorted(d.items()) for m, d in curves.items()}


def _num(s):
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _find_metrics(run: Path) -> Path | None:
    if (run / "metrics.csv").is_file():
        return run / "metrics.csv"
    found = sorted(run.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def summarize_run(run_dir: str) -> RunSummary:
    run = Path(run_dir)
    s = RunSummary(name=run.resolve().name, path=str(run))
    info = {}
    if (run / "run.json").is_file():
        try:
            info = json.loads((run / "run.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            info = {}
        if not isinstance(info, dict):  # not what gcl-train writes: the run shows without its settings
            info = {}
    if isinstance(info.get("config"), dict):  # gcl-train nests the full config; top-level keys win
        info = {**info["config"], **{k: v for k, v in info.items() if k != "config"}}
    s.method = _short(info.get("method"))
    shards = info.get("manifest") or info.get("shards")
    s.shards = _short(shards) if shards else (f"{_short(info['input'])} (no shards)" if info.get("input") else "none")
    s.gen_prob = _short(info.get("gen_prob"))
    metrics = _find_metrics(run)
    if metrics is not None:
        s.curves = read_metrics(metrics)
    done = max((ep for pts in s.curves.values() for ep, _ in pts), default=None)
    planned = info.get("epochs") or info.get("max_epochs")
    s.epochs = _short(planned) if done is None else f"{int(done) + 1}/{_short(planned) or '?'}"
    s.results = load_all_results(run)
    for probe, metric in (("knn", "knn_top1"), ("linear", "linear_top1")):
        if s.curves.get(metric):
            s.online[probe] = (online_protocol(probe, info), s.curves[metric][-1][1])
        if probe in s.results:
            _show_result(s, probe, s.results[probe][-1])
        elif probe in s.online:
            _show_online(s, probe)
    return s


def _show_online(s: RunSummary, probe: str) -> None:
    s.protocol[probe], value = s.online[probe]
    setattr(s, probe, f"{value:.2f}")


def _show_result(s: RunSummary, probe: str, rec: dict) -> None:
    setattr(s, probe, f"{rec['top1']:.2f}")
    s.protocol[probe] = offline_protocol(rec)
    ep = _num(rec.get("epoch"))
    if ep is not None:
        s.offline[probe] = (ep, float(rec["top1"]))


def align_protocols(rows: list[RunSummary]) -> list[RunSummary]:
    """A run keeps every gcl-eval result (one file per setting) and its online numbers. Per probe,
    when the runs' numbers were measured in different ways, show in every run one way they all
    share: a gcl-eval setting (the one most recently measured on all of them), else gcl-train's
    online evaluation. Only runs that share no way of measuring get the table's 'mixes' note."""
    for probe in ("knn", "linear"):
        having = [r for r in rows if probe in r.protocol]
        if len(having) < 2 or len({r.protocol[probe] for r in having}) == 1:
            continue
        shared = set.intersection(*(_ways(r, probe) for r in having))
        offline = {way for way in shared if way.startswith("gcl-eval")}  # as offline_protocol words them
        if offline:
            def latest_everywhere(protocol: str) -> tuple[str, str]:
                return min(str(_of(r, probe, protocol).get("time", "")) for r in having), protocol

            chosen = max(offline, key=latest_everywhere)
            for r in having:
                _show_result(r, probe, _of(r, probe, chosen))
        elif shared:  # the online evaluation, measured alike in every run
            for r in having:
                _show_online(r, probe)
    return rows


def _ways(r: RunSummary, probe: str) -> set[str]:
    """Every way a run's number for this probe was measured: its gcl-eval settings, online."""
    ways = {offline_protocol(rec) for rec in r.results.get(probe, [])}
    return ways | ({r.online[probe][0]} if probe in r.online else set())


def _of(r: RunSummary, probe: str, protocol: str) -> dict:
    """The newest of a run's results measured this way."""
    return [rec for rec in r.results[probe] if offline_protocol(rec) == protocol][-1]


def _size(n) -> str:
    return "?" if n in (None, "") else str(n)


def offline_protocol(rec: dict) -> str:
    """'gcl-eval kNN k=20, 50000 bank / 10000 test' (linear: its epochs)."""
    params = rec.get("params") if isinstance(rec.get("params"), dict) else {}
    if rec.get("probe") == "knn":
        how = f"gcl-eval kNN k={params['k']}" if "k" in params else "gcl-eval kNN"
        return f"{how}, {_size(rec.get('n_train'))} bank / {_size(rec.get('n_test'))} test"
    how = f"gcl-eval linear {params['epochs']} ep" if "epochs" in params else "gcl-eval linear"
    return f"{how}, {_size(rec.get('n_train'))} train / {_size(rec.get('n_test'))} test"


def online_protocol(probe: str, info: dict) -> str:
    """How gcl-train measured its online numbers: bank and query sizes from run.json."""
    sizes = info.get("eval_sizes") if isinstance(info.get("eval_sizes"), dict) else {}
    limit = info.get("eval_limit")
    bank = sizes.get("bank") or (f"<={limit}" if limit else "?")
    test = sizes.get("test") or sizes.get("val") or (f"<={limit}" if limit else "?")
    how = "online kNN" if probe == "knn" else "online linear (trained with the encoder)"
    return f"{how}, {bank} bank / {test} test"


def disambiguate(rows: list[RunSummary]) -> list[RunSummary]:
    """Runs with the same folder name are shown as parent/name."""
    names = [r.name for r in rows]
    for r in rows:
        if names.count(r.name) > 1:
            r.name = f"{Path(r.path).resolve().parent.name}/{r.name}"
    return rows


def format_table(rows: list[RunSummary]) -> str:
    head = ["run", "method", "shards/manifest", "gen-prob", "epochs", "kNN top-1", "kNN measured as", "linear top-1",
            "linear measured as"]
    body = [[r.name, r.method, r.shards, r.gen_prob, r.epochs, r.knn or "-", r.protocol.get("knn", "-"),
             r.linear or "-", r.protocol.get("linear", "-")] for r in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    for probe, label in (("knn", "kNN"), ("linear", "linear")):
        kinds = sorted({r.protocol[probe] for r in rows if probe in r.protocol})
        if len(kinds) > 1:
            lines.append(f"\nnote: the {label} column mixes {len(kinds)} ways of measuring ({'; '.join(kinds)}): "
                         "compare only rows measured the same way (gcl-eval knn/linear on every run gives one)")
    return "\n".join(lines)


def plot_runs(rows: list[RunSummary], out: str) -> int:
    """Accuracy over epochs, one line per (run, metric); returns the number of curves drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    n = 0
    for i, r in enumerate(rows):
        color = f"C{i % 10}"
        for metric, style in zip(PLOT_METRICS, ("-", "--")):
            pts = r.curves.get(metric)
            if not pts:
                continue
            ax.plot([p[0] + 1 for p in pts], [p[1] for p in pts], style, color=color, marker="o", markersize=3,
                    label=f"{r.name} ({metric.split('_')[0]})")
            n += 1
        for probe, marker in (("knn", "*"), ("linear", "D")):
            if probe in r.offline:
                ep, acc = r.offline[probe]
                ax.plot([ep + 1], [acc], marker, color=color, markersize=9, label=f"{r.name} (gcl-eval {probe})")
                n += 1
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    last = max([p[0] + 1 for r in rows for pts in r.curves.values() for p in pts] +
               [ep + 1 for r in rows for ep, _ in r.offline.values()], default=1)
    ax.set_xlim(0.5, last + 0.5)  # epochs are 1-based on the axis; a one-epoch run still gets a sane scale
    if last <= 12:
        ax.set_xticks(range(1, int(last) + 1))
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("top-1 over epochs (lines: online kNN / linear; markers: gcl-eval probes)")
    ax.grid(alpha=0.3)
    if n:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no per-epoch accuracy logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return n
