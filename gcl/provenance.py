"""Which code made a result: gcl's version, git commit and whether its tree had local changes.

Read from the folder gcl's own source lives in (an editable install or a checkout), never from the
current folder: a run started elsewhere still records the code that trained it. An installed copy
outside git records the version only (commit and dirty are None).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import gcl

SOURCE_ROOT = Path(gcl.__file__).resolve().parent.parent


def code_version() -> dict:
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(SOURCE_ROOT), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        commit = head.stdout.strip() if head.returncode == 0 else None
        dirty = git("status", "--porcelain", "--untracked-files=no") if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"version": gcl.__version__, "commit": commit,
            "dirty": bool(dirty.stdout.strip()) if commit and dirty.returncode == 0 else None}
