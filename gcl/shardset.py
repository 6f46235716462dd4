"""Shard sets: the ONE parser of `--shards`, data specs that name shards, and inspect targets.

A spec is a manifest (`NAME.manifest.json`, or a copy in manifests/), a brace pattern
(`out/c10/x-{000000..000019}.tar`), a single `.tar`, or a folder of `.tar` files (read through
its manifest when it holds exactly one, as gcl-synth's output folders do).

A shard set made by someone else is DATA, never code: every location that comes out of a manifest
file is checked by gcl.shardlocations (plain shard file names inside the manifest's own `base`, a
relative `base` or a known store's URL). `pipe:` is accepted only in a spec the user typed
(`trusted=True`), never from a file.

gcl.shardcheck then compares the manifest's claims with the shards themselves.
"""

from __future__ import annotations

import glob
import os
import posixpath
from dataclasses import dataclass, field

from gcl.manifest import ManifestError, is_url, load_manifest
from gcl.shardlocations import (ShardSetError, check_typed_url, checked_base, checked_name, is_remote, is_store_folder,
                                join_shard, require_store_reader, store_names, typed_base)
from gcl.shards import FamilyError, ShardReadError, decode_image, family_members, iter_samples, parse_family, shard_name, stats_name


@dataclass(frozen=True)
class ShardClaim:
    """What the manifest says of one shard (None: nothing claimed)."""

    samples: int | None = None
    bytes: int | None = None
    sha256: str | None = None


@dataclass
class ShardSet:
    urls: list[str]  # local paths, http(s) URLs, or a user-typed pipe: command
    counts: list[int]  # samples per shard
    num_views: int  # K generated views per family
    has_orig: bool
    labelled: bool | None  # None: unknown (plain tars without a manifest)
    class_names: list[str] | None
    description: str  # the spec(s), for messages
    resolution: int = 0  # side of the stored images (manifest, or the first image of a plain tar); 0: unknown
    claims: list[ShardClaim] = field(default_factory=list)  # parallel to urls (manifest only)
    manifests: list[dict] = field(default_factory=list)

    @property
    def total(self) -> int:
        return int(sum(self.counts))

    @property
    def local(self) -> bool:
        return all(not is_remote(u) for u in self.urls)


def open_shard_set(specs: str | list[str], base: str | None = None, require_files: bool = True) -> ShardSet:
    """Parse one spec or several (joined); counts come from manifests or from reading local tars.

    base: where to read the manifests' shard files from instead of their own `base`, as typed by
    the user (a folder, an http(s) URL, or `pipe:COMMAND` to which the file name is appended). It
    is the only way to stream through a command: what a manifest file says is never trusted.
    require_files: a manifest's missing local shard is an error here (verify reports it instead).
    """
    specs = [str(specs)] if isinstance(specs, (str, os.PathLike)) else [str(s) for s in specs]
    if not specs:
        raise ShardSetError("no shards given; pass a manifest .json, a .tar pattern, or a folder of shards")
    if base is not None and not all(s.endswith(".json") or folder_manifest(s) for s in specs):
        raise ShardSetError("a shard base override applies to manifests only; pass manifest .json specs")
    parts = [_open_one(s, base, require_files) for s in specs]
    out = ShardSet([], [], min(p.num_views for p in parts), all(p.has_orig for p in parts),
                   None if any(p.labelled is None for p in parts) else all(p.labelled for p in parts),
                   next((p.class_names for p in parts if p.class_names), None), " ".join(specs),
                   next((p.resolution for p in parts if p.resolution), 0))
    for p in parts:
        out.urls += p.urls
        out.counts += p.counts
        out.claims += p.claims or [ShardClaim()] * len(p.urls)
        out.manifests += p.manifests
    return out


def _open_one(spec: str, base: str | None, require_files: bool) -> ShardSet:
    if is_url(spec):
        check_typed_url(spec)
    if spec.endswith(".json"):
        return _from_manifest(spec, base, require_files)
    manifest = folder_manifest(spec)
    if manifest is not None:
        return _from_manifest(manifest, base, require_files)
    if is_remote(spec):
        raise ShardSetError(f"{spec}: remote shards need their manifest (epoch length comes from its sample counts); "
                            "pass the manifest .json, or a store folder holding exactly one NAME.manifest.json")
    paths = _local_paths(spec)
    counts, views, has_orig, labelled, side = [], None, True, True, 0
    for path in paths:
        n, first = _scan_tar(path)
        side = side or first.get("side", 0)
        counts.append(n)
        orig, gen = family_members(first.get("members", []))
        views = len(gen) if views is None else min(views, len(gen))
        has_orig &= bool(orig)
        labelled &= first.get("labelled", False)
    return ShardSet(paths, counts, views or 0, has_orig, labelled, None, spec, side)


def is_shard_spec(spec: str | os.PathLike) -> bool:
    """A spec that names shards (a manifest, a .tar, a pattern, or a folder holding .tar files, or a store
    folder holding one manifest), not images."""
    s = str(spec)
    if s.endswith((".json", ".tar")) or "{" in s:
        return True
    if is_store_folder(s):
        return folder_manifest(s) is not None
    return os.path.isdir(s) and bool(glob.glob(os.path.join(glob.escape(s), "*.tar")))


def folder_manifest(spec: str) -> str | None:
    """The manifest of a shard folder that holds exactly one (a gcl-synth output folder, on disk or in
    an object store: found by one listing), else None."""
    if is_store_folder(spec):
        check_typed_url(spec)
        found = [name for name in store_names(spec) if name.endswith(".manifest.json")]
        return spec.rstrip("/") + "/" + found[0] if len(found) == 1 else None
    if not os.path.isdir(spec):
        return None
    found = glob.glob(os.path.join(glob.escape(spec), "*.manifest.json"))
    return found[0] if len(found) == 1 else None


def _local_paths(spec: str) -> list[str]:
    import braceexpand

    if os.path.isdir(spec):
        found = sorted(glob.glob(os.path.join(spec, "*.tar")))
    elif any(ch in spec for ch in "*?["):
        found = sorted(glob.glob(spec))
    else:
        found = list(braceexpand.braceexpand(spec))
    missing = [p for p in found if not os.path.isfile(p)]
    if not found or len(missing) == len(found):
        raise ShardSetError(f"no shards found at {spec}; give a manifest .json, a .tar (pattern), or a folder of .tar files")
    if missing:
        raise ShardSetError(f"shard file missing: {missing[0]} ({len(missing)} of {len(found)} in {spec})")
    return found


def _scan_tar(path: str) -> tuple[int, dict]:
    """Samples in a local shard, and the first family's member names / label presence."""
    count, first = 0, {}
    try:
        with open(path, "rb", buffering=1 << 20) as fh:
            for raw in iter_samples(fh):
                if count == 0:
                    first = {"members": [k.partition(".")[0] for k in raw if not k.startswith("__") and k not in ("json", "cls")],
                             "labelled": "cls" in raw, "side": _first_image_side(raw)}
                count += 1
    except (OSError, ShardReadError) as exc:
        raise ShardSetError(f"cannot read shard {path}: {exc}; re-run gcl-synth or drop it") from None
    return count, first


def _first_image_side(raw: dict) -> int:
    """Shorter side of a family's first decodable member (0 when none decodes: counted later)."""
    try:
        images, _, _ = parse_family(raw)
    except FamilyError:
        return 0
    for data in images.values():
        try:
            return min(decode_image(data).size)
        except Exception:  # noqa: BLE001 - a corrupt member: try the next one
            continue
    return 0


def _from_manifest(path: str, base_override: str | None, require_files: bool) -> ShardSet:
    try:
        manifest = load_manifest(path)
    except ManifestError as exc:
        raise ShardSetError(str(exc)) from None
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        raise ShardSetError(f"{path} lists no shards")
    base = typed_base(base_override) if base_override else checked_base(manifest.get("base", "."), path)
    urls, counts, claims = [], [], []
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict) or not isinstance(shard.get("url"), str):
            raise ShardSetError(f"{path}: shard entry {i} has no 'url'")
        urls.append(join_shard(base, checked_name(shard["url"], path)))
        try:
            counts.append(int(shard["samples"]))
            claims.append(ShardClaim(int(shard["samples"]), int(shard["bytes"]), str(shard["sha256"])))
        except (KeyError, TypeError, ValueError):
            raise ShardSetError(f"{path}: shard entry {i} lacks samples / bytes / sha256") from None
    for url, claim in zip(urls, claims):
        _check_count(url, claim, path)
    missing = [u for u in urls if not is_remote(u) and not os.path.isfile(u)]
    if require_files and is_store_folder(base):  # one listing of the store folder, not a request per shard
        require_store_reader(urls[0])
        present = set(store_names(base))
        missing += [u for u in urls if posixpath.basename(u) not in present]
    if missing and require_files:
        raise ShardSetError(f"{len(missing)} of {len(urls)} shard files missing (first: {missing[0]}); "
                            "copy them next to the manifest's base or re-run gcl-synth")
    return ShardSet(urls, counts, int(manifest.get("views", 0)), bool(manifest.get("has_orig", True)),
                    bool(manifest.get("labelled", False)), manifest.get("class_names"), path,
                    int(manifest.get("resolution") or 0), claims, [manifest])


# The smallest family a tar can hold: one member (a 512-byte header and at least one 512-byte
# block; an empty member is not an image). Real families hold 3+ members and kilobytes.
MIN_FAMILY_BYTES = 1024


def _check_count(url: str, claim: ShardClaim, manifest_path: str) -> None:
    """A claimed sample count must fit the shard's bytes (the file's real size when it is local, else
    the claimed size): epoch length comes from these counts, and checking them (--verify) is optional,
    so a manifest claiming 10^9 samples of a small tar would make a billion-step epoch."""
    size = os.path.getsize(url) if not is_remote(url) and os.path.isfile(url) else claim.bytes
    if claim.samples < 0 or claim.samples > max(size, 0) // MIN_FAMILY_BYTES:
        raise ShardSetError(f"{manifest_path}: shard {os.path.basename(url)} claims {claim.samples} samples, more than "
                            f"its {size} bytes can hold (at most {max(size, 0) // MIN_FAMILY_BYTES}); the manifest "
                            "does not describe these shards: re-run gcl-synth or ask for its manifest")


# ---------------------------------------------------------------- an output folder's file names
@dataclass(frozen=True)
class OutputLayout:
    """The one owner of the file names in a shard-set folder (gcl-synth writes them, the study
    runner, status and the tests find them): shards and their stats, the manifest, the plan, the
    writer's lock, and the temporary names of unfinished writes."""

    folder: str
    name: str  # the shard-name prefix

    def tar(self, index: int) -> str:
        return os.path.join(self.folder, shard_name(self.name, index))

    def stats(self, index: int) -> str:
        return os.path.join(self.folder, stats_name(self.name, index))

    def unfinished(self, index: int | None = None) -> list[str]:
        """Temporary files of writes that never committed (a killed run leaves them)."""
        pattern = f"{self.name}-{'*' if index is None else f'{index:06d}'}.*.tmp-*"
        return sorted(glob.glob(os.path.join(glob.escape(self.folder), pattern)))

    @property
    def manifest(self) -> str:
        return os.path.join(self.folder, f"{self.name}.manifest.json")

    @property
    def plan(self) -> str:
        return os.path.join(self.folder, "plan.json")

    @property
    def lock(self) -> str:
        return os.path.join(self.folder, ".gcl-synth.lock")

    @property
    def owner(self) -> str:
        """Which command made the set (gcl.shardmerge reads it before --overwrite replaces one)."""
        return os.path.join(self.folder, f"{self.name}.owner.json")

    def made_by(self) -> dict:
        """The owner marker's record ({} when there is none or it is not a JSON object)."""
        import json

        try:
            with open(self.owner) as fh:
                owner = json.load(fh)
        except (OSError, ValueError, RecursionError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def own_files(self) -> list[str]:
        """The files of this set present in the folder: shards, stats, unfinished writes, manifest."""
        found = glob.glob(os.path.join(glob.escape(self.folder), f"{glob.escape(self.name)}-{'[0-9]' * 6}.*"))
        return sorted(found + [p for p in (self.manifest,) if os.path.lexists(p)])


def check_set_name(name: str, option: str = "--name") -> str:
    """A shard-set name is a file-name prefix inside --output: no folder part, nothing that climbs out."""
    if (not name or name in (".", "..") or name.startswith((".", "-")) or any(c in name for c in "/\\\0")
            or len(name) > 200):
        raise ShardSetError(f"{option} {name[:60]!r}: a shard-set name is a plain file-name prefix (no '/', no "
                            "leading '.' or '-'); it names files inside --output")
    return name
