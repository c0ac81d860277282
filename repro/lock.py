"""One writer per run directory: an advisory file lock held for the whole sweep."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from experiments.errors import RunLocked


class RunLock:
    """`with RunLock(run_dir):` refuses a second sweep on the same directory instead of interleaving."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self._fh = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RunLocked(
                f"{self.path.parent} is being written by another sweep (pid {holder}); wait for it to finish "
                f"or use --out to write elsewhere"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
