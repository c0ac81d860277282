"""Executors run generation jobs; the sweep driver is the only writer of the store.

An executor takes (job, request) pairs and reports each result (or the exception it
raised) through a callback, in any order. `local` runs in this process; `ray` spreads the
same jobs over one actor per GPU (see repro.executors.ray).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol

from experiments.errors import SpecError

OnDone = Callable[[Any, Any], None]  # (job, GenerationResult | BaseException)


class Executor(Protocol):
    def start(self) -> None: ...
    def calibrate(self, prompt: str, seed: int) -> dict[str, list[float]]: ...
    def run(self, work: Iterable[tuple[Any, Any]], on_start: Callable[[Any], None], on_done: OnDone,
            should_stop: Callable[[], bool]) -> None: ...
    def close(self) -> None: ...


def make_executor(kind: str, spec: Any, on_step: Callable[[int, int], None] | None = None,
                  workers: int | None = None, address: str | None = None) -> Executor:
    if kind == "local":
        from repro.executors.local import LocalExecutor

        return LocalExecutor(spec, on_step=on_step)
    if kind == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SpecError("--executor ray needs Ray: pip install 'diffusion-cache-repro[ray]'") from None
        from repro.executors.ray import RayExecutor

        return RayExecutor(spec, workers=workers, address=address)
    raise SpecError(f"--executor {kind!r}: allowed executors are local, ray")
