"""The manifest: a small versioned JSON record of a shard set, what made it, and its checksums.

Shard locations are stored relative to `base`, and `base` is relative to the manifest's own
folder (or absolute, or a URL), so a shard set can be moved or served without rewriting it, and
a copy in the repo's manifests/ points back at the shards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gcl.errors import UserError
from gcl.io import write_json_atomic

SCHEMA = "gcl.manifest"
SCHEMA_VERSION = 1


class ManifestError(UserError):
    """A manifest that cannot be read or does not follow the schema."""


# A manifest lists shards and their stats: megabytes for an ImageNet-size set, never gigabytes.
MAX_MANIFEST_BYTES = 64 << 20


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is not finite")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_json_file(path: str | os.PathLike, what: str, error=ManifestError, max_bytes: int = MAX_MANIFEST_BYTES):
    """Strict JSON from a file someone may have crafted: no NaN/Infinity, bounded size and depth;
    every failure is one `error` line naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{what} {path} is {size} bytes, over the {max_bytes >> 20} MiB cap")
        with open(path, "rb") as fh:
            return json.loads(fh.read(max_bytes + 1), parse_float=_finite, parse_constant=_no_constant)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder, not a file") from None
    except RecursionError:
        raise error(f"{what} {path} is nested too deeply to be a {what}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, OSError) as exc:  # NaN/Infinity, not UTF-8, unreadable
        raise error(f"{what} {path} cannot be read: {str(exc).splitlines()[0][:100]}") from None


def load_manifest(path: str | os.PathLike) -> dict:
    """A manifest whose fields have the types gcl relies on (one ManifestError line otherwise)."""
    path = Path(path)
    data = read_json_file(path, "manifest")
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ManifestError(f"{path} is not a gcl manifest (missing schema '{SCHEMA}')")
    version = data.get("version", 0)
    if not _is_int(version):
        raise ManifestError(f"{path}: 'version' must be an integer, got {_show(version)}")
    if version > SCHEMA_VERSION:
        raise ManifestError(f"{path} has manifest version {version}; this gcl reads <= {SCHEMA_VERSION}")
    problem = _field_problem(data)
    if problem:
        raise ManifestError(f"{path}: {problem}")
    return data


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value) -> str:
    return repr(value)[:40]


# field -> (check, what it must be); only fields gcl reads are checked, others are kept as they are
_FIELDS = {
    "views": (lambda v: _is_int(v) and 0 <= v <= 4096, "an integer number of views"),
    "resolution": (lambda v: v is None or (_is_int(v) and 0 <= v <= 1 << 16), "an image side in pixels"),
    "labelled": (lambda v: isinstance(v, bool), "true or false"),
    "has_orig": (lambda v: isinstance(v, bool), "true or false"),
    "base": (lambda v: isinstance(v, str), "a folder or URL"),
    "name": (lambda v: isinstance(v, str), "text"),
    "class_names": (lambda v: v is None or (isinstance(v, list) and all(isinstance(c, str) for c in v)),
                    "a list of names"),
    "shards": (lambda v: isinstance(v, list), "a list of shard entries"),
}
_SHARD_FIELDS = {
    "url": (lambda v: isinstance(v, str), "a file name"),
    "samples": (lambda v: _is_int(v) and v >= 0, "a count"),
    "bytes": (lambda v: _is_int(v) and v >= 0, "a size in bytes"),
    "sha256": (lambda v: isinstance(v, str) and len(v) in (0, 64), "a sha256 hex digest"),
}


def _field_problem(data: dict) -> str:
    for key, (ok, what) in _FIELDS.items():
        if key in data and not ok(data[key]):
            return f"'{key}' must be {what}, got {_show(data[key])}"
    for i, shard in enumerate(data.get("shards") or []):
        if not isinstance(shard, dict):
            return f"shard entry {i} must be an object, got {_show(shard)}"
        for key, (ok, what) in _SHARD_FIELDS.items():
            if key in shard and not ok(shard[key]):
                return f"shard entry {i}: '{key}' must be {what}, got {_show(shard[key])}"
    return ""


def write_manifest(manifest: dict, path: str | os.PathLike, shards_dir: str | os.PathLike) -> Path:
    """Write `manifest` at `path` with `base` pointing from path's folder to `shards_dir`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(os.path.abspath(shards_dir), os.path.abspath(path.parent))
    data = dict(manifest, schema=SCHEMA, version=SCHEMA_VERSION, base=rel)
    write_json_atomic(path, data)
    return path
