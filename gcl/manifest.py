"""The manifest: a small versioned JSON record of a shard set, what made it, and its checksums.

Shard locations are stored relative to `base`, and `base` is relative to the manifest's own
folder (or absolute, or a URL), so a shard set can be moved or served without rewriting it, and
a copy in the repo's manifests/ points back at the shards.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from typing import Annotated, Literal

from pydantic import Field

from gcl.errors import UserError
from gcl.inputs import MAX_CLASSES
from gcl.io import write_json_atomic
from gcl.schema import MAX_TEXT, OpenModel, SharedModel, parse
from gcl.streams import StreamError, open_stream

Text = Annotated[str, Field(max_length=MAX_TEXT)]
Count = Annotated[int, Field(ge=0, le=10**15)]  # samples, shard indexes: 10^15 is past any data set

SCHEMA = "gcl.manifest"
SCHEMA_VERSION = 1


class ManifestError(UserError):
    """A manifest that cannot be read or does not follow the schema."""


# A manifest lists shards and their stats: megabytes for an ImageNet-size set, never gigabytes.
MAX_MANIFEST_BYTES = 64 << 20


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise NonFinite(f"number {text[:20]} is not finite")
    return value


def _no_constant(name: str):
    raise NonFinite(f"{name} is not a JSON number")


URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # s3://, gs://, hf://, http(s)://: read through fsspec


def is_url(location: str | os.PathLike) -> bool:
    """A store URL (scheme://...), as opposed to a local path (`pipe:` commands are neither: never run here)."""
    return bool(URL.match(str(location))) and not str(location).startswith("file://")


def _read_capped(path, what: str, error, max_bytes: int) -> bytes:
    """At most max_bytes of a local file or a store URL (through gcl.streams: bounded waits, retries)."""
    if is_url(path):
        chunks, size = [], 0
        with open_stream(str(path)) as fh:
            while size <= max_bytes and (chunk := fh.read(max_bytes + 1 - size)):  # a stream may return less
                chunks.append(chunk)
                size += len(chunk)
        data = b"".join(chunks)
    else:
        size = Path(path).stat().st_size
        if size <= max_bytes:
            with open(path, "rb") as fh:
                data = fh.read(max_bytes + 1)
    if size > max_bytes:
        told = "" if is_url(path) else f"{size} bytes, "  # a stream stops reading past the cap
        raise error(f"{what} {path} is {told}over the {max_bytes >> 20} MiB cap")
    return data


def read_json_file(path: str | os.PathLike, what: str, error=ManifestError, max_bytes: int = MAX_MANIFEST_BYTES,
                   finite: bool = True):
    """Strict JSON from a file someone may have crafted (a local path or a store URL): no NaN/Infinity
    (unless finite=False: a report of a diverged run), bounded size and depth; every failure is one
    `error` line naming the file."""
    path = str(path) if is_url(path) else Path(path)
    try:
        text = _read_capped(path, what, error, max_bytes)
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant) if finite else json.loads(text)
    except error:
        raise
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder, not a file") from None
    except RecursionError:
        raise error(f"{what} {path} is nested too deeply to be a {what}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except NonFinite:
        raise error(f"{what} {path}: key '{_nonfinite_key(json.loads(text))}' must be a finite number, "
                    "got NaN or Infinity") from None
    except StreamError as exc:  # a store URL: the line already names it and the cause (missing, 403, no answer)
        raise error(f"{what} {exc}") from None
    except (ValueError, OSError) as exc:  # not UTF-8, unreadable
        raise error(f"{what} {path} cannot be read: {str(exc).splitlines()[0][:100]}") from None


class NonFinite(ValueError):
    """NaN or Infinity in a file that allows only finite numbers."""


def _nonfinite_key(data) -> str:
    """The key path of the first NaN/Infinity in parsed JSON (for the error line), e.g. 'shards[0].samples'."""
    stack = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            return path or "(top level)"
        if isinstance(value, dict):
            stack += [(f"{path}.{k}" if path else str(k), v) for k, v in reversed(list(value.items()))]
        elif isinstance(value, list):
            stack += [(f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value)))]
    return "(unknown)"


class ShardEntry(SharedModel):
    """One shard's claims: its file (relative to base), size, sha256 and sample count."""

    url: Text
    index: Count | None = None
    samples: Count | None = None
    bytes: Annotated[int, Field(ge=0, le=1 << 50)] | None = None  # a petabyte: past any single tar
    sha256: Annotated[str, Field(pattern=r"^([0-9a-f]{64})?$")] | None = None
    errors: dict[Text, Count] = Field(default_factory=dict)  # skipped inputs by reason
    pixel_sketch: dict[Text, list[float]] | None = None  # synth/reference.py: bytes-free comparison
    keys_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class Cost(OpenModel):
    """What the views cost to make (the study reports it next to training cost)."""

    flops_per_image: Annotated[int, Field(ge=0, le=10**18)] | None = None
    seconds: Annotated[float, Field(ge=0.0, le=1e9)] | None = None
    images: Count | None = None


class Manifest(SharedModel):
    """A shard set's manifest (gcl-synth run and merge write it, gcl-synth viewstats adds view_stats).
    Records that describe how the set was made (generator, recipe, input, totals, throughput...) are
    kept as JSON objects: gcl shows them and compares them, never computes with their values."""

    schema_: Literal["gcl.manifest"] = Field(alias="schema")
    version: Annotated[int, Field(ge=0)] = 0
    name: Text | None = None
    base: Text = "."
    created: Text | None = None
    complete: bool | None = None
    views: Annotated[int, Field(ge=0, le=4096)] = 0  # K generated views per family (a family is one sample)
    has_orig: bool = True
    resolution: Annotated[int, Field(ge=0, le=1 << 16)] | None = None
    image_format: Literal["jpg", "png", "webp"] | None = None
    quality: Annotated[int, Field(ge=0, le=100)] | None = None
    seed: Annotated[int, Field(ge=-(1 << 63), lt=1 << 63)] | None = None  # gcl-synth's --seed: any 64-bit integer
    batch_size: Annotated[int, Field(ge=1, le=1 << 20)] | None = None
    dtype: Text | None = None
    device_type: Text | None = None
    cpu_capability: Text | None = None  # the CPU's vector instructions (AVX2, AVX512): they change float bytes
    residual: bool | None = None
    labelled: bool = False
    class_names: Annotated[list[Text], Field(max_length=MAX_CLASSES)] | None = None
    plan_fingerprint: Text | None = None
    shards: Annotated[list[ShardEntry], Field(max_length=10**7)] = Field(default_factory=list)
    pending: list[Count] = Field(default_factory=list)
    failed: dict[Text, Annotated[str, Field(max_length=MAX_TEXT)]] = Field(default_factory=dict)
    cost: Cost | None = None
    generator: dict | None = None
    recipe: dict | None = None
    input: dict | None = None
    totals: dict | None = None
    throughput: dict | None = None
    merged_from: list[dict] | None = None
    nodes: Annotated[int, Field(ge=1, le=1 << 20)] | None = None  # machines that filled the set (gcl-synth finalize)
    view_stats: dict | None = None


def load_manifest(path: str | os.PathLike) -> dict:
    """A manifest checked against the Manifest schema (one ManifestError line otherwise), as the dict
    it was read as: every key known, every value of the type and range gcl relies on. `path` may be a
    store URL (s3://bucket/set/NAME.manifest.json)."""
    path = str(path) if is_url(path) else Path(path)
    data = read_json_file(path, "manifest")
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ManifestError(f"{path} is not a gcl manifest (missing schema '{SCHEMA}')")
    version = data.get("version", 0)
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise ManifestError(f"{path} has manifest version {version}; this gcl reads <= {SCHEMA_VERSION}")
    parse(Manifest, data, f"manifest {path}", ManifestError)
    return data


class StatsError(UserError):
    """A shard's stats.json (its commit marker) that cannot be read or does not follow the schema."""


class SkippedInput(SharedModel):
    source: Text
    error: Text


class ShardStats(SharedModel):
    """NAME-NNNNNN.stats.json, written last next to each tar: the shard is committed, and these are its
    claims (gcl-synth run and merge write it; a resumed run and `gcl-synth status` read it back)."""

    shard: Annotated[str, Field(pattern=r"^[^/\\]+\.tar$", max_length=255)]  # a file name next to it, no folder
    index: Count
    samples: Count
    inputs: Count | None = None
    bytes: Annotated[int, Field(ge=0, le=1 << 50)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    keys_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    errors: dict[Text, Count] = Field(default_factory=dict)
    skipped: Annotated[list[SkippedInput], Field(max_length=10_000)] = Field(default_factory=list)
    seconds: Annotated[float, Field(ge=0.0, le=1e9)] | None = None
    pixel_sketch: dict[Text, list[float]] | None = None


def read_stats(path: str | os.PathLike) -> dict:
    """A shard's stats.json checked against ShardStats (one StatsError line otherwise)."""
    data = read_json_file(path, "shard stats", StatsError, max_bytes=16 << 20)
    parse(ShardStats, data, f"shard stats {path}", StatsError)
    return data


def write_manifest(manifest: dict, path: str | os.PathLike, shards_dir: str | os.PathLike) -> Path:
    """Write `manifest` at `path` with `base` pointing from path's folder to `shards_dir`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "://" in str(shards_dir):  # shards in a store (gcl-synth run --output URL): the URL is the base
        base = str(shards_dir).rstrip("/") + "/"
    else:
        base = os.path.relpath(os.path.abspath(shards_dir), os.path.abspath(path.parent))
    write_json_atomic(path, dict(manifest, schema=SCHEMA, version=SCHEMA_VERSION, base=base))
    return path
