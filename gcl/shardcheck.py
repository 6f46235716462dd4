"""A shard set's manifest claims against its shards' contents: size, sha256, sample count, K,
the original and labels, in one streamed pass per shard, before any training reads it - once per
set and machine (verify_once), however many ranks train on it. Remote shards are streamed, never
downloaded to disk first."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from gcl.shardlocations import REMOTE_SCHEMES, STORE_SCHEMES, is_remote
from gcl.shards import FamilyError, ShardReadError, family_members, iter_samples, parse_family
from gcl.shardset import ShardClaim, ShardSet, ShardSetError
from gcl.streams import StreamError, folder_entries, open_stream


@dataclass
class ShardProblem:
    url: str
    problem: str


def check_shard(url: str, claim: ShardClaim, num_views: int, has_orig: bool, labelled: bool | None,
                hash_bytes: bool = True) -> list[ShardProblem]:
    """Stream one shard once (a local file, or a remote URL with bounded timeouts): size,
    sha256 (optional), sample count and every family's members."""
    remote = is_remote(url)
    if not remote:
        if not os.path.isfile(url):
            return [ShardProblem(url, "missing")]
        size = os.path.getsize(url)
        if claim.bytes is not None and size != claim.bytes:
            return [ShardProblem(url, f"size mismatch: {size} bytes, manifest says {claim.bytes}")]
    sha = hashlib.sha256()
    problems: list[ShardProblem] = []
    count = 0
    try:
        with open_stream(url) as fh:
            reader = _HashingReader(fh, sha if hash_bytes else None)
            for raw in iter_samples(reader):
                count += 1
                if not problems:
                    problem = _family_problem(raw, num_views, has_orig, labelled)
                    if problem:
                        problems.append(ShardProblem(url, f"family {raw.get('__key__', '?')[:60]}: {problem}"))
            reader.drain()
    except FileNotFoundError as exc:  # a URL whose object is not there (gcl.streams.MissingObject)
        reason = getattr(exc, "reason", "not found")
        return [ShardProblem(url, "missing" if reason == "not found" else f"missing ({reason})")]
    except (OSError, ShardReadError) as exc:
        return [ShardProblem(url, f"unreadable: {exc}")]
    if remote and claim.bytes is not None and reader.size != claim.bytes:
        return [ShardProblem(url, f"size mismatch: {reader.size} bytes, manifest says {claim.bytes}")]
    if hash_bytes and claim.sha256 and sha.hexdigest() != claim.sha256:
        return [ShardProblem(url, f"sha256 mismatch: {sha.hexdigest()[:12]}..., manifest says {claim.sha256[:12]}...")]
    if claim.samples is not None and count != claim.samples:
        problems.insert(0, ShardProblem(url, f"{count} samples, manifest says {claim.samples}"))
    return problems


def _family_problem(raw: dict, num_views: int, has_orig: bool, labelled: bool | None) -> str:
    try:
        images, _, label = parse_family(raw)
    except FamilyError as exc:
        return str(exc)
    orig, views = family_members(images)
    if has_orig and not orig:
        return "no original image, manifest says it has one"
    if len(views) < num_views:
        return f"{len(views)} generated views, manifest says K={num_views}"
    if labelled and label is None:
        return "no label, manifest says the set is labelled"
    return ""


class _HashingReader:
    """File wrapper that hashes every byte read, so checking costs one pass over the shard."""

    def __init__(self, fh, sha):
        self._fh, self._sha = fh, sha
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.size += len(data)
        if self._sha is not None:
            self._sha.update(data)
        return data

    def drain(self) -> None:
        """Hash the tar's trailing zero blocks too (the manifest hashes the whole file)."""
        while self.read(1 << 20):
            pass


def check_shard_set(ss: ShardSet, hash_bytes: bool = True, progress=None, remote: bool = False,
                    stores: bool = False) -> list[ShardProblem]:
    """Every local shard against its manifest claims; remote shards too with remote=True, or those
    in an object store (s3, gs, hf) with stores=True (each streamed once, never stored); others are
    skipped (say so upstream)."""
    problems: list[ShardProblem] = []
    for url, claim in zip(ss.urls, ss.claims or [ShardClaim()] * len(ss.urls)):
        if is_remote(url) and not (remote and url.startswith(REMOTE_SCHEMES) or stores and url.startswith(STORE_SCHEMES)):
            continue
        problems += check_shard(url, claim, ss.num_views, ss.has_orig, ss.labelled, hash_bytes)
        if progress:
            progress(url)
    return problems


def require_valid(ss: ShardSet, hash_bytes: bool = True, progress=None) -> None:
    """Raise one line naming the first problem (and how many shards have one). Local shards and those
    in an object store are checked (a plain http(s) server's are left to `gcl-synth verify`)."""
    problems = check_shard_set(ss, hash_bytes, progress, stores=True)
    if problems:
        bad = len({p.url for p in problems})
        first = problems[0]
        # the remedy past re-synthesis is the caller's (gcl-train has --no-verify; a merge has none)
        raise ShardSetError(f"{first.url}: {first.problem} ({bad} of {len(ss.urls)} shards fail the manifest's claims); "
                            "re-run gcl-synth for them")


# ---------------------------------------------------------------- checked once, not once per rank
STAMP_VERSION = 1  # bump when what a check covers changes: older stamps then no longer match


def cache_dir() -> str:
    """Where gcl keeps reusable state (verification stamps): $GCL_CACHE_DIR, else the user cache."""
    return os.environ.get("GCL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "gcl")


def stamp_key(ss: ShardSet, hash_bytes: bool) -> str:
    """What a passed check vouches for: the manifests' content, where the shards are read from, and
    each local shard's size and modification time, or a stored shard's size and version (ETag...,
    one listing per folder): a rewritten shard needs a new check."""
    import json

    h = hashlib.sha256(f"gcl-verify-{STAMP_VERSION}:{hash_bytes}".encode())
    for manifest in ss.manifests:
        h.update(json.dumps(manifest, sort_keys=True, default=str).encode())
    listed: dict[str, dict[str, str]] = {}
    for url in ss.urls:
        h.update(b"\0" + url.encode())
        if not is_remote(url) and os.path.exists(url):
            st = os.stat(url)
            h.update(f":{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}".encode())
        elif url.startswith(STORE_SCHEMES):
            folder, name = url.rsplit("/", 1)
            if folder not in listed:
                try:
                    listed[folder] = folder_entries(folder)
                except StreamError as exc:
                    raise ShardSetError(str(exc)) from None
            h.update(f":{listed[folder].get(name, 'missing')}".encode())
    return h.hexdigest()


def verify_once(ss: ShardSet, hash_bytes: bool = True) -> None:
    """require_valid, done once per shard set and machine: the first caller (say rank 0 of a job)
    checks with a progress bar while the others wait on a lock; a passed check leaves a stamp keyed
    by stamp_key that later callers (the other ranks, the next run) reuse. A failed check leaves
    none. Without a writable cache folder every caller checks."""
    from filelock import FileLock

    stamp = _stamp_path(ss, hash_bytes)
    try:
        os.makedirs(os.path.dirname(stamp), exist_ok=True)
        lock = FileLock(stamp + ".lock")
        lock.acquire()
    except OSError:
        return _check_with_progress(ss, hash_bytes)
    try:
        if os.path.isfile(stamp):
            return
        _check_with_progress(ss, hash_bytes)
        mark_verified(ss, hash_bytes)
    finally:
        lock.release()


def _stamp_path(ss: ShardSet, hash_bytes: bool) -> str:
    return os.path.join(cache_dir(), "verified", stamp_key(ss, hash_bytes) + ".json")


def mark_verified(ss: ShardSet, hash_bytes: bool = True) -> None:
    """Leave the stamp of a passed check (gcl-synth verify's too, so training need not repeat it)."""
    from gcl.io import write_json_atomic

    stamp = _stamp_path(ss, hash_bytes)
    try:
        os.makedirs(os.path.dirname(stamp), exist_ok=True)
        write_json_atomic(stamp, {"verified": len(ss.urls), "version": STAMP_VERSION})
    except OSError:
        pass  # a full or read-only cache costs a check next time, nothing more


def _check_with_progress(ss: ShardSet, hash_bytes: bool) -> None:
    from tqdm import tqdm

    with tqdm(total=len(ss.urls), desc="checking shards", unit="shard", disable=None, leave=False) as bar:
        require_valid(ss, hash_bytes, progress=lambda _url: bar.update())
