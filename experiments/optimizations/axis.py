"""The optimization-axis registry: one :class:`Axis` per knob a sweep can cross with the cache grid.

An axis has a name (the key under ``optimizations:`` in a spec), a default (the unoptimized value),
the values a spec may give (``choices``; None: any value of the default's type, checked by
``check``), ``check(value, device, dtype) -> problem or None`` (run at validation, before a model
loads) and ``apply(pipe, value, warm, info)``, a context manager that applies the value to a loaded
pipeline and undoes it on exit. Axes apply by ``apply_rank`` (compile last, so it traces what the
others installed) and undo in reverse; specs and labels list them in registration order.

Adding an axis is one file in this package that calls :func:`register_axis`, imported from
``__init__``. Everything else (the spec's ``optimizations`` fields, the plan's grid and labels, the
runner's "nothing to apply" test) reads :data:`AXES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ContextManager

Check = Callable[[Any, str, str], "str | None"]
Apply = Callable[[Any, Any, Callable[[], None], dict], ContextManager[None]]


@dataclass(frozen=True)
class Axis:
    name: str
    default: Any
    check: Check
    apply: Apply
    apply_rank: int
    choices: tuple[Any, ...] | None = None
    doc: str = ""

    def normalize(self, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    def is_default(self, value: Any) -> bool:
        return value is None or self.normalize(value) == self.normalize(self.default)


AXES: dict[str, Axis] = {}


def register_axis(axis: Axis) -> Axis:
    AXES[axis.name] = axis
    return axis


def defaults() -> dict[str, Any]:
    """The default (unoptimized) value of every axis: the one definition of "no optimization"."""
    return {name: axis.default for name, axis in AXES.items()}


def is_default_optimization(optimization: dict[str, Any]) -> bool:
    """True when every axis of `optimization` has its default value (absent axes count as default)."""
    unknown(optimization)
    return all(AXES[k].is_default(v) for k, v in optimization.items())


def non_default(optimization: dict[str, Any]) -> dict[str, Any]:
    """Only the axes whose value differs from the default (in the order given)."""
    unknown(optimization)
    return {k: v for k, v in optimization.items() if not AXES[k].is_default(v)}


def optimization_label(optimization: dict[str, Any]) -> str:
    """"compile=regional,attention_backend=flash", or "none" for the default."""
    return ",".join(f"{k}={v}" for k, v in non_default(optimization).items()) or "none"


def unknown(optimization: dict[str, Any]) -> None:
    extra = set(optimization) - set(AXES)
    if extra:
        raise ValueError(f"unknown optimization axes {sorted(extra)}; known: {', '.join(AXES)}")
