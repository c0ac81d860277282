"""`repro sweep` in which each generation, once recorded, waits until the W&B tracker has logged it.

Only for the kill -9 test: it makes "what had finished when the process died" a fixed set instead
of a race between generation and the tracker's thread (which, unpatched, never waits for W&B; see
test_a_stuck_wandb_never_holds_up_generation). Usage: python -m tests.repro.gated_sweep sweep SPEC
"""

from __future__ import annotations

import sys
import time

import repro.tracking as tracking
from repro.cli import main

FINISHED_LOG = "gate-finished.txt"
_finished = tracking.LiveTracker.generation_finished


def _gated(self, event) -> None:
    _finished(self, event)
    job = event.job
    with open(self.run_dir / FINISHED_LOG, "a", encoding="utf-8") as fh:  # what the sweep called finished
        fh.write(job.key + "\n")
    ledger = self.run_dir / tracking.LEDGER
    deadline = time.time() + 300
    while time.time() < deadline:
        if ledger.is_file() and job.key in ledger.read_text(encoding="utf-8"):
            return
        time.sleep(0.02)


tracking.LiveTracker.generation_finished = _gated
tracking.FLUSH_EVERY_S = 0.0

if __name__ == "__main__":
    main(sys.argv[1:], prog_name="repro")
