"""Which committed shards a resumed run may keep.

A shard counts as done when its stats file (the commit marker, written last) and tar exist. A
folder can hold files nobody in this run wrote (a copied folder, a planted shard whose stats.json
claims the plan's options), so before a shard is skipped its stats must describe the tar (size,
sha256) and every family in it must be this plan's: its key and source one of the shard's
inputs in order, and the options each family records (generator, weights, recipe, seed,
residual, resolution, K, image format, label) the plan's. Anything else is redone, not refused:
plan.json already says what the folder holds, and finishing that plan is what the re-run asked
for. This reads each kept shard once more; the bytes of a view are not regenerated, so a shard
that records the plan's options over other pixels is found only by `--reference` or a rerun.
"""

from __future__ import annotations

import json
import logging
import os

from gcl.io import sha256_file
from gcl.shards import ORIG, FamilyError, family_members, keys_digest, parse_family, read_shard, sample_key
from gcl.synth.plan import ShardTask, SynthOptions
from gcl.tarstream import ShardReadError

log = logging.getLogger("gcl.synth")


def kept_stats(task: ShardTask, options: SynthOptions) -> tuple[dict | None, str | None]:
    """(the stats of the task's committed shard when it is this plan's, else None; why a committed
    shard is not kept, else None). A shard found wrong loses its stats: uncommitted until remade."""
    if not (os.path.isfile(task.stats_path) and os.path.isfile(task.tar_path)):
        return None, None
    try:
        with open(task.stats_path) as fh:
            stats = json.load(fh)
        problem = _problem(task, options, stats)
    except (OSError, ValueError, RecursionError, ShardReadError) as exc:
        problem = f"unreadable ({str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__})"
    if problem is None:
        return stats, None
    log.info("shard %d is made again: the committed one is not this plan's (%s)", task.index, problem)
    os.unlink(task.stats_path)  # uncommitted until the new shard's stats are written
    return None, problem


def _problem(task: ShardTask, options: SynthOptions, stats) -> str | None:
    if not isinstance(stats, dict):
        return "its stats file is not an object"
    if os.path.islink(task.tar_path):
        return "its tar is a symbolic link"
    size = os.path.getsize(task.tar_path)
    if stats.get("bytes") != size or stats.get("sha256") != sha256_file(task.tar_path):
        return f"its {size} bytes do not match its stats' size and sha256"
    items = iter(task.items)
    keys = []
    for raw in read_shard(task.tar_path):
        key = raw.get("__key__", "")
        item = next((it for it in items if sample_key(it.source) == key), None)  # inputs in the plan's order
        if item is None:
            return f"family {key[:60]!r} is not one of the shard's inputs, in order"
        try:
            images, meta, label = parse_family(raw)
        except FamilyError as exc:
            return f"family {key[:60]!r}: {exc}"
        wrong = _wrong_option(meta, options, item) or _wrong_members(raw, images, options)
        if wrong:
            return f"family {key[:60]!r} {wrong}"
        if item.label is not None and label != item.label:
            return f"family {key[:60]!r} has label {label}, its input {item.label}"
        keys.append(key)
    if stats.get("samples") != len(keys) or stats.get("keys_sha256") != keys_digest(keys):
        return f"it holds {len(keys)} families, its stats say {stats.get('samples')!r}"
    return None


def _wrong_option(meta: dict, options: SynthOptions, item) -> str | None:
    expected = {"source": item.source, "generator": options.generator, "weights_sha256": options.weights_sha256,
                "recipe": options.recipe, "seed": options.seed, "residual": options.residual,
                "resolution": options.resolution}
    for field, want in expected.items():
        got = meta.get(field, False if field == "residual" else None)
        if got != want or type(got) is not type(want):
            return f"records {field} {str(got)[:60]}, the plan {str(want)[:60]}"
    return None


def _wrong_members(raw: dict, images: dict, options: SynthOptions) -> str | None:
    orig, views = family_members(images)
    if not orig or len(views) != options.views:
        return f"holds {'an' if orig else 'no'} original and {len(views)} views, the plan 1 and {options.views}"
    if any(f"{m}.{options.image_format}" not in raw for m in (ORIG, *views)):
        return f"stores its images in another format than {options.image_format}"
    return None
