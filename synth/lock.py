"""One writer per output folder: an exclusive lock held for the whole `gcl-synth run`.

Two runs on one --output would otherwise delete each other's temporary files, or (with
--overwrite) leave a manifest that claims one seed over shards made with another. The lock is a
kernel `flock` on `OUTPUT/.gcl-synth.lock`: it dies with its process, so a stale lock left by a
killed run is simply taken over. The file records the holder (pid, host, start, command) for the
message the second run prints. dask workers write only while the launching run holds the lock.
flock is per machine: on a network filesystem shared by several machines, give each its own
--output (the usual layout: one output folder per machine, merged by listing their manifests).
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
from gcl.shardset import OutputLayout

class OutputBusy(UserError):
    """Another live process holds the output folder."""


class OutputLock:
    def __init__(self, folder: str | os.PathLike):
        self.path = Path(OutputLayout(str(folder), "").lock)
        self._fd: int | None = None

    def __enter__(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputBusy(f"{self.path.parent} is being written by another gcl-synth run ({holder}); "
                             "wait for it to finish or choose another --output") from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)
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
    except (OSError, ValueError, KeyError):
        return "holder unknown"
