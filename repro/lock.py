"""One writer per run directory: an advisory file lock held for the whole sweep (and one for its W&B tracker)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from experiments.errors import RunLocked


class RunLock:
    """`with RunLock(run_dir):` refuses a second sweep on the same directory instead of interleaving.

    Another `name` locks another role (the W&B tracker); `wait_s` waits that long for the holder first.
    The holder's pid is written into the file.
    """

    def __init__(self, run_dir: Path, name: str = ".lock", wait_s: float = 0.0, holder: str = "another sweep"):
        self.path = Path(run_dir) / name
        self.wait_s, self.holder = wait_s, holder
        self._fh = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                fh.seek(0)
                pid = fh.read().strip() or "unknown"
                fh.close()
                raise RunLocked(f"{self.path.parent} is being written by {self.holder} (pid {pid}); wait for it to "
                                f"finish or use --out to write elsewhere") from None
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
