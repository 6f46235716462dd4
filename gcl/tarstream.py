"""The tar reader under every shard read: (name, data) of each regular member, from any stream.

A small header parser instead of `tarfile`: Python's tarfile spends ~80 us per member building
TarInfo objects, which made reading a 5-member family (~430 us) slower than decoding its JPEG.
Handles ustar (with prefix), pax 'path' records and GNU long names; checks header checksums.

Shards may come from someone else, so nothing in a header decides how much memory is taken:
members are read in bounded chunks (a size field of 64 GiB on a 10 KB file is a truncated
stream, not a MemoryError), a member over MAX_MEMBER_BYTES is read past and reported, and a
name that is not UTF-8 is reported instead of failing the whole stream. Both come out as a
`MemberProblem` in place of the data, so the reader above can skip that one sample and go on.
"""

from __future__ import annotations

from typing import Iterator

from gcl.errors import UserError

# Far above any member gcl writes (a 64 Mpx PNG, the pixel cap, is under ~200 MB) and small
# enough that one member never costs more memory than a decoded image of the cap.
MAX_MEMBER_BYTES = 256 << 20
# pax / GNU long-name records hold one path: a megabyte is already absurd.
MAX_HEADER_RECORD_BYTES = 1 << 20
READ_CHUNK = 1 << 20


class ShardReadError(UserError):
    """A tar stream that ends early or has a corrupt header (the rest of the stream is unusable)."""


class MemberProblem:
    """Stands in for a member's data when the member itself is unusable (its sample is skipped)."""

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"MemberProblem({self.reason!r})"


def _read_exact(stream, size: int, keep: bool) -> bytes | None:
    """`size` bytes in bounded chunks (None when not kept); ShardReadError if the stream ends first."""
    parts, left = [], size
    while left > 0:
        block = stream.read(min(left, READ_CHUNK))
        if not block:
            raise ShardReadError("truncated tar member")
        if keep:
            parts.append(block)
        left -= len(block)
    return b"".join(parts) if keep else None


def _name(raw: bytes) -> tuple[str, bool]:
    """A member name as printable text, and whether it was valid UTF-8."""
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), False


def iter_tar_members(stream) -> Iterator[tuple[str, bytes | MemberProblem]]:
    """(name, data) of every regular file in a tar stream, read sequentially; data is a
    MemberProblem for a member whose name is not UTF-8 or whose size is over MAX_MEMBER_BYTES."""
    long_name: tuple[str, bool] | None = None
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
        kind = header[156:157]
        record = kind in (b"x", b"L")
        if record and size > MAX_HEADER_RECORD_BYTES:
            raise ShardReadError(f"corrupt tar header (a {size}-byte name record)")
        oversize = not record and size > MAX_MEMBER_BYTES
        data = _read_exact(stream, size, keep=not oversize)
        pad = (-size) % 512
        if pad:
            stream.read(pad)
        if record:
            long_name = _pax_path(data) if kind == b"x" else _name(data.split(b"\0", 1)[0])
            continue
        if kind not in (b"0", b"\0"):
            long_name = None
            continue
        if long_name is not None:
            (name, utf8), long_name = long_name, None
        else:
            name, utf8 = _name(header[:100].split(b"\0", 1)[0])
            if header[257:262] == b"ustar":
                prefix, prefix_utf8 = _name(header[345:500].split(b"\0", 1)[0])
                name, utf8 = (f"{prefix}/{name}", utf8 and prefix_utf8) if prefix else (name, utf8)
        if not utf8:
            yield name, MemberProblem("member name is not UTF-8")
        elif oversize:
            yield name, MemberProblem(f"member of {size} bytes is over the {MAX_MEMBER_BYTES >> 20} MiB cap")
        else:
            yield name, data


def _octal(field: bytes) -> int:
    """A tar numeric field; -1 when it is not octal (a damaged or non-tar stream)."""
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        return -1


def _pax_path(data: bytes) -> tuple[str, bool] | None:
    for record in data.split(b"\n"):
        _, _, kv = record.partition(b" ")
        if kv.startswith(b"path="):
            return _name(kv[5:])
    return None
