"""Progress that reads well both in a terminal and in a log file.

In a terminal: an overall bar and a per-generation bar of denoising steps (tqdm). Not in a
terminal (CI logs, `> sweep.log`): one plain line per finished generation, no carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.total = total
        self.done = 0
        self.interactive = self.stream.isatty()
        self._overall = None
        self._steps = None
        self._jobs: dict[str, tuple[str, float]] = {}
        if self.interactive and total:
            from tqdm import tqdm

            self._overall = tqdm(total=total, desc="sweep", unit="gen", position=0, file=self.stream)

    def start(self, key: str, description: str, steps: int) -> None:
        # several jobs can be in flight (Ray): remember each one's description and start time
        self._jobs[key] = (description, time.perf_counter())
        if self.interactive:
            from tqdm import tqdm

            if self._steps is not None:
                self._steps.close()
            self._steps = tqdm(total=steps, desc=description[:60], unit="step", position=1, leave=False,
                               file=self.stream)

    def step(self, done: int, total: int) -> None:
        if self._steps is not None:
            self._steps.n = done
            self._steps.refresh()

    def finish(self, key: str, outcome: str) -> None:
        self.done += 1
        description, started = self._jobs.pop(key, (key, time.perf_counter()))
        if self._overall is not None:
            self._overall.update(1)
            self._overall.set_postfix_str(outcome[:40])
        else:
            took = time.perf_counter() - started
            print(f"[{self.done}/{self.total}] {description}: {outcome} ({took:.1f}s)", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        if self._overall is not None:
            self._overall.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        for bar in (self._steps, self._overall):
            if bar is not None:
                bar.close()
