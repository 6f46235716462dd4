"""The labelled data a study reads, named by identity rather than by spelling.

A data spec is a file or a slice of one: FILE[A:B] is images A..B-1 in file order. Two specs are
the same data when their files are the same file (resolved real path: `data/../data/x.npz`,
`./x.npz` and `//x.npz` are one file) or the same content (a copy: size and a hash of its first
and last MiB), and their row ranges overlap. The study's overlap checks (validation queries
held out of pretraining and of their bank, queries never in their own bank) use this.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache

from gcl.errors import UserError

_SLICE = re.compile(r"^(?P<path>.+)\[(?P<start>\d*):(?P<stop>\d*)\]$")
_EDGE_BYTES = 1 << 20  # hashed at each end of a file: tells copies apart from other files in ms


class DataSpecError(UserError):
    """A data spec that names no rows (one line)."""


@dataclass(frozen=True)
class DataSpec:
    """A labelled file, or a slice of it: FILE[A:B] is images A..B-1 in file order."""

    path: str
    start: int | None = None
    stop: int | None = None

    @classmethod
    def parse(cls, spec: str) -> "DataSpec":
        """FILE or FILE[A:B]; an empty or reversed slice ([20:10], [5:5]) is refused here, at load."""
        m = _SLICE.match(spec)
        if not m:
            return cls(spec)
        start = int(m["start"]) if m["start"] else None
        stop = int(m["stop"]) if m["stop"] else None
        if stop is not None and stop <= (start or 0):
            raise DataSpecError(f"{spec}: the slice [{m['start']}:{m['stop']}] holds no images "
                                "(FILE[A:B] takes images A..B-1, so B must be greater than A)")
        return cls(m["path"], start, stop)

    def limited(self, limit: int | None) -> "DataSpec":
        """The first `limit` images of this spec (limit_bank / limit_test)."""
        if limit is None:
            return self
        first = self.start or 0
        stop = first + limit if self.stop is None else min(self.stop, first + limit)
        return DataSpec(self.path, self.start, stop)

    def indices(self, n: int) -> range:
        return range(n)[self.start:self.stop]

    def rows(self) -> tuple[int, float]:
        """[first, end) rows, end = inf for 'to the end of the file'."""
        return self.start or 0, float(self.stop) if self.stop is not None else math.inf


@lru_cache(maxsize=64)
def _content_key(real: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(real, "rb") as fh:
        digest.update(fh.read(_EDGE_BYTES))
        if size > 2 * _EDGE_BYTES:
            fh.seek(size - _EDGE_BYTES)
        digest.update(fh.read(_EDGE_BYTES))
    return f"{size}:{digest.hexdigest()}"


def file_identity(path: str) -> str:
    """What makes two paths the same data: the content of an existing file, else its real path."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
        if not os.path.isfile(real):
            return "path:" + real
        return "content:" + _content_key(real, st.st_size, st.st_mtime_ns)
    except OSError:
        return "path:" + real


def same_file(a: str, b: str) -> bool:
    return file_identity(a) == file_identity(b)


def overlap(a: DataSpec, b: DataSpec) -> bool:
    """Whether the two specs share an image (same file by identity, overlapping rows)."""
    (a0, a1), (b0, b1) = a.rows(), b.rows()
    return a0 < b1 and b0 < a1 and same_file(a.path, b.path)


def npz_rows(path: str) -> int | None:
    """Images in a labelled .npz (its labels array only is read), None for other data or an unreadable file."""
    import numpy as np

    if not path.endswith(".npz"):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return int(np.asarray(data["labels"]).shape[0])
    except Exception:  # noqa: BLE001 - the loader says what is wrong with it, in one line, when it reads it
        return None


def check_rows(spec: DataSpec, what: str) -> None:
    """A slice must hold images of the file it names: [15000:20000] of a 10,000-image file is empty
    (refused before training, not found empty after it)."""
    n = npz_rows(spec.path)
    if n is None:
        return
    first = spec.start or 0
    if first >= n or (spec.stop is not None and spec.stop > n):
        raise DataSpecError(f"{what} {spec.path}[{spec.start or ''}:{spec.stop or ''}] reaches past the file's "
                            f"{n} images")
