"""Small I/O helpers every app uses: the one atomic write, the one file sha256, and the rule that
gcl never writes through a symbolic link in its own folders (a run folder or shard-set folder
may come from someone else: a planted `hparams.yaml -> ~/.bashrc` must not be overwritten)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

from gcl.errors import UserError


class LinkRefused(UserError):
    """A file gcl would write, or a folder it writes into, is a symbolic link."""


def open_nofollow(path: str | os.PathLike, mode: str = "wb"):
    """open() for writing ('wb', 'w', 'ab', 'a') that fails with ELOOP instead of following a link at path."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LinkRefused(f"{path} is a symbolic link; gcl writes no file through a link: remove it") from None
        raise
    return os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""}))


def refuse_links(folder: str | os.PathLike, names=None, hint: str = "remove it") -> None:
    """One line if an entry of `folder` is a symbolic link: every entry below it (names None), or the
    listed names only. A link is a file (or folder) someone else chose; gcl writes none through one."""
    folder = Path(folder)
    if names is not None:
        found = [folder / n for n in names if (folder / n).is_symlink()]
    else:
        found = []
        for root, dirs, files in os.walk(folder):  # does not descend into linked folders
            found += [Path(root) / n for n in sorted(dirs + files) if os.path.islink(os.path.join(root, n))]
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise LinkRefused(f"{found[0]} is a symbolic link{more}; gcl writes no file through a link in its "
                          f"folders: {hint}")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file.
    Neither write follows a link: the temp file is opened with O_NOFOLLOW, and the rename replaces a
    link at `path` itself, never the file it points to."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open_nofollow(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave temp files behind
        raise


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """JSON (sorted keys, indented, trailing newline) through write_bytes_atomic."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# errno values that mean "this folder cannot take more bytes": retrying the same write is pointless.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def storage_error(exc: BaseException) -> str | None:
    """One line for a full, read-only or forbidden output (None for any other error)."""
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot write{where}: {os.strerror(exc.errno)}"
    return None
