"""Stats for people: a progress bar with images/s and error counts, the end-of-run summary
table, and `gcl-synth status` (done / pending / failed shards of an output folder)."""

from __future__ import annotations

import fnmatch
import os
import posixpath
from collections import Counter

from gcl.errors import UserError
from gcl.manifest import is_url, load_manifest, read_stats
from gcl.shardset import OutputLayout
from gcl.synth.plan import read_plan


class Progress:
    def __init__(self, total: int, enabled: bool = True):
        from tqdm import tqdm

        self.errors = 0
        self.bar = tqdm(total=total, unit="img", disable=not enabled, dynamic_ncols=True, desc="synth")

    def update(self, done: int, errors: int = 0) -> None:
        self.errors += errors
        if errors:
            self.bar.set_postfix(errors=self.errors)
        self.bar.update(done + errors)

    def close(self) -> None:
        self.bar.close()


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def summary_table(plan, results: dict, failed: dict, seconds: float) -> str:
    errors = Counter()
    for st in results.values():
        errors.update(st["errors"])
    resumed = sum(1 for st in results.values() if st.get("resumed"))
    made = sum(st["samples"] for st in results.values() if not st.get("resumed"))
    samples = sum(st["samples"] for st in results.values())
    rows = [
        ("shards", f"{len(results)}/{len(plan.tasks)} committed ({resumed} already done), {len(failed)} failed"),
        ("samples", f"{samples} view families ({plan.options.views} generated views each)"),
        ("skipped inputs", ", ".join(f"{k}={v}" for k, v in sorted(errors.items())) or "none"),
        ("time", f"{seconds:.1f} s, {made / seconds if seconds > 0 else 0:.2f} img/s (this run)"),
    ]
    return "summary\n" + _table(rows)


def shard_status(out_dir: str) -> dict:
    """done / pending / failed(unfinished tmp) shards of an output folder, from plan.json + stats files.
    The folder may be a store URL (s3://bucket/prefix): it is listed once and read, never written."""
    remote = is_url(out_dir)
    present = _store_names(out_dir) if remote else None

    def exists(path: str) -> bool:
        return posixpath.basename(path) in present if remote else os.path.exists(path)

    plan_path = OutputLayout(out_dir, "").plan
    if not exists(plan_path):
        raise FileNotFoundError(f"{out_dir} has no plan.json: not a gcl-synth output folder")
    plan = read_plan(plan_path)
    name, n = plan.name, plan.num_shards
    layout = OutputLayout(out_dir, name)
    done, pending, partial = [], [], []
    samples = 0
    begun = _store_unfinished(name, present) if remote else set()
    for i in range(n):
        st = layout.stats(i)
        if exists(st):
            done.append(i)
            samples += read_stats(st)["samples"]
        else:
            pending.append(i)
            if (i in begun) if remote else layout.unfinished(i):
                partial.append(i)
    failed = load_manifest(layout.manifest).get("failed", {}) if exists(layout.manifest) else {}
    return {"name": name, "shards": n, "done": done, "pending": pending, "partial": partial,
            "failed": {int(k): v for k, v in failed.items() if int(k) in pending}, "samples": samples}


def _store_names(folder_url: str) -> set[str]:
    from gcl.streams import StreamError, list_folder

    try:
        return set(list_folder(folder_url))
    except StreamError as exc:
        raise UserError(str(exc)) from None


def _store_unfinished(name: str, present: set[str]) -> set[int]:
    """Shards whose write began in a store folder and never committed: temporary objects, or a tar
    without the stats file that commits it (the caller keeps those without stats)."""
    prefix, found = f"{name}-", set()
    for entry in present:
        index, rest = entry[len(prefix):len(prefix) + 6], entry[len(prefix) + 6:]
        if entry.startswith(prefix) and index.isdigit() and (rest == ".tar" or fnmatch.fnmatchcase(rest, ".*.tmp-*")):
            found.add(int(index))
    return found


def status_text(st: dict) -> str:
    def fmt(ids):
        return ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "") if ids else "-"

    rows = [("name", st["name"]), ("done", f"{len(st['done'])}/{st['shards']} shards, {st['samples']} samples"),
            ("pending", f"{len(st['pending'])}: {fmt(st['pending'])}"),
            ("interrupted", f"{len(st['partial'])}: {fmt(st['partial'])}"),
            ("failed", f"{len(st['failed'])}: " + ("; ".join(f"{k}: {v}" for k, v in st["failed"].items()) or "-"))]
    return _table(rows)
