"""The Ray executor: one actor per GPU (or CPU worker), each owning one loaded pipeline.

Each actor wraps the same :class:`experiments.runner.Engine` as the local executor: it
loads the pipeline once and serves many generations. The driver keeps every worker busy
with one job at a time and hands the next job to whichever finishes first; results
(frames as numpy arrays) come back through the object store, so media reach the run
directory whether or not the machines share a filesystem, and the driver stays the only
writer of the store.

A job that raises inside an actor is an ordinary failed job (its original exception is
reported). A worker that dies (killed, out of memory, node lost) loses nothing: its job is
retried on another or a replacement worker, at most ``MAX_RETRIES`` times, then reported
as failed with a :class:`WorkerLost` error. No job is reported twice.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import ray
from ray import exceptions as rex

from experiments.errors import SpecError
from experiments.runner import Engine

MAX_RETRIES = 2  # re-runs of a job whose worker died, before it is reported as failed
_POLL_S = 1.0  # ray.wait timeout, so a Ctrl-C handler in the driver runs promptly

# System failures: the job itself did not fail, the worker (or the node holding its result) went away.
_LOST = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError,
         rex.OutOfMemoryError)


class WorkerLost(RuntimeError):
    """A job's worker died on every attempt (killed, out of memory, node lost)."""


@ray.remote
class _Worker:
    """The actor: one Engine, many generations."""

    def __init__(self, spec: Any, threads: int | None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.engine = Engine(spec)
        self.generations = 0

    def load(self) -> dict[str, Any]:
        self.engine.pipe  # noqa: B018 - load now; raises ModelUnavailable here, before any job
        return {"pid": os.getpid(), "device": self.engine.device}

    def generate(self, request: Any) -> Any:
        try:
            return self.engine.generate(request)
        except Exception as exc:
            exc.formatted = traceback.format_exc(limit=3)
            _free_cuda_memory()
            raise
        finally:
            self.generations += 1

    def calibrate(self, prompt: str, seed: int) -> dict[str, list[float]]:
        return self.engine.calibrate_mag_cache(prompt, seed)

    def counts(self) -> dict[str, Any]:
        return {"actor": ray.get_runtime_context().get_actor_id(), "pid": os.getpid(),
                "loads": self.engine.loads, "generations": self.generations}


@dataclass(eq=False)  # identity: a slot is one actor
class _Slot:
    actor: Any
    ready: Any  # ObjectRef of load(), or None once loaded
    busy: bool = False


class RayExecutor:
    def __init__(self, spec: Any, workers: int | None = None, address: str | None = None):
        self.spec = spec
        self.workers = workers
        self.address = address
        self.slots: list[_Slot] = []
        self.loads_per_worker: dict[str, int] = {}  # actor id -> pipeline loads (filled at close; stays 1)
        self.generations_per_worker: dict[str, int] = {}  # actor id -> generations served
        self.retries = 0  # jobs re-run because their worker died
        self.replaced = 0  # replacement workers started
        self._started_ray = False
        self._options: dict[str, Any] = {}
        self._threads: int | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, ignore_reinit_error=True)
            self._started_ray = True
        self._plan_workers()
        self.slots = [self._new_slot() for _ in range(self.workers)]
        for slot in self.slots:  # a missing model stops the sweep here, as itself
            _get(slot.ready)
            slot.ready = None

    def close(self) -> None:
        try:
            if ray.is_initialized():
                for c in self.counts():
                    self.loads_per_worker[c["actor"]] = c["loads"]
                    self.generations_per_worker[c["actor"]] = c["generations"]
                for slot in self.slots:
                    ray.kill(slot.actor)
        finally:
            self.slots = []
            if self._started_ray and ray.is_initialized():
                ray.shutdown()
            self._started_ray = False

    def counts(self) -> list[dict[str, Any]]:
        """Actor id, pid, pipeline loads and generations of each live, loaded worker."""
        out = []
        for slot in self.slots:
            if slot.ready is None:
                try:
                    out.append(ray.get(slot.actor.counts.remote(), timeout=30))
                except (*_LOST, rex.GetTimeoutError):
                    pass
        return out

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

    def calibrate(self, prompt: str, seed: int) -> dict[str, list[float]]:
        last: BaseException | None = None
        for _ in range(MAX_RETRIES + 1):
            slot = self._idle() or next(iter(self.slots), None)
            if slot is None:
                break
            try:
                if slot.ready is not None:
                    _get(slot.ready)
                    slot.ready = None
                return _get(slot.actor.calibrate.remote(prompt, seed))
            except _LOST as exc:
                last = exc
                self._replace(slot)
        raise WorkerLost(f"MagCache calibration: no Ray worker survived it; last: {type(last).__name__}: "
                         f"{_first_line(last) if last else 'no worker left'}")

    def run(self, work: Iterable[tuple[Any, Any]], on_start: Callable[[Any], None],
            on_done: Callable[[Any, Any], None], should_stop: Callable[[], bool]) -> None:
        queue = deque((job, request, 0) for job, request in work)  # (job, request, attempts so far)
        running: dict[Any, tuple[Any, Any, int, _Slot]] = {}

        def dispatch() -> None:
            while queue and not should_stop():
                slot = self._idle()
                if slot is None:
                    return
                job, request, tries = queue.popleft()
                if tries == 0:
                    on_start(job)
                slot.busy = True
                running[slot.actor.generate.remote(request)] = (job, request, tries, slot)

        while running or (queue and not should_stop()):
            dispatch()
            loading = {s.ready: s for s in self.slots if s.ready is not None}
            if not running and not loading:
                if self.slots or should_stop():
                    continue
                while queue:  # every worker died and no replacement may be started: fail the rest
                    on_done(queue.popleft()[0], WorkerLost("no Ray worker is left to run this job"))
                return
            ready, _ = ray.wait([*running, *loading], num_returns=1, timeout=_POLL_S)
            if not ready:
                continue
            ref = ready[0]
            if ref in loading:
                self._loaded(loading[ref])
                continue
            job, request, tries, slot = running.pop(ref)
            slot.busy = False
            try:
                result = _get(ref)
            except _LOST as exc:
                self._replace(slot)
                if tries < MAX_RETRIES:
                    self.retries += 1
                    queue.appendleft((job, request, tries + 1))
                    continue
                result = WorkerLost(f"the Ray worker died on each of {tries + 1} attempts; last: "
                                    f"{type(exc).__name__}: {_first_line(exc)}")
            except Exception as exc:  # raised by the job in the actor (original type), or by Ray itself
                result = exc
            if hasattr(result, "frames"):
                result.frames = _owned(result.frames)
            dispatch()  # keep the workers busy while the driver writes and scores this result
            on_done(job, result)

    # -- workers ------------------------------------------------------------------------------

    def _idle(self) -> _Slot | None:
        return next((s for s in self.slots if s.ready is None and not s.busy), None)

    def _loaded(self, slot: _Slot) -> None:
        try:
            _get(slot.ready)
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


def _free_cuda_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
