"""`--output` as an object-store URL (s3://bucket/prefix, gs://bucket/prefix).

The run writes a local staging folder exactly as it writes any output folder (same plan check,
lock, temporary names, commit markers) and publishes each committed file to the URL in commit
order: a shard's tar, then its stats file (the commit marker), the manifest last. These stores
show an object whole or not at all (a multipart upload becomes visible when it completes), so a
reader of the URL sees a shard only once its tar and stats are both there, as on disk.

- A resumed run lists the URL: a shard whose tar and stats are there is fetched once into
  staging and checked like a local committed shard (gcl.synth.committed), then its local copy is
  dropped; nothing committed is made or uploaded again. A shard found wrong loses its remote
  stats first (uncommitted), then is made again.
- Staging keeps only small files (plan, stats, manifest) and the shard being written, so the
  local disk needs room for one shard per worker, not for the set.
- Two runs on one URL from different machines are not guarded (object stores have no lock):
  give each machine a --node-rank (gcl.synth.nodes) or its own prefix.
- Credentials and endpoints come from each store's own environment (AWS_* variables and profiles
  for s3fs); a URL that carries credentials is refused, as it would end up in manifests.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import socket
from pathlib import Path

from gcl.errors import UserError
from gcl.shardcheck import cache_dir
from gcl.streams import StreamError, _permanent, _reason, filesystem, scheme_of

# Stores whose objects appear whole (what the commit marker relies on); http(s) and hf:// are not
# written to: make the set locally and upload it with the store's own tools.
OUTPUT_SCHEMES = ("s3", "s3a", "gs", "gcs")
WRITE_TIMEOUT_S = 120.0  # per request: a multipart part of a large shard on a slow link
SHARD_FILE = re.compile(r"^(?P<name>.+)-(?P<index>\d{6})\.(?P<kind>tar|stats\.json)$")


class RemoteOutputError(UserError):
    """An output URL that cannot be used, or a store that refuses a read or write (one line)."""


def is_url(output: str) -> bool:
    return "://" in str(output)


def check_output_url(url: str) -> str:
    """The URL without a trailing '/', refused in one line when gcl-synth cannot write it safely."""
    scheme = scheme_of(url)
    if scheme not in OUTPUT_SCHEMES:
        raise RemoteOutputError(f"--output {url[:80]}: gcl-synth writes to local folders and to "
                                f"{', '.join(s + '://' for s in OUTPUT_SCHEMES)} URLs (objects there appear whole); "
                                "write locally and upload with the store's own tools")
    host = url.split("://", 1)[1].split("/", 1)[0]
    if "@" in host or "?" in url or "#" in url:
        raise RemoteOutputError(f"--output {scheme}://...: a URL with credentials, a query or a fragment would be "
                                "written into the manifest; give the bucket and prefix only and the credentials "
                                "through the store's environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...)")
    if not url.split("://", 1)[1].strip("/"):
        raise RemoteOutputError(f"--output {url}: name a bucket (and a prefix)")
    return url.rstrip("/")


def staging_folder(url: str, role: str = "run") -> str:
    """The local staging folder of a URL and a role (a run, node R of N, finalize) under
    $GCL_CACHE_DIR: two node ranks on one machine never share one."""
    return os.path.join(cache_dir(), "staging", hashlib.sha256(f"{url}\n{role}".encode()).hexdigest()[:16])


class RemoteFolder:
    """The files of one output URL, through fsspec: listed, fetched, published and removed by name."""

    def __init__(self, url: str):
        self.url = check_output_url(url)
        try:
            self.fs, self.root = filesystem(self.url, connect_s=WRITE_TIMEOUT_S, read_s=WRITE_TIMEOUT_S)
        except StreamError as exc:
            raise RemoteOutputError(str(exc)) from None
        self.root = self.root.rstrip("/")

    def __reduce__(self):  # dask ships the URL; each worker opens its own filesystem
        return (RemoteFolder, (self.url,))

    def _path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def _do(self, what: str, name: str, action):
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - botocore, aiohttp, gcsfs errors: all become one line
            where = f"{self.url}/{name}" if name else self.url
            raise RemoteOutputError(f"{where}: {what} failed ({_reason(exc)})"
                                    + ("" if _permanent(exc) else "; re-run to resume")) from None

    def names(self) -> set[str]:
        """File names directly under the URL (empty when the prefix holds nothing yet)."""
        def listing():
            try:
                entries = self.fs.ls(self.root, detail=False, refresh=True)
            except FileNotFoundError:
                return set()
            return {posixpath.basename(e.rstrip("/")) for e in entries}
        return self._do("listing", "", listing)

    def fetch(self, name: str, local: str) -> None:
        """Copy one object to a local path, atomically (a temporary name, then a rename)."""
        tmp = f"{local}.tmp-fetch"
        self._do("download", name, lambda: self.fs.get_file(self._path(name), tmp))
        os.replace(tmp, local)

    def publish(self, local: str, name: str | None = None) -> None:
        """Upload a finished local file under its own name (or `name`)."""
        name = name or os.path.basename(local)
        self._do("upload", name, lambda: self.fs.put_file(local, self._path(name)))

    def remove(self, names) -> None:
        paths = [self._path(n) for n in names]
        if paths:
            self._do("delete", paths[0].rsplit("/", 1)[-1], lambda: self.fs.rm(paths))

    def check_writable(self) -> None:
        """Fail before any work when the bucket is missing or refuses writes (one small object)."""
        probe = f".gcl-synth-write-check-{socket.gethostname()}-{os.getpid()}"  # nodes check side by side
        self._do("write check", probe, lambda: self.fs.pipe_file(self._path(probe), b"ok"))
        self._do("write check", probe, lambda: self.fs.rm_file(self._path(probe)))


def committed_indices(names: set[str], set_name: str) -> set[int]:
    """Shards of `set_name` whose tar and stats are both at the URL."""
    found: dict[int, set[str]] = {}
    for n in names:
        m = SHARD_FILE.match(n)
        if m and m["name"] == set_name:
            found.setdefault(int(m["index"]), set()).add(m["kind"])
    return {i for i, kinds in found.items() if kinds == {"tar", "stats.json"}}


def pull_records(remote: RemoteFolder, staging: str) -> set[str]:
    """Start staging afresh from what the URL holds: every small JSON record (plan, owner marker,
    manifest, stats files, node parts), never a tar. The URL, not an older staging, is the truth."""
    names = remote.names()
    for entry in Path(staging).iterdir() if os.path.isdir(staging) else []:
        if not entry.name.startswith(".gcl-synth"):  # keep the lock files of the running command
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    os.makedirs(staging, exist_ok=True)
    for name in sorted(names):
        if name.endswith(".json") and not name.startswith("."):
            remote.fetch(name, os.path.join(staging, name))
    return names


def publish_plan(remote: RemoteFolder, names: set[str], staging: str, plan_name: str, old_plan: bytes | None) -> None:
    """After the local plan check (old_plan: the URL's plan.json before it): a URL that held another
    plan (replaced with --overwrite) loses that plan's files first; then plan.json and the owner
    marker go up, before any shard."""
    plan_file = os.path.join(staging, "plan.json")
    if old_plan is not None and old_plan == Path(plan_file).read_bytes():
        return
    try:
        old_name = json.loads(old_plan).get("name") if old_plan else None
    except (ValueError, AttributeError):  # the local check has read it already; a crafted one names nothing
        old_name = None
    old_name = old_name if isinstance(old_name, str) else None
    stale = [n for n in names if old_name and (n.startswith(f"{old_name}-") or n in
                                               (f"{old_name}.manifest.json", f"{old_name}.owner.json"))]
    remote.remove(sorted(stale) + (["plan.json"] if "plan.json" in names else []))
    remote.publish(plan_file)
    owner = os.path.join(staging, f"{plan_name}.owner.json")
    if os.path.exists(owner):
        remote.publish(owner)


def fetch_shard(remote: RemoteFolder, tar_path: str, stats_path: str, committed: bool) -> None:
    """Before a worker looks at a shard: a shard committed at the URL is fetched (tar first, then
    stats) so the usual check can keep it; one that is not committed there has no local stats."""
    if committed and not os.path.exists(tar_path):
        remote.fetch(os.path.basename(tar_path), tar_path)
        remote.fetch(os.path.basename(stats_path), stats_path)
    elif not committed:
        Path(stats_path).unlink(missing_ok=True)


def publish_shard(remote: RemoteFolder, tar_path: str, stats_path: str, stats: dict, was_committed: bool) -> None:
    """After a worker: a newly made shard goes up in commit order (its old remote stats removed
    first when it replaces a committed one); the local tar is dropped either way."""
    if not stats.get("resumed"):
        if was_committed:
            remote.remove([os.path.basename(stats_path)])  # uncommitted while its new tar goes up
        remote.publish(tar_path)
        remote.publish(stats_path)
    Path(tar_path).unlink(missing_ok=True)


def publish_set(remote: RemoteFolder, staging: str, name: str, names_before: set[str]) -> str:
    """A whole set made in staging (gcl-synth merge): the URL's old files of this name lose their
    commit markers first, then every shard goes up in commit order, the manifest last; local tars
    are dropped as they go. Returns the manifest's URL."""
    layout_files = sorted(os.listdir(staging))
    old = sorted(n for n in names_before if n.startswith(f"{name}-") or n == f"{name}.manifest.json")
    remote.remove([n for n in old if n.endswith((".stats.json", ".manifest.json"))])  # uncommitted first
    remote.remove([n for n in old if n not in layout_files and not n.endswith((".stats.json", ".manifest.json"))])
    if os.path.exists(os.path.join(staging, f"{name}.owner.json")):
        remote.publish(os.path.join(staging, f"{name}.owner.json"))
    for match in sorted(filter(None, map(SHARD_FILE.match, layout_files)), key=lambda m: m["index"]):
        if match["name"] == name and match["kind"] == "tar":
            tar = os.path.join(staging, match.string)
            remote.publish(tar)
            remote.publish(tar[: -len(".tar")] + ".stats.json")
            os.unlink(tar)
    manifest = os.path.join(staging, f"{name}.manifest.json")
    remote.publish(manifest)
    return f"{remote.url}/{name}.manifest.json"
