"""The manifest: a small versioned JSON record of a shard set, what made it, and its checksums.

Shard locations are stored relative to `base`, and `base` is relative to the manifest's own
folder (or absolute, or a URL), so a shard set can be moved or served without rewriting it, and
a copy in the repo's manifests/ points back at the shards.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from gcl.io import sha256_file, write_json_atomic

SCHEMA = "gcl.manifest"
SCHEMA_VERSION = 1


class ManifestError(ValueError):
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


def is_url(s: str) -> bool:
    """A location webdataset opens itself (http(s)://, pipe:, ...), not a local path."""
    return "://" in s or s.startswith("pipe:")


def shard_base(manifest: dict, manifest_path: str | os.PathLike) -> str:
    """Absolute folder (or URL prefix) that the manifest's shard names are relative to."""
    base = manifest.get("base", ".")
    if is_url(base) or os.path.isabs(base):
        return base
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(manifest_path)), base))


def shard_urls(manifest: dict, manifest_path: str | os.PathLike) -> list[str]:
    base = shard_base(manifest, manifest_path)
    out = []
    for shard in manifest["shards"]:
        url = shard["url"]
        if is_url(url) or os.path.isabs(url):
            out.append(url)
        elif is_url(base):
            out.append(base.rstrip("/") + "/" + url)
        else:
            out.append(os.path.join(base, url))
    return out


def write_manifest(manifest: dict, path: str | os.PathLike, shards_dir: str | os.PathLike) -> Path:
    """Write `manifest` at `path` with `base` pointing from path's folder to `shards_dir`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(os.path.abspath(shards_dir), os.path.abspath(path.parent))
    data = dict(manifest, schema=SCHEMA, version=SCHEMA_VERSION, base=rel)
    write_json_atomic(path, data)
    return path


@dataclass
class VerifyProblem:
    url: str
    problem: str  # "missing" | "sha256 mismatch" | "size mismatch"


def verify_manifest(path: str | os.PathLike) -> tuple[int, list[VerifyProblem]]:
    """Re-hash every local shard; returns (shards checked, problems)."""
    manifest = load_manifest(path)
    problems = []
    urls = shard_urls(manifest, path)
    for shard, url in zip(manifest["shards"], urls):
        if is_url(url):
            problems.append(VerifyProblem(url, "not a local file; verify needs local shards"))
            continue
        if not os.path.exists(url):
            problems.append(VerifyProblem(url, "missing"))
            continue
        size = os.path.getsize(url)
        if size != shard["bytes"]:
            problems.append(VerifyProblem(url, f"size mismatch: {size} bytes, manifest says {shard['bytes']}"))
            continue
        digest = sha256_file(url)
        if digest != shard["sha256"]:
            problems.append(VerifyProblem(url, f"sha256 mismatch: {digest[:12]}..., manifest says {shard['sha256'][:12]}..."))
    return len(urls), problems


def total_samples(manifest: dict) -> int:
    return sum(int(s["samples"]) for s in manifest["shards"])
