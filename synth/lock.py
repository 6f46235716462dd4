"""One writer per output folder: an exclusive lock held for the whole `gcl-synth run`.

Two runs on one --output would otherwise delete each other's temporary files, or (with
--overwrite) leave a manifest that claims one seed over shards made with another. The lock is the
core's record lock (gcl/folderlock.py) on `OUTPUT/.gcl-synth.lock`: it dies with its process (not
inherited by forked children), so a stale lock left by a killed run is simply taken over, and the
message a second run prints names the holder. dask workers write only while the launching run
holds the lock. On a filesystem shared by several machines without a working lock manager, give
each its own --output (the usual layout: one output folder per machine, merged by listing their
manifests).
"""

from __future__ import annotations

import os
from pathlib import Path

from gcl.folderlock import FolderLock
from gcl.shardset import OutputLayout


class OutputLock(FolderLock):
    def __init__(self, folder: str | os.PathLike):
        lock = Path(OutputLayout(str(folder), "").lock)
        super().__init__(lock.parent, lock.name, "gcl-synth run", "--output")
