"""Progress that reads well both in a terminal and in a log file.

In a terminal: an overall bar of generations (with items done and an ETA) and a
per-generation bar of denoising steps (tqdm). Not in a terminal (CI logs, `> sweep.log`):
one plain line per finished generation, no carriage returns. At the end, a summary: how
many pipeline calls each generation cost and how busy the workers were.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, items: int = 0):
        self.stream = stream or sys.stderr
        self.total = total
        self.items = items
        self.done = self.items_done = 0
        self.interactive = self.stream.isatty()
        self._overall = self._steps = None
        self._jobs: dict[str, tuple[str, float]] = {}
        self._first_start: float | None = None
        if self.interactive and total:
            from tqdm import tqdm

            self._overall = tqdm(total=total, desc="sweep", unit="gen", position=0, file=self.stream)

    def start(self, key: str, description: str, steps: int) -> None:
        # several jobs can be in flight (Ray): remember each one's description and start time
        now = time.perf_counter()
        self._first_start = self._first_start or now
        self._jobs[key] = (description, now)
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
            self._overall.set_postfix_str(f"item {self.items_done}/{self.items}, {outcome[:30]}")
        else:
            took = time.perf_counter() - started
            print(f"[gen {self.done}/{self.total} | item {self.items_done}/{self.items} | ETA {self.eta()}] "
                  f"{description}: {outcome} ({took:.1f}s)", file=self.stream, flush=True)

    def eta(self) -> str:
        """Remaining time at the rate so far (generations of one sweep cost about the same)."""
        if not self.done or self._first_start is None:
            return "?"
        left = (time.perf_counter() - self._first_start) / self.done * (self.total - self.done)
        return _duration(left)

    def note(self, text: str) -> None:
        if self._overall is not None:
            self._overall.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        for bar in (self._steps, self._overall):
            if bar is not None:
                bar.close()
        self._steps = self._overall = None


def summary(stats: dict[str, Any], generations: int, executor: str) -> str:
    """The closing lines: pipeline calls per generation (by purpose) and how busy the workers were."""
    calls = {k: v for k, v in (stats.get("calls") or {}).items() if v}
    total = sum(calls.values())
    lines = []
    if generations:
        parts = ", ".join(f"{n} {purpose}" for purpose, n in sorted(calls.items(), key=lambda kv: -kv[1]))
        lines.append(f"pipeline calls: {total} for {generations} generation(s) = {total / generations:.2f} per "
                     f"generation ({parts})")
    workers = [w for w in stats.get("workers") or [] if w.get("wall_s")]
    if workers:
        busy = sum(w["busy_s"] for w in workers) / sum(w["wall_s"] for w in workers)
        if len(workers) == 1:
            who = "the Ray worker" if executor == "ray" else "the local worker"
            lines.append(f"{who} spent {100 * busy:.0f}% of its time generating")
        else:
            each = ", ".join(f"{100 * w['busy_s'] / w['wall_s']:.0f}%" for w in workers)
            lines.append(f"{len(workers)} Ray workers spent {100 * busy:.0f}% of their time generating ({each})")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
