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


# -- hints as JSON (experiments/library_facts.py keeps the types of diffusers' config fields this way) --------
# The encoding keeps exactly what `_fits` and `describe` read, in their order: a union's members, a list's or
# tuple's items, a callable, and for any other type its ``__name__`` (a stand-in class of that name is made
# again). `encode_hint` returns None for a hint whose decoded form might not behave the same.


def encode_hint(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return "Any"
    if hint is type(None):
        return "None"
    if origin in (typing.Union, types.UnionType):
        parts = [encode_hint(a) for a in args]
        return None if None in parts else {"union": parts}
    if hint in (bool, int, float, str):
        return hint.__name__
    if origin in (tuple, list, typing.Sequence) or hint in (tuple, list):
        kind = "tuple" if (origin or hint) is tuple else "list" if (origin or hint) is list else None
        if kind is None:
            return None
        items = [Ellipsis if a is Ellipsis else encode_hint(a) for a in args]
        if None in items:
            return None
        return {kind: [("..." if a is Ellipsis else a) for a in items]}
    if origin is typing.Callable or hint is typing.Callable or getattr(origin, "__name__", "") == "Callable":
        return "Callable"
    if origin is not None:
        return None  # another generic (dict[...], Literal[...]): its name alone may not say how it behaves
    name = getattr(hint, "__name__", None)
    return {"type": name} if isinstance(name, str) else None


def decode_hint(data: Any) -> Any:
    if data == "Any":
        return Any
    if data == "None":
        return type(None)
    if data in ("bool", "int", "float", "str"):
        return {"bool": bool, "int": int, "float": float, "str": str}[data]
    if data == "Callable":
        return typing.Callable
    if "union" in data:
        return typing.Union[tuple(decode_hint(a) for a in data["union"])]
    for kind, generic in (("tuple", tuple), ("list", list)):
        if kind in data:
            items = data[kind]
            if not items:
                return generic
            return generic[tuple(Ellipsis if a == "..." else decode_hint(a) for a in items)]
    return _stand_in(data["type"])


_STAND_INS: dict[str, type] = {}


def _stand_in(name: str) -> type:
    """A class named like a library type (torch.dtype, torch.Tensor) that validation only knows by name."""
    return _STAND_INS.setdefault(name, type(name, (), {"__module__": "experiments.param_types.library"}))


#: values the snapshot's self-check tries on a decoded hint: it must accept and describe them as the original
PROBES = (None, True, 0, 1, -1, 0.5, float("nan"), "x", "bfloat16", [], [1, 2], [0.5], ["a"], [1, "a"], [1, 2, 3],
          [[1, 2]], {"a": 1})


def same_behaviour(hint: Any, decoded: Any) -> bool:
    """Whether `decoded` describes itself and accepts every probe exactly as `hint` does."""
    return describe(hint) == describe(decoded) and all(_fits(v, hint) == _fits(v, decoded) for v in PROBES)
