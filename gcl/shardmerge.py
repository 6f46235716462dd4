"""Merge shard sets made from the same input into one set whose families hold every set's views.

Family i of the merged set keeps its original and gets the generated views of the first set
(view0..view{K1-1}), then those of the second (view{K1}..view{K1+K2-1}), and so on: a training
member `gen` then draws among all of them, so an arm can mix, say, TAEF2 and ESRGAN views of the
same image. Sets are merged only when they are the same images in the same order: the same input
fingerprint, resolution, image format and shard layout, and, family by family, the same key,
label and original bytes (checked while merging; any difference stops it with one line). Every
source is checked against its own manifest (sha256, counts, K) first.

The merged manifest records each source's provenance (generator, recipe, views, seed, plan and
manifest fingerprints; no local paths) and the sum of their synthesis costs. Shards are written
as gcl-synth writes them (tmp + rename, stats last), the manifest last.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

from gcl.errors import UserError
from gcl.folderlock import FolderLock
from gcl.io import refuse_links, sha256_file, write_json_atomic
from gcl.manifest import write_manifest
from gcl.shards import (ORIG, Sample, ShardWriter, family_members, iter_samples, keys_digest, parse_family,
                        view_member)
from gcl.shardcheck import require_valid
from gcl.shardset import OutputLayout, ShardSet, check_set_name, folder_manifest, open_shard_set
from gcl.streams import open_stream

# per-family metadata that describes the image, not the generator: kept once at the top level
IMAGE_META = ("source", "resolution", "label", "class_name")
# what the merged manifest records of each source (its provenance; none of these hold local paths)
SOURCE_FIELDS = ("name", "generator", "recipe", "views", "residual", "seed", "dtype", "device_type",
                 "plan_fingerprint", "cost")


OWNER = {"command": "gcl-synth merge"}  # the owner marker of a merged set (OutputLayout.owner)


class MergeError(UserError):
    """Shard sets that cannot be merged (different images, order or format), as one line."""


@dataclass
class _Source:
    spec: str
    manifest_path: str
    shard_set: ShardSet
    manifest: dict


def merge_shard_sets(specs: list[str], output: str, name: str, overwrite: bool = False) -> Path:
    """Merge the shard sets named by `specs` (manifests or gcl-synth output folders) into
    OUTPUT/NAME-*.tar; returns the merged manifest's path."""
    if len(specs) < 2:
        raise MergeError("merging needs at least two shard sets")
    layout = OutputLayout(output, check_set_name(name))
    sources = [_open(spec) for spec in specs]
    _check_distinct(sources)
    _check_compatible(sources)
    _check_not_a_source(sources, layout)
    for s in sources:
        require_valid(s.shard_set)  # sha256, counts, K and labels, before anything is written
    lock = Path(layout.lock)
    with FolderLock(lock.parent, lock.name, "gcl-synth writer", "--output"):
        _check_replaceable(layout, overwrite)  # under the lock: no other writer changes the folder meanwhile
        refuse_links(output, [os.path.basename(p) for p in (layout.manifest, layout.owner, *layout.own_files())],
                     hint="remove it or choose another --output")
        Path(layout.manifest).unlink(missing_ok=True)  # the set is not complete until its new manifest is written
        # this name's shards, stats and unfinished writes only (never another set's, e.g. NAME-2-...)
        for old in layout.own_files():
            os.unlink(old)
        write_json_atomic(layout.owner, OWNER)  # before the first shard: the files that follow are the merge's
        t0 = time.perf_counter()
        shards = [_merge_shard(sources, index, layout) for index in range(len(sources[0].shard_set.urls))]
        manifest = _manifest(sources, name, shards, time.perf_counter() - t0)
        return write_manifest(manifest, layout.manifest, output)


def _open(spec: str) -> _Source:
    path = spec if spec.endswith(".json") else folder_manifest(spec)
    if path is None:
        raise MergeError(f"{spec}: give a shard set's manifest (or its gcl-synth output folder); "
                         "merging checks the input and layout it records")
    shard_set = open_shard_set(path)
    return _Source(spec, path, shard_set, shard_set.manifests[0])


def _check_replaceable(layout: OutputLayout, overwrite: bool) -> None:
    """A set of this name already in --output: replaced only with --overwrite, and only when a merge
    of the same name made it (its owner marker says so). A study passes --overwrite to every merge
    it re-makes; a set made by gcl-synth run, by hand, or by an older gcl that wrote no marker is
    someone else's."""
    present = layout.own_files()
    if not present:
        return
    if not overwrite and os.path.lexists(layout.manifest):
        raise MergeError(f"{layout.manifest} already exists; pass --overwrite to replace it or choose another --output")
    owner = layout.made_by()
    if owner != OWNER:
        made_by = f"made by {owner.get('command', 'another command')}" if owner else \
            "made by another command (no owner marker)"
        raise MergeError(f"{layout.folder} already holds a set named {os.path.basename(layout.name)} {made_by}; "
                         "merge --overwrite replaces only an earlier merge of that name: move it away, or choose "
                         "another --output or --name")


def _check_distinct(sources: list[_Source]) -> None:
    """The same set twice (another spelling, a manifest copy in manifests/) would merge a set with itself."""
    seen: dict[str, _Source] = {}
    for s in sources:
        for url in s.shard_set.urls:
            real = os.path.realpath(url)
            if real in seen and seen[real] is not s:
                raise MergeError(f"{s.spec} and {seen[real].spec} are the same shard set ({os.path.basename(url)}); "
                                 "merge distinct sets")
            seen[real] = s


def _check_not_a_source(sources: list[_Source], layout: OutputLayout) -> None:
    """The merged set's files must not be a source's, nor in a source's folder: writing them would
    destroy what is being read, or leave two manifests in one folder (which then opens as neither)."""
    output = os.path.realpath(layout.folder)
    for s in sources:
        folders = {os.path.dirname(os.path.realpath(p)) for p in (s.manifest_path, *s.shard_set.urls)}
        if output in folders:
            raise MergeError(f"--output {layout.folder} is the folder of {s.spec}, which is being merged; "
                             "give the merged set a folder of its own")
    targets = {os.path.realpath(layout.manifest)} | {os.path.realpath(layout.tar(i))
                                                     for i in range(len(sources[0].shard_set.urls))}
    for s in sources:
        if os.path.realpath(s.manifest_path) in targets or any(os.path.realpath(u) in targets for u in s.shard_set.urls):
            raise MergeError(f"--output / --name would overwrite {s.spec}, which is being merged; choose another")


def _check_compatible(sources: list[_Source]) -> None:
    first = sources[0]
    for s in sources:
        if not s.shard_set.has_orig:
            raise MergeError(f"{s.spec} stores no original image; merged families keep the original")
        if not (s.manifest.get("input") or {}).get("fingerprint"):
            raise MergeError(f"{s.spec} records no input fingerprint; merge only sets gcl-synth made")
    for s in sources[1:]:
        for what, get in (("input images (fingerprint, --limit)", lambda m: m.get("input", {}).get("fingerprint")),
                          ("resolution", lambda m: m.get("resolution")),
                          ("image format", lambda m: m.get("image_format")),
                          ("labels", lambda m: (m.get("labelled"), m.get("class_names")))):
            if get(s.manifest) != get(first.manifest):
                raise MergeError(f"{s.spec} and {first.spec} differ in {what}: {get(s.manifest)!r} vs "
                                 f"{get(first.manifest)!r}; merge only sets made from the same input the same way")
        if s.shard_set.counts != first.shard_set.counts:
            raise MergeError(f"{s.spec} and {first.spec} differ in shard layout (samples per shard); "
                             "make both with the same --limit and --shard-size")


def _families(url: str):
    with open_stream(url) as stream:
        yield from iter_samples(stream)


def _merge_shard(sources: list[_Source], index: int, layout: OutputLayout) -> dict:
    writer = ShardWriter(layout.tar(index))
    try:
        readers = [_families(s.shard_set.urls[index]) for s in sources]
        for raws in itertools.zip_longest(*readers):
            if any(raw is None for raw in raws):
                raise MergeError(f"shard {index}: the sets hold different numbers of families")
            writer.write(_merge_family(sources, raws))
        size, digest = writer.close()
    except BaseException:
        writer.abort()
        raise
    stats = {"shard": os.path.basename(layout.tar(index)), "index": index, "samples": writer.count, "bytes": size,
             "sha256": digest, "keys_sha256": keys_digest(writer.keys)}
    write_json_atomic(layout.stats(index), stats)  # written last: the shard's commit marker
    return stats


def _merge_family(sources: list[_Source], raws: tuple[dict, ...]) -> Sample:
    parsed = [parse_family(raw) for raw in raws]  # sources were verified: a bad family is corruption
    key = raws[0].get("__key__", "")
    (images0, meta0, label0) = parsed[0]
    images = {ORIG: images0[ORIG]}
    views_meta, merged_meta = [], []
    for s, raw, (imgs, meta, label) in zip(sources, raws, parsed):
        if raw.get("__key__") != key or label != label0:
            raise MergeError(f"family {raw.get('__key__', '?')[:60]} of {s.spec} meets {key[:60]} of "
                             f"{sources[0].spec}: the sets hold different images or a different order")
        if imgs.get(ORIG) != images0[ORIG]:
            raise MergeError(f"family {key[:60]}: the original differs between {s.spec} and {sources[0].spec}; "
                             "merge only sets made from the same input at the same resolution and quality")
        views = family_members(imgs)[1][:s.shard_set.num_views]  # the set's K views (verified present)
        records = meta.get("views") if isinstance(meta.get("views"), list) else []
        for i, member in enumerate(views):
            record = records[i] if i < len(records) and isinstance(records[i], dict) else {}
            views_meta.append({**record, "view": len(views_meta), "set": s.manifest.get("name", "")})
            images[view_member(len(views_meta) - 1)] = imgs[member]
        merged_meta.append({k: v for k, v in meta.items() if k not in IMAGE_META and k != "views"})
    meta = {k: meta0[k] for k in IMAGE_META if k in meta0}
    meta.update(views=views_meta, merged=merged_meta)
    return Sample(key, images, meta, label0, sources[0].manifest.get("image_format") or "jpg")


def _manifest(sources: list[_Source], name: str, shards: list[dict], seconds: float) -> dict:
    first = sources[0].manifest
    costs = [s.manifest.get("cost") or {} for s in sources]

    def total(key):
        values = [c.get(key) for c in costs]
        return sum(values) if all(isinstance(v, (int, float)) for v in values) else None

    samples = sum(s["samples"] for s in shards)
    provenance = []
    for s in sources:
        record = {k: s.manifest[k] for k in SOURCE_FIELDS if k in s.manifest}
        record["manifest_sha256"] = sha256_file(s.manifest_path)
        provenance.append(record)
    return {
        "name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "complete": True,
        "generator": {"family": "merged", "id": "+".join(str((s.manifest.get("generator") or {}).get("id", "?"))
                                                         for s in sources)},
        "merged_from": provenance,  # view ranges follow this order: the first set's K views, then the next's
        "views": sum(int(s.manifest.get("views", 0)) for s in sources), "has_orig": True,
        "resolution": first.get("resolution"), "image_format": first.get("image_format"),
        "quality": first.get("quality"), "input": first.get("input"), "labelled": first.get("labelled", False),
        "class_names": first.get("class_names"),
        "shards": [{"url": s["shard"], "index": s["index"], "samples": s["samples"], "bytes": s["bytes"],
                    "sha256": s["sha256"]} for s in shards],
        "pending": [], "failed": {},
        "totals": {"shards": len(shards), "samples": samples, "bytes": sum(s["bytes"] for s in shards), "errors": {}},
        # the cost of the views: every source's synthesis (merging itself is a copy)
        "cost": {"flops_per_image": total("flops_per_image"), "seconds": total("seconds"),
                 "images": costs[0].get("images")},
        "throughput": {"seconds": round(seconds, 3), "generated_samples": 0, "merged_samples": samples},
    }
