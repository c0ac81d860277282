"""What one process keeps loaded from one sweep to the next: `repro tune` sweeps once per round of its search,
and a real pipeline loads for minutes (and warms up), its metric networks for seconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Resident:
    engine: Any = None  # experiments.runner.Engine: its pipeline, loaded once, and its one warm-up
    scorer: Any = None  # metrics.Scorer: the metric networks ...
    metrics: Any = None  # ... of this spec's metrics section

    def scorer_for(self, metrics: Any) -> Any:
        """The kept metric networks when they are `metrics`' (a spec's metrics section), else None."""
        return self.scorer if self.scorer is not None and self.metrics == metrics else None

    def keep_scorer(self, metrics: Any, scorer: Any) -> Any:
        self.metrics, self.scorer = metrics, scorer
        return scorer

    def engine_for(self, spec: Any) -> Any:
        """The kept engine when it runs `spec`'s model, else a new one (kept from now on)."""
        from experiments.runner import Engine

        if self.engine is None or self.engine.spec.model != spec.model:
            self.engine = Engine(spec)
        self.engine.spec = spec
        self.engine.calls.clear()  # counted per sweep (its closing summary)
        return self.engine
