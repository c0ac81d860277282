"""Optimization axes: torch.compile, attention backends, fp8 layerwise casting, offloading, VAE tiling, quantization.

A sweep crosses the cache grid with these axes (``optimizations:`` in a spec). Each axis is one
module of this package registered in :data:`AXES` (see :mod:`.axis`: name, default, check, apply).
Two entry points:

* :func:`check_available` runs at validation time (``repro validate`` / ``repro sweep``, from
  ``repro.plan.check_support``, before any model loads) and raises one :class:`SpecError` naming
  the option, the value and the reason for the first value that cannot run on this machine.
* :func:`applied` is a context manager around one generation (``Engine.generate``): it applies the
  non-default values to the loaded pipeline (by each axis' ``apply_rank``, compile last), yields an
  info dict, and on exit undoes every change in reverse, so the next generation (another point, a
  baseline) runs the unoptimized pipeline bit for bit as before.

The info dict: ``compile_s`` (None without compile) and ``recompiles``, plus what the compile axis
records (:mod:`.compile`).

Example::

    with applied(pipe, {"compile": "regional", "attention_backend": "native"}, warm=lambda: pipe(prompt)) as info:
        image = pipe(prompt).images[0]
    print(info["compile_s"], info["recompiles"])
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from experiments.errors import SpecError
from experiments.optimizations.axis import (AXES, Axis, defaults, is_default_optimization, non_default,
                                            optimization_label, register_axis, unknown)

# registration order = the order of the spec's fields and of labels
from experiments.optimizations import compile as _compile  # noqa: E402,F401  (registers the axis)
from experiments.optimizations import attention as _attention  # noqa: E402,F401
from experiments.optimizations import casting as _casting  # noqa: E402,F401
from experiments.optimizations import offload as _offload  # noqa: E402,F401
from experiments.optimizations import tiling as _tiling  # noqa: E402,F401
from experiments.optimizations import quantization as _quantization  # noqa: E402,F401
from experiments.optimizations.attention import attention_backend_problem  # noqa: E402
from experiments.optimizations.casting import layerwise_casting_problem  # noqa: E402
from experiments.optimizations.compile import compile_problem  # noqa: E402
from experiments.optimizations.offload import offload_problem  # noqa: E402

__all__ = ["AXES", "Axis", "DEFAULTS", "applied", "check_available", "defaults", "is_default_optimization",
           "non_default", "optimization_label", "register_axis", "attention_backend_problem",
           "layerwise_casting_problem", "compile_problem", "offload_problem"]

#: axis -> default value (the unoptimized pipeline)
DEFAULTS: dict[str, Any] = defaults()


def check_available(optimizations_spec: Any, device: str, dtype: str = "float32") -> None:
    """Raise SpecError (one line: option, value, reason) for the first value that cannot run on `device`.

    `optimizations_spec` is an OptimizationsSpec or a mapping of axis -> list of values; `dtype` is the
    transformer's dtype (attention backends such as flash need float16/bfloat16).
    """
    axes = optimizations_spec.axes() if hasattr(optimizations_spec, "axes") else dict(optimizations_spec)
    for name, values in axes.items():
        axis = AXES.get(name)
        if axis is None:
            raise SpecError(f"optimizations.{name}: is not an optimization axis; known: {', '.join(AXES)}")
        for value in values:
            if axis.is_default(value):
                continue
            reason = axis.check(value, device, dtype)
            if reason and reason.startswith("is not"):
                raise SpecError(f"optimizations.{name}: {value!r} {reason}")
            if reason:
                raise SpecError(f"optimizations.{name}: {value!r} cannot run here (device {device}): {reason}")


@contextlib.contextmanager
def applied(pipe: Any, optimization: dict[str, Any], warm: Callable[[], None]) -> Iterator[dict[str, Any]]:
    """Apply `optimization` to `pipe`, run `warm()` once after compiling, yield the info dict, undo on exit."""
    todo = non_default(optimization)  # raises ValueError on an unknown axis
    info: dict[str, Any] = {"compile_s": None, "recompiles": None}
    with contextlib.ExitStack() as stack:
        for name in sorted(todo, key=lambda n: AXES[n].apply_rank):
            stack.enter_context(AXES[name].apply(pipe, todo[name], warm, info))
        yield info
