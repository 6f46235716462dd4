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
from gcl.inputs import MAX_PIXELS

IMAGE_FORMATS = ("jpg", "png", "webp")
ORIG = "orig"
_KEY_BAD_CHARS = re.compile(r"[^A-Za-z0-9_\-]")


def shard_name(name: str, index: int) -> str:
    return f"{name}-{index:06d}.tar"


def stats_name(name: str, index: int) -> str:
    return f"{name}-{index:06d}.stats.json"


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
    raises ShardReadError before any pixel is decoded, so a shard cannot smuggle a
    decompression bomb past the checks that gcl-synth applies to its inputs.
    """
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    if img.width * img.height > MAX_PIXELS:
        raise ShardReadError(f"image member of {img.width}x{img.height} px is over the {MAX_PIXELS} px cap")
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
        self._fh = open(self.tmp_path, "wb")
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


class ShardReadError(UserError):
    """A tar stream that ends early or has a corrupt header."""


def iter_tar_members(stream) -> Iterator[tuple[str, bytes]]:
    """(name, data) of every regular file in a tar stream, read sequentially.

    A small header parser instead of `tarfile`: Python's tarfile spends ~80 us per member building
    TarInfo objects, which made reading a 5-member family (~430 us) slower than decoding its JPEG.
    Handles ustar (with prefix), pax 'path' records and GNU long names; checks header checksums.
    """
    long_name = None
    while True:
        header = stream.read(512)
        if not header or header == b"\0" * 512:
            return
        if len(header) < 512:
            raise ShardReadError("truncated tar header")
        if _octal(header[148:156]) != sum(header[:148]) + 256 + sum(header[156:]):
            raise ShardReadError("corrupt tar header (checksum mismatch)")
        size = _octal(header[124:136])
        if size < 0:
            raise ShardReadError("corrupt tar header (bad size field)")
        data = stream.read(size)
        if len(data) < size:
            raise ShardReadError("truncated tar member")
        pad = (-size) % 512
        if pad:
            stream.read(pad)
        kind = header[156:157]
        if kind in (b"x", b"L"):
            long_name = _pax_path(data) if kind == b"x" else data.split(b"\0", 1)[0].decode()
            continue
        if kind not in (b"0", b"\0"):
            long_name = None
            continue
        if long_name is not None:
            name, long_name = long_name, None
        else:
            name = header[:100].split(b"\0", 1)[0].decode()
            prefix = header[345:500].split(b"\0", 1)[0].decode() if header[257:262] == b"ustar" else ""
            if prefix:
                name = f"{prefix}/{name}"
        yield name, data


def _octal(field: bytes) -> int:
    """A tar numeric field; -1 when it is not octal (a damaged or non-tar stream)."""
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        return -1


def _pax_path(data: bytes) -> str | None:
    for record in data.decode("utf-8", "replace").split("\n"):
        _, _, kv = record.partition(" ")
        if kv.startswith("path="):
            return kv[5:]
    return None


def iter_samples(stream) -> Iterator[dict]:
    """Group consecutive members by key: {"__key__", "orig.jpg", ..., "json", "cls"} dicts."""
    current: dict | None = None
    for name, data in iter_tar_members(stream):
        key, _, ext = name.rsplit("/", 1)[-1].partition(".")
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key}
        current[ext] = data
    if current is not None:
        yield current


def read_shard(path: str | os.PathLike) -> Iterator[dict]:
    """Read a local shard without webdataset (verify, inspect, eval). Training streams URLs too."""
    with open(path, "rb", buffering=1 << 20) as fh:
        yield from iter_samples(fh)


def parse_family(sample: dict) -> tuple[dict[str, bytes], dict, int | None]:
    """Split a raw webdataset/tar sample dict into (member -> image bytes, meta, label)."""
    meta = json.loads(sample["json"]) if "json" in sample else {}
    label = int(sample["cls"]) if "cls" in sample else None
    images = {}
    for k, v in sample.items():
        if k.startswith("__") or k in ("json", "cls"):
            continue
        member, _, ext = k.partition(".")
        if ext in IMAGE_FORMATS:
            images[member] = v
    return images, meta, label


def family_members(images: Iterable[str]) -> tuple[str, list[str]]:
    """Return (orig member or '', sorted generated view members)."""
    names = list(images)
    views = sorted((m for m in names if m.startswith("view")), key=_member_order)
    return (ORIG if ORIG in names else ""), views
