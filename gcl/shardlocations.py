"""Shard locations: where a shard set's files may be, and how a manifest's locations resolve.

A shard set made by someone else is DATA, never code. webdataset opens `pipe:` URLs with
`shell=True`, so every location that comes out of a manifest file is checked here: shard entries
must be plain file names inside the manifest's own shard folder (`base`), and `base` must be a
relative folder or a URL of a known store (http(s), s3, gs, hf: opened through fsspec, never
chained with `::`). A URL the user types carries no credentials. gcl.shardset (the parser of
`--shards`) and gcl.shardcheck build on these rules; ShardSetError, the error of opening a set,
lives here, at the bottom of both.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import PurePosixPath

from gcl.errors import UserError
from gcl.manifest import is_url

# the only schemes a manifest may name (object stores read through fsspec; gcl.streams)
REMOTE_SCHEMES = ("http://", "https://", "s3://", "gs://", "gcs://", "hf://")
STORE_SCHEMES = ("s3://", "gs://", "gcs://", "hf://")  # object stores: folders can be listed, objects have versions


class ShardSetError(UserError):
    """A shard set that cannot be opened or whose shards contradict its manifest."""


def is_remote(location: str) -> bool:
    """A location webdataset opens itself (http(s)://, pipe:, ...), not a local path."""
    return "://" in location or location.startswith("pipe:")


def is_store_folder(spec: str) -> bool:
    """A URL of an object-store folder (s3://bucket/prefix, gs://..., hf://...), not of one file."""
    return spec.startswith(STORE_SCHEMES) and not spec.endswith((".json", ".tar")) and "{" not in spec


def store_names(folder_url: str) -> list[str]:
    """File names in a store folder (one listing through fsspec), or one ShardSetError line."""
    from gcl.streams import StreamError, list_folder

    try:
        return list_folder(folder_url)
    except StreamError as exc:
        raise ShardSetError(str(exc)) from None


def require_store_reader(url: str) -> None:
    """A store scheme whose fsspec package is missing: one line naming a shard and the extra to install."""
    from gcl.streams import MissingExtraError, require_readers

    try:
        require_readers([url])
    except MissingExtraError as exc:
        raise ShardSetError(str(exc)) from None


def check_typed_url(url: str) -> str:
    """A store URL typed by the user: credentials and signatures belong in the store's environment
    (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...), never in a URL that run files, manifests and logs repeat."""
    host = url.split("://", 1)[1].split("/", 1)[0]
    if "@" in host or "?" in url or "#" in url:
        raise ShardSetError(f"{url.split('://', 1)[0]}:// URL with a user, query or fragment refused: give the "
                            "plain URL and take credentials from the store's environment (e.g. AWS_ACCESS_KEY_ID, "
                            "AWS_PROFILE); a URL is recorded in run files and logs")
    return url


def checked_base(base, manifest_path: str) -> str:
    """The manifest's shard folder: relative to the manifest's own folder (a local one, or a store URL's),
    or a store URL."""
    if not isinstance(base, str):
        raise ShardSetError(f"{manifest_path}: 'base' must be a string")
    if base.startswith(REMOTE_SCHEMES) and "::" not in base:  # fsspec chains protocols at '::'
        return base.rstrip("/") + "/"
    if is_remote(base) or ":" in base.split("/", 1)[0] or os.path.isabs(base) or "\\" in base:
        raise ShardSetError(f"{manifest_path}: refusing base {base[:60]!r}: a manifest's base must be a relative "
                            "folder or an http(s)/s3/gs/hf URL (manifests are data, never commands)")
    # One level up at most: the copy gcl-synth writes in a sibling folder (manifests/NAME.json ->
    # ../out/NAME) still finds its shards, but `../../../..` cannot reach any folder on the disk.
    if posixpath.normpath(base).split("/")[:2] == ["..", ".."]:
        raise ShardSetError(f"{manifest_path}: refusing base {base[:60]!r}: a manifest's base may leave its folder "
                            "by one '..' at most; pass --shards-base FOLDER to read shards kept elsewhere")
    if is_url(manifest_path):
        return _url_folder(manifest_path, base)
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(manifest_path)), base))


def _url_folder(manifest_url: str, base: str) -> str:
    """`base` (relative, checked) against the folder of a manifest URL: s3://b/p/x.manifest.json with
    base "." -> s3://b/p/. Paths are joined with posixpath (pathlib would turn s3:// into s3:/), and
    never above the bucket (host)."""
    scheme, rest = manifest_url.split("://", 1)
    host, _, key = rest.partition("/")
    folder = posixpath.dirname(key)
    joined = posixpath.normpath(posixpath.join(folder, base)) if folder else posixpath.normpath(base)
    if joined == ".." or joined.startswith("../"):
        raise ShardSetError(f"{manifest_url}: refusing base {base[:60]!r}: it climbs above {scheme}://{host}/")
    return f"{scheme}://{host}/" + ("" if joined == "." else joined + "/")


def typed_base(base: str) -> str:
    """A base the user typed: trusted, pipe: included; URLs and commands get the name appended."""
    if is_url(base):
        check_typed_url(base)
    return base.rstrip("/") + "/" if is_remote(base) else os.path.abspath(base)


def checked_name(name: str, manifest_path: str) -> str:
    """A shard entry: a plain relative file name inside base (no scheme, no '..', no absolute path)."""
    parts = PurePosixPath(name).parts
    if (not name or is_remote(name) or name.startswith(("/", "\\")) or ".." in parts or ":" in name
            or "\\" in name or not name.endswith(".tar")):
        raise ShardSetError(f"{manifest_path}: refusing shard url {name[:60]!r}: entries must be .tar file names "
                            "inside the manifest's shard folder")
    return name


def join_shard(base: str, name: str) -> str:
    """A checked shard name in its base: a folder, or a URL or command prefix the name is appended to."""
    return base + name if is_remote(base) else os.path.join(base, name)
