"""What a running sweep tells its listeners (your own code: progress hooks, notifications).

Pass listeners to ``repro.sweep.run_sweep(spec, listeners=[...])``. Each is called in the
sweep driver, between timed calls, right after the store holds what the event describes, so a
listener may read the store it gets in :class:`SweepStarted`. A listener runs beside no timed
call but delays the next one: return quickly (W&B, for one, reads the store from its own
process: ``repro.tracking``); an exception it raises is printed once as a warning and the
listener is dropped: a listener never stops a sweep.

Events, in order:

* ``sweep_started``: once, after the plan is known and before the first generation.
* ``generation_started``: a generation is about to run.
* ``generation_finished``: each generation run in this session, once its item is scored: its row
  is committed and, when the spec asks for scores, its scores too (or scoring failed, and
  ``repro score`` will retry it). Failed generations come too (``row["status"] == "failed"``).
* ``item_finished``: an item (prompt, seed) whose jobs of this session are all finished.
* ``point_finished``: a point whose jobs of this session are all finished.
* ``sweep_finished``: once, at the end (also after Ctrl-C), before the report.

Every method is optional: subclass :class:`SweepListener` and override what you need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass(frozen=True)
class SweepStarted:
    spec: Any  # experiments.spec.Spec
    run_dir: Any  # pathlib.Path
    store: Any  # repro.store.Store, open for reading for the whole sweep
    plan: Any  # repro.plan.Plan (after --only)
    todo: list[Any]  # the jobs this session runs, in execution order
    items: int  # how many items (prompt, seed) this session runs


@dataclass(frozen=True)
class GenerationStarted:
    job: Any  # repro.plan.Job


@dataclass(frozen=True)
class GenerationFinished:
    job: Any  # repro.plan.Job
    row: dict[str, Any]  # the store's generation row (timing, compute counts, media paths, status, error)
    scores: dict[str, Any]  # metric -> {"value", "per_frame", "label", ...}; empty when none were made
    done: int  # generations finished so far in this session
    total: int  # generations this session runs


@dataclass(frozen=True)
class ItemFinished:
    prompt_index: int
    prompt: str
    seed: int
    keys: list[str]  # the generations of this item run in this session
    done: int  # items finished so far in this session
    total: int


@dataclass(frozen=True)
class PointFinished:
    point_id: str  # "baseline" (or "baseline | compile=...") for baselines
    keys: list[str]  # the generations of this point run in this session


@dataclass(frozen=True)
class SweepFinished:
    outcome: Any  # repro.sweep.SweepOutcome
    stats: dict[str, Any] = field(default_factory=dict)  # pipeline calls, worker busy time (see Progress.summary)


class SweepListener:
    def sweep_started(self, event: SweepStarted) -> None:
        pass

    def generation_started(self, event: GenerationStarted) -> None:
        pass

    def generation_finished(self, event: GenerationFinished) -> None:
        pass

    def item_finished(self, event: ItemFinished) -> None:
        pass

    def point_finished(self, event: PointFinished) -> None:
        pass

    def sweep_finished(self, event: SweepFinished) -> None:
        pass


class Listeners:
    """Calls every listener; one that raises is reported once and dropped."""

    def __init__(self, listeners: list[Any], stream: TextIO):
        self.listeners = list(listeners)
        self.stream = stream

    def emit(self, name: str, event: Any) -> None:
        for listener in list(self.listeners):
            method = getattr(listener, name, None)
            if method is None:
                continue
            try:
                method(event)
            except Exception as exc:
                self.listeners.remove(listener)
                print(f"warning: sweep listener {type(listener).__name__} failed in {name} "
                      f"({type(exc).__name__}: {exc}); it is switched off, the sweep goes on", file=self.stream)
