"""Probe results: one JSON file per (probe, test data) and a row appended to a markdown table.

A run's results live in RUN/eval/ (JSON `{probe}-{test}-{encoder}-{settings}.json`, table
`results.md`), so `gcl-eval compare RUN...` finds them next to the run's logs. The settings part
(set sizes, probe parameters) keeps a result measured another way beside the earlier one instead
of overwriting it; the same settings again replace their own file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

from gcl.io import write_json_atomic

TABLE_COLUMNS = ("time", "probe", "encoder", "method", "epoch", "train", "test", "n_train", "n_test",
                 "top1", "top5", "params")


# Where results without a run folder (baselines) go unless --output says otherwise: a gitignored
# folder, never the current folder itself.
NO_RUN_RESULTS = "out/eval"


def results_dir(ckpt_path: str | None, out: str | None) -> Path:
    """--output if given; else RUN/eval for a checkpoint inside a run folder; else NO_RUN_RESULTS."""
    if out:
        return Path(out)
    if ckpt_path:
        p = Path(ckpt_path)
        run = p if p.is_dir() else p.parent
        if run.name == "checkpoints":
            run = run.parent
        return run / "eval"
    return Path(NO_RUN_RESULTS)


def _slug(s: str) -> str:
    stem = Path(s.rstrip("/")).name
    stem = re.sub(r"\.(npz|json|tar)$", "", stem)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "data"


def settings_tag(record: dict) -> str:
    """'{n_train}x{n_test}-{hash}': what a result was measured with (sizes, data, probe parameters)."""
    settings = {k: record.get(k) for k in ("train", "test", "n_train", "n_test", "params")}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{record.get('n_train')}x{record.get('n_test')}-{digest}"


def save_result(record: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write `{probe}-{test}-{encoder}-{settings}.json` (the latest result of these settings) and
    append a table row."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = dict(record, time=record.get("time") or time.strftime("%Y-%m-%d %H:%M:%S"))
    for key in ("encoder", "train", "test", "shards"):  # a result names no absolute local path
        value = record.get(key)
        if isinstance(value, str) and os.path.isabs(value):
            record[key] = os.path.relpath(value, os.path.abspath(out_dir))
    enc = _slug(str(record.get("encoder_id", "")))[:24]
    json_path = out_dir / f"{record['probe']}-{_slug(record['test'])}-{enc}-{settings_tag(record)}.json"
    write_json_atomic(json_path, record)
    table = out_dir / "results.md"
    append_row(table, record)
    return json_path, table


def append_row(table: Path, record: dict) -> None:
    new = not table.exists() or table.stat().st_size == 0
    row = []
    for col in TABLE_COLUMNS:
        v = record.get(col, "")
        if col == "epoch" and isinstance(v, int):
            v = v + 1  # records keep the checkpoint's 0-based epoch; people count from 1, as compare does
        if isinstance(v, float):
            v = f"{v:.2f}"
        elif isinstance(v, dict):
            v = ", ".join(f"{k}={val}" for k, val in v.items())
        row.append(str(v).replace("|", "/"))
    with open(table, "a") as fh:
        if new:
            fh.write("| " + " | ".join(TABLE_COLUMNS) + " |\n")
            fh.write("|" + "|".join("---" for _ in TABLE_COLUMNS) + "|\n")
        fh.write("| " + " | ".join(row) + " |\n")


def load_results(run_dir: str | os.PathLike) -> dict[str, dict]:
    """Latest result per probe ('knn', 'linear') found in RUN/eval/*.json (newest file wins)."""
    return {probe: recs[-1] for probe, recs in load_all_results(run_dir).items()}


def load_all_results(run_dir: str | os.PathLike) -> dict[str, list[dict]]:
    """Every result per probe ('knn', 'linear') in RUN/eval/*.json, oldest first."""
    out: dict[str, list[dict]] = {}
    eval_dir = Path(run_dir) / "eval"
    if not eval_dir.is_dir():
        return out
    for p in sorted(eval_dir.glob("*.json"), key=lambda q: (q.stat().st_mtime, q.name)):
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            continue
        if isinstance(rec, dict) and rec.get("probe") in ("knn", "linear") and isinstance(rec.get("top1"), (int, float)):
            out.setdefault(rec["probe"], []).append(rec)
    return out
