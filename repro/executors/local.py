"""The default executor: one pipeline in this process, items one after another, each scored after its timed calls."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

from repro.executors.item import run_item, score_outputs


class LocalExecutor:
    def __init__(self, spec: Any, on_step: Callable[[int, int], None] | None = None, resident: Any = None,
                 pause_background: Callable[[], Any] | None = None):
        """`resident` (repro.executors.resident.Resident): the pipeline and metric networks to use and leave
        loaded; `pause_background` is entered around each timed call."""
        from repro.executors.resident import Resident
        from repro.scoring import Scoring

        self.spec = spec
        self.resident = resident or Resident()
        self.engine = self.resident.engine_for(spec)
        self.engine.on_step = on_step
        self.engine.pause_background = pause_background or contextlib.nullcontext
        self.scoring = Scoring(spec.metrics, self.resident.scorer_for(spec.metrics))
        self.busy_s = 0.0  # time spent generating (for the closing summary)
        self.started_s: float | None = None

    def start(self) -> None:
        self.engine.pipe  # load now: a missing model stops the sweep here, not as a failed point
        self.resident.keep_scorer(self.spec.metrics, self.scoring.scorer)  # and missing metric weights too

    def calibrate(self, method: str, items: list[tuple[str, int]], params: dict | None = None) -> dict[str, list[float]]:
        return self.engine.calibrate(method, items, params)

    def run(self, items, prepare, on_start, on_generated, on_scored, should_stop) -> None:
        """Run each item's unit (``prepare(item)``) back to back, then score it; report as things finish."""
        self.started_s = self.started_s or time.perf_counter()
        for item in items:
            if should_stop():
                break
            unit = prepare(item)
            outputs = []
            t0 = time.perf_counter()
            for job, result in run_item(self.engine, unit, on_start, should_stop):
                self.busy_s += time.perf_counter() - t0
                on_generated(job, result)  # its media and row are written between the timed calls
                outputs.append((job, result))
                t0 = time.perf_counter()
            on_scored(item, score_outputs(self.scoring, unit, outputs))

    def stats(self) -> dict[str, Any]:
        """Pipeline calls by purpose and the fraction of time spent generating (for the closing summary)."""
        wall = time.perf_counter() - self.started_s if self.started_s else 0.0
        return {"calls": dict(self.engine.calls), "workers": [{"busy_s": self.busy_s, "wall_s": wall}]}

    def close(self) -> None:
        pass
