"""The default executor: one pipeline in this process, items one after another, scoring in a thread."""

from __future__ import annotations

import time
from typing import Any, Callable

from experiments.runner import Engine
from repro.executors.item import run_item


class LocalExecutor:
    def __init__(self, spec: Any, on_step: Callable[[int, int], None] | None = None, scorer: Any = None):
        self.spec = spec
        self.engine = Engine(spec)
        self.engine.on_step = on_step
        self._metric_nets = scorer
        self.scorer = None
        self.busy_s = 0.0  # time spent generating (for the closing summary)
        self.started_s: float | None = None

    def start(self) -> None:
        from repro.scoring import build_scorer

        self.engine.pipe  # load now: a missing model stops the sweep here, not as a failed point
        if self._metric_nets is None:
            self._metric_nets = build_scorer(self.spec.metrics)

    def calibrate(self, method: str, items: list[tuple[str, int]], params: dict | None = None) -> dict[str, list[float]]:
        return self.engine.calibrate(method, items, params)

    def run(self, items, prepare, on_start, on_generated, on_scored, should_stop) -> None:
        """Run each item's unit (``prepare(item)``) back to back; report generations and scores as they finish."""
        from repro.scoring import BackgroundScorer

        self.scorer = BackgroundScorer(self.spec.metrics, self._metric_nets, timing_lock=self.engine.timing_lock)
        self.started_s = self.started_s or time.perf_counter()
        for item in items:
            if should_stop():
                break
            unit = prepare(item)
            t0 = time.perf_counter()
            for job, result in run_item(self.engine, unit, self.scorer, on_start, should_stop):
                self.busy_s += time.perf_counter() - t0
                on_generated(job, result)
                for score in self.scorer.results():
                    on_scored(score)
                t0 = time.perf_counter()
        for score in self.scorer.finish(wait=not should_stop()):
            on_scored(score)
        self.scorer = None

    def stats(self) -> dict[str, Any]:
        """Pipeline calls by purpose and the fraction of time spent generating (for the closing summary)."""
        wall = time.perf_counter() - self.started_s if self.started_s else 0.0
        return {"calls": dict(self.engine.calls), "workers": [{"busy_s": self.busy_s, "wall_s": wall}]}

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.finish(wait=False)
            self.scorer = None
