"""One live writer per folder: an exclusive kernel `flock` on a lock file inside it.

The lock dies with its process, so a lock left by a killed run is simply taken over; the file
records the holder (pid, host, start, command) for the message a second writer gets. flock is
per machine: on a filesystem shared by several machines, give each its own folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from gcl.errors import UserError


class FolderBusy(UserError):
    """Another live process holds the folder."""


class FolderLock:
    def __init__(self, folder: str | os.PathLike, filename: str, what: str, option: str):
        """what: who writes there ('gcl-train run'); option: the option that picks another folder."""
        self.path = Path(folder) / filename
        self.what, self.option = what, option
        self._fd: int | None = None

    def __enter__(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderBusy(f"{self.path.parent} is being written by another {self.what} ({holder}); "
                             f"wait for it to finish or choose another {self.option}") from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)  # the holder's line is on disk before the work starts
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']} since {info['started']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
