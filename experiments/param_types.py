"""Checking a spec value against the type of a ``diffusers.hooks`` config dataclass field.

YAML gives numbers, strings, booleans, lists and mappings; the config dataclasses declare
``float``, ``int``, ``bool``, ``tuple[int, int]``, ``list[str] | None``, ``torch.dtype`` and
callables. A value is accepted only if it is what the field says: a bool is not a number,
2.5 is not an int, NaN and inf are not thresholds, a callable cannot come from a spec.
Ranges (e.g. ``retention_ratio`` in [0, 1]) come from the method registry.

Example::

    problem = type_problem(3.5, int)   # "an integer"
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any


def type_problem(value: Any, hint: Any) -> str | None:
    """None when `value` fits `hint`, else what the field allows (e.g. "a finite number")."""
    return None if _fits(value, hint) else describe(hint)


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list, typing.Sequence) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        return all(_fits(v, inner) for v in value)
    if origin is typing.Callable or hint is typing.Callable or getattr(origin, "__name__", "") == "Callable":
        return False  # a function cannot come from YAML
    name = getattr(hint, "__name__", str(hint))
    if name == "dtype":  # torch.dtype: given by name, converted when the config is built
        return isinstance(value, str)
    if name == "Tensor":
        return False
    return True  # a type this checker does not know: the config's own checks decide


def describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        parts = [describe(a) for a in args if describe(a) != "not settable from a spec"]
        return " or ".join(dict.fromkeys(parts)) or "not settable from a spec"
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a finite number"
    if hint is str:
        return "a string"
    if origin in (tuple, list) or hint in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)}: [{', '.join(describe(a) for a in args)}]"
        return f"a list of {describe(args[0]) if args else 'values'}"
    name = getattr(hint, "__name__", str(hint))
    if name == "dtype":
        return "a torch dtype name (e.g. bfloat16)"
    return "not settable from a spec"


def range_problem(value: Any, low: float | None, high: float | None) -> str | None:
    """None when a number lies in [low, high] (either bound may be open-ended)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            return f">= {low}"
        if low is None:
            return f"<= {high}"
        return f"in [{low}, {high}]"
    return None
