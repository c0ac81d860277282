"""Executors run items (repro.plan.ItemWork); the sweep driver is the only writer of the store.

An executor runs each item's jobs back to back on one worker (``repro.executors.item``:
the timing protocol), reports each generation (its result, or the exception it raised) and
each finished score through callbacks, as they come. `local` runs in this process; `ray`
spreads items over one actor per GPU (see repro.executors.ray).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol

from experiments.errors import SpecError


class Executor(Protocol):
    def start(self) -> None: ...
    def calibrate(self, method: str, items: list[tuple[str, int]], params: dict | None = None) -> dict[str, list[float]]: ...
    def run(self, items: Iterable[Any], prepare: Callable[[Any], Any], on_start: Callable[[Any], None],
            on_generated: Callable[[Any, Any], None],  # (job, GenerationResult | BaseException)
            on_scored: Callable[[Any, list[Any]], None],  # (item, [repro.scoring.ScoreResult])
            should_stop: Callable[[], bool]) -> None: ...
    def stats(self) -> dict[str, Any]: ...  # {"calls": {purpose: n}, "workers": [{"busy_s", "wall_s"}, ...]}
    def close(self) -> None: ...


def make_executor(kind: str, spec: Any, on_step: Callable[[int, int], None] | None = None,
                  workers: int | None = None, address: str | None = None, resident: Any = None,
                  raise_if_aborted: Callable[[], None] | None = None,
                  pause_background: Callable[[], Any] | None = None) -> Executor:
    """`on_step` runs in the local pipeline's per-step callback; Ray workers are other processes, so the Ray
    executor calls `raise_if_aborted` (the sweep's stop-now check) between its polls instead.
    `pause_background` is entered around each local timed call (Ray workers time on their own machines).
    `resident` (repro.executors.resident.Resident): the loaded pipeline and metric networks a local executor
    takes over and leaves behind for this process's next sweep."""
    if kind == "local":
        from repro.executors.local import LocalExecutor
        from repro.executors.resident import Resident

        return LocalExecutor(spec, on_step=on_step, resident=resident or Resident(),
                             pause_background=pause_background)
    if kind == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SpecError("--executor ray needs Ray: pip install 'diffusion-cache-repro[ray]'") from None
        from repro.executors.ray import RayExecutor

        return RayExecutor(spec, workers=workers, address=address, raise_if_aborted=raise_if_aborted)
    raise SpecError(f"--executor {kind!r}: allowed executors are local, ray")
