"""The default executor: one pipeline in this process, jobs one after another."""

from __future__ import annotations

import traceback
from typing import Any, Callable, Iterable

from experiments.runner import Engine


class LocalExecutor:
    def __init__(self, spec: Any, on_step: Callable[[int, int], None] | None = None):
        self.engine = Engine(spec)
        self.engine.on_step = on_step

    def start(self) -> None:
        self.engine.pipe  # load now: a missing model stops the sweep here, not as a failed point

    def calibrate(self, prompt: str, seed: int) -> dict[str, list[float]]:
        return self.engine.calibrate_mag_cache(prompt, seed)

    def run(self, work: Iterable[tuple[Any, Any]], on_start, on_done, should_stop) -> None:
        for job, request in work:
            if should_stop():
                return
            on_start(job)
            try:
                result = self.engine.generate(request)
            except Exception as exc:  # isolated: recorded as a failed point, the sweep goes on
                exc.formatted = traceback.format_exc(limit=3)
                _free_cuda_memory()
                result = exc
            on_done(job, result)

    def close(self) -> None:
        pass


def _free_cuda_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
