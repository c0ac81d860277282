"""One item (prompt, seed) on one worker: its baseline, then its cached variants, back to back.

This is the timing protocol of a sweep, shared by every executor (the local one runs it in
the sweep process, the Ray actors run it on their GPU):

* The pipeline stays loaded; only the cache (and any optimization) is switched on and off
  between generations. Each generation is one pipeline call, the quality run and the timed
  run at once (warm-up: once per engine, see ``experiments.runner``).
* Each cached generation is paired with the latest baseline timing of its optimization group
  on this worker: the baseline generated just before, or, when the baseline was stored by an
  earlier session (a resumed or extended sweep), one re-timing call of it at the start of the
  group. The speedup of an item is therefore always baseline / cached measured side by side,
  so a machine that slows down mid-sweep changes both alike.
* Targeted items (``timing.repeats`` > 1) add ``repeats - 1`` interleaved pairs B C after each
  cached quality run; every pair is kept (``GenerationResult.pairs``).
* Nothing else of ours runs during a timed call: the item's generations run back to back (the
  driver writes each one's media between them), then :func:`score_outputs` scores the item on the
  same worker (each baseline prepared once for all its variants).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from experiments.runner import GenerationRequest, pair


@dataclass
class ItemUnit:
    """What a worker needs to run one item (built by the sweep driver from a plan.ItemWork)."""

    work: Any  # repro.plan.ItemWork: the item and its jobs in execution order
    requests: dict[str, GenerationRequest]  # job key -> its request
    speed_requests: dict[str, GenerationRequest]  # optimization group -> its baseline's request (to re-time)
    repeats: int = 1  # timed B C pairs per cached job (1: the quality run only)
    references: dict[str, Any] = field(default_factory=dict)  # stored baseline key -> frames, to score against


def run_item(engine: Any, unit: ItemUnit, on_start: Callable[[Any], None] | None = None,
             should_stop: Callable[[], bool] = lambda: False) -> Iterator[tuple[Any, Any]]:
    """Run the unit's jobs in order; yields (job, GenerationResult | exception) after each one."""
    work = unit.work
    latest: dict[str, Any] = {}  # group -> CallRecord of the latest baseline timing on this worker
    broken: set[str] = set()  # groups whose baseline failed here: nothing to time against
    for job in work.jobs:
        if should_stop():
            return
        if on_start is not None:
            on_start(job)
        group = work.groups[job.key]
        request = unit.requests[job.key]
        speed = unit.speed_requests.get(group)
        is_speed_baseline = job.role == "baseline"
        if not is_speed_baseline and group not in latest and group not in broken and speed is not None:
            try:
                latest[group] = engine.time_call(speed)  # its baseline ran in an earlier session: re-time it
            except Exception:
                broken.add(group)
        result = _attempt(engine, request)
        ok = not isinstance(result, BaseException)
        if ok and is_speed_baseline:
            latest[group] = result.runs[0]
        elif ok and group in latest:
            result.pairs = [pair(latest[group], result.runs[0])]
            for _ in range(unit.repeats - 1):
                b, c = engine.time_call(speed), engine.time_call(request)
                result.pairs.append(pair(b, c))
                latest[group] = b
        elif not ok and is_speed_baseline:
            broken.add(group)
        yield job, result


def score_outputs(scoring: Any, unit: ItemUnit, outputs: list[tuple[Any, Any]]) -> list[Any]:
    """Score an item's generations (after its timed calls): the ones that succeeded, against their baselines
    (generated in this item, or stored earlier and given in ``unit.references``)."""
    from repro.scoring import Output

    ok = [Output(job.key, job.prompt, result.frames, job.quality_baseline_key)
          for job, result in outputs if not isinstance(result, BaseException)]
    return scoring.score_item(ok, unit.references) if ok else []


def _attempt(engine: Any, request: GenerationRequest) -> Any:
    try:
        return engine.generate(request)
    except Exception as exc:  # isolated: recorded as a failed generation, the sweep goes on
        exc.formatted = traceback.format_exc()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return exc
