"""Axis ``vae_tiling``: decode in tiles (``vae.enable_tiling()``) to bound decoder memory.

Whether a VAE can tile is known only once it is loaded, so validation refuses nothing; applying it
to a pipeline whose VAE has no ``enable_tiling`` fails that generation with a message. Undo restores
the previous ``use_tiling``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from experiments.optimizations.axis import Axis, register_axis


def vae_tiling_problem(value: Any, device: str, dtype: str = "float32") -> str | None:
    return None


@contextlib.contextmanager
def vae_tiling(pipe: Any) -> Iterator[None]:
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling"):
        raise RuntimeError(f"{type(pipe).__name__} has no VAE with enable_tiling(); drop vae_tiling: [true]")
    before = getattr(vae, "use_tiling", False)
    vae.enable_tiling()
    try:
        yield
    finally:
        if not before:
            vae.disable_tiling()


def _apply(pipe: Any, value: Any, warm: Callable[[], None], info: dict) -> Any:
    return vae_tiling(pipe)


AXIS = register_axis(Axis(
    name="vae_tiling", default=False, check=vae_tiling_problem, apply=_apply, apply_rank=40,
    choices=(False, True), doc="tiled VAE decoding",
))
