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


def load_manifest(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"manifest {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ManifestError(f"{path} is not a gcl manifest (missing schema '{SCHEMA}')")
    if data.get("version", 0) > SCHEMA_VERSION:
        raise ManifestError(f"{path} has manifest version {data['version']}; this gcl reads <= {SCHEMA_VERSION}")
    return data


def write_manifest(manifest: dict, path: str | os.PathLike, shards_dir: str | os.PathLike) -> Path:
    """Write `manifest` at `path` with `base` pointing from path's folder to `shards_dir`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(os.path.abspath(shards_dir), os.path.abspath(path.parent))
    data = dict(manifest, schema=SCHEMA, version=SCHEMA_VERSION, base=rel)
    write_json_atomic(path, data)
    return path
