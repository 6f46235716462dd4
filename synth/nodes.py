"""Several machines, one shard set: `gcl-synth run --node-rank R --num-nodes N`, then `finalize`.

Every node computes the same plan (sorted inputs, same options) and writes only the shards whose
index is R modulo N, so nodes never touch each other's files and share no lock (flock does not
span machines). Each node holds a lock of its own rank (two processes of one rank on one machine
still stop each other) and, when done, writes a part record (`NAME.node-R-of-N.json`: its
throughput and cost). `gcl-synth finalize OUTPUT` writes the one manifest once every shard of
the plan is committed (its stats file, written last, exists), and refuses while some are missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gcl.errors import UserError
from gcl.folderlock import FolderLock
from gcl.io import write_json_atomic
from gcl.manifest import read_json_file, write_manifest
from gcl.shardset import OutputLayout


class NotFinished(UserError):
    """finalize before every shard of the plan is committed."""


def node_tasks(tasks: list, rank: int, num_nodes: int) -> list:
    """This node's shards: every num_nodes-th from its rank (balanced, and the same on every node)."""
    return [t for t in tasks if t.index % num_nodes == rank]


def node_lock(output: str, rank: int, num_nodes: int) -> FolderLock:
    return FolderLock(output, f".gcl-synth.node-{rank}-of-{num_nodes}.lock", f"gcl-synth run (node {rank})",
                      "--output or --node-rank")


def part_path(output: str, name: str, rank: int, num_nodes: int) -> Path:
    return Path(output) / f"{name}.node-{rank}-of-{num_nodes}.json"


def write_part(output: str, manifest: dict, rank: int, num_nodes: int) -> Path:
    """This node's would-be manifest (its own shards only); finalize takes the shared fields from it."""
    path = part_path(output, manifest["name"], rank, num_nodes)
    write_json_atomic(path, dict(manifest, node_rank=rank, num_nodes=num_nodes))
    return path


def finalize(output: str, manifest_copy: str | None = None) -> Path | str:
    """Write OUTPUT's manifest from plan.json, every shard's stats file and the nodes' part records."""
    from gcl.synth.remote_output import is_url

    if is_url(output):
        return _finalize_url(output, manifest_copy)
    if not os.path.isdir(output):
        raise UserError(f"{output} is not a folder")
    manifest, path = _finalize_in(output, output, None)
    if manifest_copy:
        write_manifest(manifest, manifest_copy, output)
    return path


def _finalize_url(url: str, manifest_copy: str | None) -> str:
    """An object-store output: its records (never its tars) come into a staging folder, the
    manifest is written there and published last."""
    from gcl.synth.remote_output import RemoteFolder, committed_indices, pull_records, staging_folder
    from gcl.synth.run import write_manifest_copy

    remote = RemoteFolder(url)
    staging = staging_folder(remote.url, "finalize")
    with FolderLock(staging, ".gcl-synth.finalize.lock", "gcl-synth finalize", "OUTPUT"):
        names = pull_records(remote, staging)
        manifest, path = _finalize_in(staging, remote.url, names)
        remote.publish(str(path))
    if manifest_copy:
        write_manifest_copy(manifest, manifest_copy, staging, remote)
    return f"{remote.url}/{path.name}"


def _finalize_in(output: str, shown: str, remote_names: set[str] | None) -> tuple[dict, Path]:
    """(manifest, its path) for the records in folder `output` (named `shown` in messages); a shard
    is committed when its stats and tar are in the folder, or at the URL whose listing is given."""
    from gcl.synth.remote_output import committed_indices

    layout = OutputLayout(output, "")
    if not os.path.exists(layout.plan):
        raise UserError(f"{shown} holds no plan.json: no gcl-synth run has started there")
    plan = read_json_file(layout.plan, "plan", UserError)
    name, num_shards = plan.get("name"), plan.get("num_shards")
    if not isinstance(name, str) or not isinstance(num_shards, int):
        raise UserError(f"{layout.plan} is not a gcl-synth plan")
    layout = OutputLayout(output, name)
    if remote_names is None:
        done = {i for i in range(num_shards) if os.path.exists(layout.stats(i)) and os.path.exists(layout.tar(i))}
    else:
        done = committed_indices(remote_names, name)
    missing = [i for i in range(num_shards) if i not in done]
    if missing:
        raise NotFinished(f"{len(missing)} of {num_shards} shards of {name} are not committed yet "
                          f"(first: {missing[0]}); finalize once every node has finished")
    parts = [read_json_file(p, "node record", UserError) for p in sorted(Path(output).glob(f"{name}.node-*-of-*.json"))]
    parts = [p for p in parts if p.get("plan_fingerprint") == plan.get("fingerprint")]
    if not parts:
        raise NotFinished(f"{shown} has no node record of this plan ({name}.node-R-of-N.json); "
                          "run gcl-synth run --node-rank R --num-nodes N on each node first")
    stats = [read_json_file(layout.stats(i), "shard stats", UserError) for i in range(num_shards)]
    try:
        manifest = merged_manifest(parts, stats)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{shown} holds a node record or stats file that gcl-synth did not write "
                        f"({type(exc).__name__}: {exc}); re-run the nodes") from None
    return manifest, write_manifest(manifest, layout.manifest, output)


def merged_manifest(parts: list[dict], stats: list[dict]) -> dict:
    from collections import Counter

    from gcl.synth.run import shard_entry

    base = {k: v for k, v in parts[0].items() if k not in ("node_rank", "num_nodes", "schema", "version", "base")}
    shards = [shard_entry(i, st) for i, st in enumerate(stats)]
    errors = Counter()
    for st in stats:
        errors.update(st["errors"])
    generated = sum(p["throughput"]["generated_samples"] for p in parts)
    seconds = max(p["throughput"]["seconds"] for p in parts)  # the nodes ran side by side
    costs = [p.get("cost", {}) for p in parts]
    cost = dict(costs[0], seconds=seconds, images=sum(c.get("images", 0) for c in costs),
                cpu_seconds=round(sum(c.get("cpu_seconds", 0) for c in costs), 3),
                cpus=sum(c.get("cpus") or 0 for c in costs) or None)
    return dict(base, complete=True, shards=shards, pending=[], failed={}, cost=cost,
                nodes=len(parts),
                totals={"shards": len(shards), "samples": sum(s["samples"] for s in shards),
                        "bytes": sum(s["bytes"] for s in shards), "errors": dict(errors)},
                throughput={"seconds": seconds, "generated_samples": generated,
                            "images_per_s": round(generated / seconds, 3) if seconds > 0 else 0.0})


def describe_part(path: Path, output: str | None = None) -> str:
    data = json.loads(path.read_text())
    return (f"node {data['node_rank']}/{data['num_nodes']}: {len(data['shards'])} shard(s) committed here; "
            f"once every node is done: gcl-synth finalize {output or Path(path).parent}")
