"""THE shard format: one module, used by gcl-synth to write and by gcl-train / gcl-eval to read.

A shard is a plain POSIX tar (readable by `webdataset` and `tar`) named `{name}-{index:06d}.tar`.
Each sample (a *view family*) is a run of consecutive members sharing one `__key__`:

    {key}.orig.{fmt}      the input image at synthesis resolution
    {key}.view0.{fmt} ... {key}.view{K-1}.{fmt}   generated views
    {key}.cls             integer class label as ASCII text (only when labelled)
    {key}.json            metadata: source, class name, resolution, generator id, per-view recipe

Next to each tar, `{name}-{index:06d}.stats.json` is written LAST (after the tar has been renamed
into place) and is the shard's commit marker: a tar without stats is unfinished work.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from gcl.errors import UserError
from gcl.io import open_nofollow
from gcl.inputs import MAX_ASPECT, MAX_CLASSES, MAX_PIXELS, extreme_aspect
from gcl.tarstream import MemberProblem, ShardReadError, iter_tar_members  # noqa: F401 - the shard API

IMAGE_FORMATS = ("jpg", "png", "webp")
ORIG = "orig"
_KEY_BAD_CHARS = re.compile(r"[^A-Za-z0-9_\-]")
_LABEL_RE = re.compile(rb"[0-9]{1,12}")
_VIEW_RE = re.compile(r"view[0-9]{1,6}")
MAX_META_BYTES = 1 << 20  # a family's json member: per-view recipes are a few hundred bytes


def shard_name(name: str, index: int) -> str:
    return f"{name}-{index:06d}.tar"


def stats_name(name: str, index: int) -> str:
    return f"{name}-{index:06d}.stats.json"


def keys_digest(keys: list[str]) -> str:
    """sha256 of a shard's sample keys in order (its stats' keys_sha256): two shards with the same
    families in the same order share it whatever their bytes."""
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def view_member(i: int) -> str:
    return f"view{i}"


def sample_key(source: str) -> str:
    """A stable tar key derived from an input's relative path (or `npzstem/index`).

    webdataset splits a member name at the first dot of its basename, and a slash makes folders,
    so both are replaced; a short hash of the exact source keeps keys unique after replacing.
    """
    stem = source.rsplit(".", 1)[0] if "/" not in source.rsplit(".", 1)[-1] else source
    clean = _KEY_BAD_CHARS.sub("_", stem.replace("/", "__"))[-80:]
    digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:8]
    return f"{clean}_{digest}"


def encode_image(array_hwc_uint8, fmt: str, quality: int) -> bytes:
    """Encode an (H, W, 3) uint8 array; deterministic for a given Pillow build."""
    from PIL import Image

    img = Image.fromarray(array_hwc_uint8, mode="RGB") if hasattr(array_hwc_uint8, "shape") else array_hwc_uint8
    buf = io.BytesIO()
    if fmt == "jpg":
        img.save(buf, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    elif fmt == "png":
        img.save(buf, format="PNG", compress_level=6)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=quality, method=4)
    else:
        raise ValueError(f"unknown image format {fmt!r}; choose one of {IMAGE_FORMATS}")
    return buf.getvalue()


def decode_image(data: bytes):
    """Decode member bytes to an RGB PIL image.

    Shards may come from someone else: an image member past the inputs' pixel cap (MAX_PIXELS)
    or aspect cap (MAX_ASPECT: resizing a 250000x1 strip to a square costs gigabytes) raises
    ShardReadError before any pixel is decoded, so a shard cannot smuggle a decompression bomb
    past the checks that gcl-synth applies to its inputs.
    """
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    if img.width * img.height > MAX_PIXELS:
        raise ShardReadError(f"image member of {img.width}x{img.height} px is over the {MAX_PIXELS} px cap")
    if extreme_aspect(img.width, img.height):
        raise ShardReadError(f"image member of {img.width}x{img.height} px is over the {MAX_ASPECT}:1 aspect cap")
    img.load()
    img = img.convert("RGB")
    # Drop JFIF/EXIF info: PIL copies `info` into every derived image, which cost ~5% of the
    # training loader's time per family (each augmentation op makes a new image).
    img.info = {}
    return img


@dataclass
class Sample:
    """One view family as it is stored."""

    key: str
    images: dict[str, bytes]  # member name ("orig", "view0", ...) -> encoded bytes
    meta: dict
    label: int | None = None
    fmt: str = "jpg"

    def members(self) -> list[tuple[str, bytes]]:
        out = [(f"{self.key}.{m}.{self.fmt}", self.images[m]) for m in sorted(self.images, key=_member_order)]
        if self.label is not None:
            out.append((f"{self.key}.cls", str(int(self.label)).encode()))
        out.append((f"{self.key}.json", json.dumps(self.meta, sort_keys=True).encode()))
        return out


def _member_order(m: str) -> tuple[int, int]:
    return (0, 0) if m == ORIG else (1, int(m[4:]))


class ShardWriter:
    """Writes one shard to `{final}.tmp-{pid}` and renames it into place on close().

    Every tar header is fixed (mtime 0, uid/gid 0, mode 0444), so the same samples give the
    same bytes. The sha256 and size are computed while writing.
    """

    def __init__(self, final_path: str | os.PathLike):
        self.final_path = Path(final_path)
        self.tmp_path = self.final_path.with_name(f"{self.final_path.name}.tmp-{os.getpid()}")
        self._fh = open_nofollow(self.tmp_path, "wb")  # a link left under this name is refused, never followed
        self._hash = _HashingWriter(self._fh)
        try:  # stream mode: the hashing writer cannot seek
            self._tar = tarfile.open(fileobj=self._hash, mode="w|", format=tarfile.USTAR_FORMAT)
        except BaseException:
            self._fh.close()
            self.tmp_path.unlink(missing_ok=True)
            raise
        self.count = 0
        self.keys: list[str] = []

    def write(self, sample: Sample) -> None:
        for name, data in sample.members():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1
        self.keys.append(sample.key)

    def close(self) -> tuple[int, str]:
        """Finish the tar, fsync, rename into place; returns (bytes, sha256)."""
        self._tar.close()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.tmp_path, self.final_path)
        return self._hash.size, self._hash.hexdigest()

    def abort(self) -> None:
        try:
            self._tar.close()
            self._fh.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)


class _HashingWriter(io.RawIOBase):
    def __init__(self, fh):
        self._fh = fh
        self._sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._sha.update(b)
        self.size += len(b)
        return self._fh.write(b)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def iter_samples(stream) -> Iterator[dict]:
    """Group consecutive members by key: {"__key__", "orig.jpg", ..., "json", "cls"} dicts.

    A member the tar reader could not use (a name that is not UTF-8, an oversize member) puts
    "__problem__" in its sample, which parse_family turns into a FamilyError: one skipped sample.
    """
    current: dict | None = None
    for name, data in iter_tar_members(stream):
        key, _, ext = name.rsplit("/", 1)[-1].partition(".")
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key}
        if isinstance(data, MemberProblem):
            current.setdefault("__problem__", f"{ext or name}: {data.reason}")
        else:
            current[ext] = data
    if current is not None:
        yield current


def read_shard(path: str | os.PathLike) -> Iterator[dict]:
    """Read a local shard without webdataset (verify, inspect, eval). Training streams URLs too."""
    with open(path, "rb", buffering=1 << 20) as fh:
        yield from iter_samples(fh)


class FamilyError(UserError):
    """One sample that cannot be used (an unusable member, metadata or label): counted and skipped."""


def parse_family(sample: dict) -> tuple[dict[str, bytes], dict, int | None]:
    """Split a raw tar sample dict into (member -> image bytes, meta, label).

    Raises FamilyError for a sample that cannot be trusted: a member the tar reader flagged, a
    `json` member that is not one JSON object (invalid, empty, too deep or too big), or a `cls`
    that is not a plain integer in [0, MAX_CLASSES).
    """
    if "__problem__" in sample:
        raise FamilyError(sample["__problem__"])
    meta = _meta(sample["json"]) if "json" in sample else {}
    label = _label(sample["cls"]) if "cls" in sample else None
    images = {}
    for k, v in sample.items():
        if k.startswith("__") or k in ("json", "cls"):
            continue
        member, _, ext = k.partition(".")
        if ext in IMAGE_FORMATS:
            images[member] = v
    return images, meta, label


def _meta(data: bytes) -> dict:
    if len(data) > MAX_META_BYTES:
        raise FamilyError(f"json member of {len(data)} bytes is over the {MAX_META_BYTES >> 10} KiB cap")
    try:
        meta = json.loads(data)
    except RecursionError:
        raise FamilyError("json member is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError: invalid or empty
        raise FamilyError(f"json member is not valid JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(meta, dict):
        raise FamilyError(f"json member is a {type(meta).__name__}, not an object")
    return meta


def _label(data: bytes) -> int:
    text = data.strip()
    if not _LABEL_RE.fullmatch(text) or int(text) >= MAX_CLASSES:
        raise FamilyError(f"cls member {text[:20]!r} is not a class index in [0, {MAX_CLASSES})")
    return int(text)


def family_members(images: Iterable[str]) -> tuple[str, list[str]]:
    """Return (orig member or '', sorted generated view members); other names are ignored."""
    names = list(images)
    views = sorted((m for m in names if _VIEW_RE.fullmatch(m)), key=_member_order)
    return (ORIG if ORIG in names else ""), views
