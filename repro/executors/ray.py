"""The Ray executor: one actor per GPU (or CPU worker), each owning one loaded pipeline.

Each actor wraps the same :class:`experiments.runner.Engine` as the local executor and runs
whole items on it (``repro.executors.item``: the item's baseline, then its cached variants,
back to back, paired timing), so a speedup never compares runs on different GPUs. Once an
item's timed calls are done, the actor scores it on its own device, as the local executor does.

The driver hands an item to a worker as one ``begin`` call and one ``next`` call per job,
all submitted at once (an actor runs its calls in order), and gives a worker its next item
while the last job of the current one is still running, so a worker never waits for the
driver. Each ``next`` returns one generation (frames as numpy arrays, through the object
store, so media reach the run directory whether or not machines share a filesystem); the
item's last one also returns the item's scores. The driver stays the only writer of the store.

A job that raises inside an actor is an ordinary failed job (its original exception is
reported). A worker that dies (killed, out of memory, node lost) loses nothing: the jobs of
its items not yet reported are retried on another or a replacement worker (a job whose run
killed the worker at most ``MAX_RETRIES`` times, then it is reported as failed with a
:class:`WorkerLost` error). No job is reported twice.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import ray
from ray import exceptions as rex

from experiments.errors import SpecError
from experiments.runner import Engine
from repro import stop

MAX_RETRIES = 2  # re-runs of a job whose worker died, before it is reported as failed
_POLL_S = 1.0  # ray.wait timeout, so a Ctrl-C handler in the driver runs promptly

# System failures: the job itself did not fail, the worker (or the node holding its result) went away.
_LOST = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError,
         rex.OutOfMemoryError)


class WorkerLost(RuntimeError):
    """A job's worker died on every attempt (killed, out of memory, node lost)."""


@ray.remote
class _Worker:
    """The actor: one Engine, many items, each scored after its timed calls."""

    def __init__(self, spec: Any, threads: int | None):
        from repro.scoring import Scoring

        if threads:
            import torch

            torch.set_num_threads(threads)
        self.engine = Engine(spec)
        self.scoring = Scoring(spec.metrics)
        self.generations = 0
        self._item = None  # the running item's generator (repro.executors.item.run_item) ...
        self._unit = None
        self._outputs: list[tuple[Any, Any]] = []  # ... and what it generated so far
        self.busy_s = 0.0  # time spent in items (generating, timing) ...
        self._first = self._last = None  # ... between the first item's start and the last job's end

    def load(self) -> dict[str, Any]:
        self.engine.pipe  # noqa: B018 - load now; raises ModelUnavailable here, before any job
        self.scoring.scorer  # noqa: B018 - raises WeightsMissing here too
        return {"pid": os.getpid(), "device": self.engine.device, "node": ray.get_runtime_context().get_node_id()}

    def begin(self, unit: Any) -> None:
        from repro.executors.item import run_item

        self._first = self._first or time.perf_counter()
        self._item, self._unit, self._outputs = run_item(self.engine, unit), unit, []

    def next(self) -> tuple[str, Any, list[Any]]:
        """Run the item's next job: (job key, GenerationResult or its exception, the item's scores after its
        last job, else [])."""
        from repro.executors.item import score_outputs

        t0 = time.perf_counter()
        try:
            job, result = next(self._item)
        finally:
            self._last = time.perf_counter()
            self.busy_s += self._last - t0
            self.generations += 1
        self._outputs.append((job, result))
        if len(self._outputs) < len(self._unit.work.jobs):
            return job.key, result, []
        scores = score_outputs(self.scoring, self._unit, self._outputs)
        self._item, self._unit, self._outputs = None, None, []
        return job.key, result, scores

    def calibrate(self, method: str, items: list[tuple[str, int]], params: dict | None = None) -> dict[str, list[float]]:
        return self.engine.calibrate(method, items, params)

    def counts(self) -> dict[str, Any]:
        wall = (self._last - self._first) if self._first and self._last else 0.0
        return {"actor": ray.get_runtime_context().get_actor_id(), "pid": os.getpid(),
                "loads": self.engine.loads, "generations": self.generations, "calls": dict(self.engine.calls),
                "busy_s": self.busy_s, "wall_s": wall}


@dataclass(eq=False)  # identity: a slot is one actor
class _Slot:
    actor: Any
    ready: Any  # ObjectRef of load(), or None once loaded
    pending: deque = field(default_factory=deque)  # (ref of next(), job, item), in the actor's order
    node: str | None = None  # the Ray node id it runs on (known once loaded)


class RayExecutor:
    def __init__(self, spec: Any, workers: int | None = None, address: str | None = None,
                 raise_if_aborted: Callable[[], None] | None = None):
        self.spec = spec
        self.workers = workers
        self.address = address
        self.slots: list[_Slot] = []
        self.loads_per_worker: dict[str, int] = {}  # actor id -> pipeline loads (filled at close; stays 1)
        self.generations_per_worker: dict[str, int] = {}  # actor id -> generations served
        self.worker_stats: dict[str, dict[str, Any]] = {}  # actor id -> its counts(), the last ones read
        self.nodes: dict[str, str] = {}  # job key -> Ray node id of the worker whose result was reported
        self.retries = 0  # items re-queued because their worker died
        self.replaced = 0  # replacement workers started
        self._started_ray = False
        self._options: dict[str, Any] = {}
        self._threads: int | None = None
        self._raise_if_aborted = raise_if_aborted

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
            else:
                # a private instance ("local"), never a cluster someone else started on this machine
                ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                         log_to_driver=False, logging_level=logging.WARNING, ignore_reinit_error=True)
            self._started_ray = True
            stop.reclaim()  # ray.init's own SIGTERM handler aborts the driver: Ctrl-C and SIGTERM stay ours
        self._plan_workers()
        self.slots = [self._new_slot() for _ in range(self.workers)]
        for slot in self.slots:  # a missing model stops the sweep here, as itself
            slot.node = _get(slot.ready)["node"]
            slot.ready = None

    def close(self) -> None:
        try:
            if ray.is_initialized():
                self._read_counts()
                for slot in self.slots:
                    ray.kill(slot.actor)
        finally:
            self.slots = []
            if self._started_ray and ray.is_initialized():
                ray.shutdown()
            self._started_ray = False

    def stats(self) -> dict[str, Any]:
        self._read_counts()
        calls: Counter[str] = Counter()
        for c in self.worker_stats.values():
            calls.update(c["calls"])
        return {"calls": dict(calls), "workers": [{"busy_s": c["busy_s"], "wall_s": c["wall_s"]}
                                            for c in self.worker_stats.values()]}

    def counts(self) -> list[dict[str, Any]]:
        """Actor id, pid, pipeline loads, generations, calls and busy time of each live, loaded worker."""
        out = []
        for slot in self.slots:
            if slot.ready is None:
                try:
                    out.append(ray.get(slot.actor.counts.remote(), timeout=30))
                except (*_LOST, rex.GetTimeoutError):
                    pass
        return out

    def _read_counts(self) -> None:
        for c in self.counts():
            self.worker_stats[c["actor"]] = c
            self.loads_per_worker[c["actor"]] = c["loads"]
            self.generations_per_worker[c["actor"]] = c["generations"]

    def _plan_workers(self) -> None:
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        if gpus and self.spec.model.device != "cpu":
            self.workers = self.workers or gpus
            if self.workers > gpus:
                raise SpecError(f"--workers {self.workers}: the Ray cluster has {gpus} GPU(s), one per worker")
            self._options = {"num_gpus": 1}
            return
        cpus = res.get("CPU", 1.0)
        largest = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=cpus)
        self.workers = self.workers or 1
        self._threads = max(1, min(int(cpus) // self.workers, int(largest)))
        self._options = {"num_gpus": 0, "num_cpus": min(self._threads, cpus / self.workers)}

    def _new_slot(self) -> _Slot:
        actor = _Worker.options(**self._options).remote(self.spec, self._threads)
        return _Slot(actor, actor.load.remote())

    # -- work ---------------------------------------------------------------------------------

    def calibrate(self, method: str, items: list[tuple[str, int]], params: dict | None = None) -> dict[str, list[float]]:
        last: BaseException | None = None
        for _ in range(MAX_RETRIES + 1):
            slot = self._idle() or next(iter(self.slots), None)
            if slot is None:
                break
            try:
                if slot.ready is not None:
                    _get(slot.ready)
                    slot.ready = None
                return _get(slot.actor.calibrate.remote(method, items, params))
            except _LOST as exc:
                last = exc
                self._replace(slot)
        raise WorkerLost(f"{method} calibration: no Ray worker survived it; last: {type(last).__name__}: "
                         f"{_first_line(last) if last else 'no worker left'}")

    def run(self, items: Iterable[Any], prepare: Callable[[Any], Any], on_start: Callable[[Any], None],
            on_generated: Callable[[Any, Any], None], on_scored: Callable[[Any, list[Any]], None],
            should_stop: Callable[[], bool]) -> None:
        queue = deque(items)
        tries: dict[str, int] = {}  # job key -> runs that ended with their worker dead
        started: set[str] = set()

        def start(slot: _Slot) -> None:  # the job at the head of a worker's queue is the one running
            if slot.pending and slot.pending[0][1].key not in started:
                started.add(slot.pending[0][1].key)
                on_start(slot.pending[0][1])

        def dispatch() -> None:
            while queue and not should_stop():
                slot = self._ready_for_more()
                if slot is None:
                    return
                item = queue.popleft()
                unit = prepare(item)
                slot.actor.begin.remote(unit)
                for job in item.jobs:
                    slot.pending.append((slot.actor.next.remote(), job, item))
                start(slot)

        stopping = False
        while True:
            if should_stop() and not stopping:
                stopping = True  # finish the generation in flight on each worker, drop what is queued behind it
                for slot in self.slots:
                    while len(slot.pending) > 1:
                        slot.pending.pop()
            dispatch()
            heads = {s.pending[0][0]: s for s in self.slots if s.pending}
            loading = {s.ready: s for s in self.slots if s.ready is not None}
            # done when nothing is queued or running; a replacement still starting is not waited for (after a
            # node loss it may never be placed: the surviving workers hold the cluster's resources)
            if not heads and (not loading or not queue or stopping):
                if not queue or stopping:
                    break
                if self.slots:
                    continue
                while queue:  # every worker died and no replacement may be started: fail the rest
                    for job in queue.popleft().jobs:
                        on_generated(job, WorkerLost("no Ray worker is left to run this job"))
                return
            self._abort_if_asked()
            ready, _ = ray.wait([*heads, *loading], num_returns=1, timeout=_POLL_S)
            if not ready:
                continue
            ref = ready[0]
            if ref in loading:
                self._loaded(loading[ref])
                continue
            slot = heads[ref]
            _, job, item = slot.pending.popleft()
            try:
                _, result, scores = _get(ref)
            except _LOST as exc:
                self._requeue(slot, job, item, exc, tries, queue, on_generated)
                continue
            except Exception as exc:  # raised by Ray itself for this call (the job's own errors come as values)
                result, scores = exc, []
            self.nodes[job.key] = slot.node
            if hasattr(result, "frames"):
                result.frames = _owned(result.frames)
            dispatch()  # keep the workers busy while the driver writes this result
            start(slot)
            on_generated(job, result)
            if job is item.jobs[-1]:  # the item's last generation comes with the item's scores
                on_scored(item, scores)

    def _abort_if_asked(self) -> None:
        """Stop now (SIGTERM, a second Ctrl-C): kill the workers, so their generations in flight are dropped
        instead of finished (a busy actor would answer nothing else until its generation ends)."""
        if self._raise_if_aborted is None:
            return
        try:
            self._raise_if_aborted()
        except KeyboardInterrupt:
            for slot in self.slots:
                ray.kill(slot.actor)
            self.slots = []
            raise

    # -- workers ------------------------------------------------------------------------------

    def _requeue(self, slot: _Slot, job: Any, item: Any, exc: BaseException, tries: dict[str, int], queue: deque,
                 on_generated) -> None:
        """A worker died running `job`: its items' jobs not yet reported go back to the front of the queue."""
        self._read_counts()
        lost = [(job, item), *((j, it) for _, j, it in slot.pending)]
        slot.pending.clear()
        self._replace(slot)
        tries[job.key] = tries.get(job.key, 0) + 1
        if tries[job.key] > MAX_RETRIES:
            on_generated(job, WorkerLost(f"the Ray worker died on each of {tries[job.key]} attempts; last: "
                                         f"{type(exc).__name__}: {_first_line(exc)}"))
            lost = lost[1:]
        again: dict[int, Any] = {}
        for j, it in lost:
            again.setdefault(id(it), (it, []))[1].append(j)
        for it, jobs in reversed(list(again.values())):
            self.retries += 1
            queue.appendleft(dataclasses.replace(it, jobs=jobs))

    def _idle(self) -> _Slot | None:
        return next((s for s in self.slots if s.ready is None and not s.pending), None)

    def _ready_for_more(self) -> _Slot | None:
        """An idle worker, else one whose last queued job is running (its next item queues behind it)."""
        loaded = [s for s in self.slots if s.ready is None and len(s.pending) <= 1]
        return min(loaded, key=lambda s: len(s.pending), default=None)  # the first of the least busy

    def _loaded(self, slot: _Slot) -> None:
        try:
            slot.node = _get(slot.ready)["node"]
            slot.ready = None
        except Exception:  # a replacement that cannot load: drop it; its jobs go to the others
            self.slots.remove(slot)
            ray.kill(slot.actor)

    def _replace(self, dead: _Slot) -> None:
        """Drop a dead worker and start a replacement (bounded, so jobs that kill workers cannot loop forever)."""
        if dead in self.slots:
            self.slots.remove(dead)
            ray.kill(dead.actor)
        if self.replaced < 2 * self.workers + MAX_RETRIES:
            self.replaced += 1
            self.slots.append(self._new_slot())


def _get(ref: Any) -> Any:
    """ray.get, re-raising a job's own exception as itself (not wrapped in RayTaskError)."""
    try:
        return ray.get(ref)
    except rex.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException) and not isinstance(cause, rex.RayError):
            raise cause from None
        raise


def _owned(frames: Any) -> Any:
    """A writable copy of an object-store array (ray.get gives a read-only view of shared memory)."""
    import numpy as np

    return frames if getattr(frames, "flags", None) is None or frames.flags.writeable else np.array(frames)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
