"""One live writer per folder: an exclusive POSIX record lock (`fcntl.lockf`) on a file inside it.

A record lock belongs to the process that took it: forked children (DataLoader workers, dask
nannies) do not inherit it, and the kernel drops it the moment that process dies. A `flock` would
be shared with every forked worker, so after `kill -9` of a trainer its workers, still alive for
a few seconds, kept the folder locked and an immediate `--resume` was refused. The file records
the holder (pid, host, start, command) for the message a second writer gets.

Record locks are per process, not per open file: a second lock on the same file from the same
process would succeed, and closing any descriptor of the file would drop the first. So a process
also keeps the set of files it holds, and refuses a second lock on one of them. The lock file is
opened without following symbolic links (a planted link cannot make the lock truncate another file).
Record locks work on NFS through its lock manager; on other shared filesystems give each machine
its own folder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from gcl.errors import UserError
from gcl.io import LinkRefused

_HELD: set[tuple[int, int]] = set()  # (device, inode) of the lock files this process holds


class FolderBusy(UserError):
    """Another live process holds the folder."""


class FolderLock:
    def __init__(self, folder: str | os.PathLike, filename: str, what: str, option: str):
        """what: who writes there ('gcl-train run'); option: the option that picks another folder."""
        self.path = Path(folder) / filename
        self.what, self.option = what, option
        self._fd: int | None = None
        self._id: tuple[int, int] | None = None

    def _busy(self, holder: str) -> FolderBusy:
        return FolderBusy(f"{self.path.parent} is being written by another {self.what} ({holder}); "
                          f"wait for it to finish or choose another {self.option}")

    def __enter__(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LinkRefused(f"{self.path} is a symbolic link; gcl writes no file through a link in its "
                                  f"folders: remove it or choose another {self.option}") from None
            raise
        ident = (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
        if ident in _HELD:
            os.close(fd)  # closing a second descriptor would not drop the lock only because _HELD stops here
            raise self._busy(f"pid {os.getpid()}, this process")
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise
            holder = _read_holder(fd)
            os.close(fd)
            raise self._busy(holder) from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)  # the holder's line is on disk before the work starts
        self._fd, self._id = fd, ident
        _HELD.add(ident)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            _HELD.discard(self._id)
            self._fd = self._id = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']} since {info['started']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
