"""Pareto fronts of speed vs quality, and quality gates.

A point is on the front of (speedup, metric) when no other point is at least as fast and
at least as good with one of the two strictly better. Equal points are all kept: ties do
not dominate each other.

Example::

    >>> pareto_mask([1.0, 2.0, 1.5], [0.1, 0.3, 0.3], better="min")
    [True, True, False]
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from metrics.registry import METRICS, better

#: Columns other than the quality metrics that `repro best` can gate on.
GATE_COLUMNS = ("speedup", "compute_fraction", "peak_memory_mb", "latency_s")


def pareto_mask(speedups: Sequence[float], quality: Sequence[float], better: str) -> list[bool]:
    """True where the point is not dominated; NaN points are never on the front."""
    sign = -1.0 if better == "min" else 1.0
    pts = [(s, sign * q) for s, q in zip(speedups, quality)]
    valid = [not (_nan(s) or _nan(q)) for s, q in pts]
    mask = []
    for i, (s, q) in enumerate(pts):
        if not valid[i]:
            mask.append(False)
            continue
        dominated = any(
            valid[j] and s2 >= s and q2 >= q and (s2 > s or q2 > q)
            for j, (s2, q2) in enumerate(pts) if j != i
        )
        mask.append(not dominated)
    return mask


def parse_gates(maxima: Sequence[str], minima: Sequence[str]) -> list[tuple[str, str, float]]:
    """`--max lpips=0.1 --min psnr=30` -> [("lpips", "max", 0.1), ("psnr", "min", 30.0)]."""
    from experiments.errors import SpecError

    gates = []
    for kind, items in (("max", maxima), ("min", minima)):
        for item in items:
            name, _, value = item.partition("=")
            if name not in METRICS and name not in GATE_COLUMNS:
                raise SpecError(f"--{kind} {item!r}: unknown metric {name!r}; allowed: {', '.join([*METRICS, *GATE_COLUMNS])}")
            try:
                number = float(value)
            except ValueError:
                raise SpecError(f"--{kind} {item[:80]!r}: expected METRIC=NUMBER, e.g. lpips=0.1") from None
            if not math.isfinite(number):
                raise SpecError(f"--{kind} {item[:80]!r}: the bound must be a finite number (a NaN or infinite "
                                f"bound would disable the gate), e.g. {name}=0.1")
            gates.append((name, kind, number))
    return gates


def check_gates_scored(points: Any, gates: list[tuple[str, str, float]], labels: dict[str, str]) -> None:
    """Refuse a gate on a metric this run never scored: "no point meets it" would be the wrong answer."""
    from experiments.errors import SpecError

    cached = points[points["method"] != "baseline"] if "method" in points else points
    for name, kind, _ in gates:
        if name not in cached or not cached[name].notna().any():
            scored = [m for m in METRICS if m in cached and cached[m].notna().any()]
            raise SpecError(f"--{kind} {name}: {labels.get(name) or (METRICS[name].label if name in METRICS else name)} was not scored in this run (scored: "
                            f"{', '.join(scored) or 'none'}); add it with `repro score RUN_DIR --set "
                            f"'metrics.names=[...]'` or gate on a scored metric")


def best_point(points: list[dict[str, Any]], gates: list[tuple[str, str, float]]) -> dict[str, Any] | None:
    """The fastest ok point meeting every gate (ties: the better first gated metric, then the label)."""
    ranked = ranked_points(points, gates)
    return ranked[0] if ranked else None


def gate_value(point: dict[str, Any], gate: tuple[str, str, float], confident: bool = False) -> Any:
    """The value a gate is checked on: the point's mean, or with `confident` the end of its 95% interval
    on the gate's side (``<metric>_ci_high`` for --max, ``_ci_low`` for --min; a column without an
    interval, e.g. the deterministic compute fraction, is its value)."""
    name, kind, _ = gate
    if confident:
        bound = point.get(f"{name}_ci_{'high' if kind == 'max' else 'low'}")
        if bound is not None or f"{name}_ci_low" in point:
            return bound
    return point.get(name)


def meets_gates(point: dict[str, Any], gates: list[tuple[str, str, float]], confident: bool = False) -> bool:
    """Whether every gate holds: on the mean, or with `confident` on the 95% bootstrap bound over items
    (the gate holds with 95% confidence, not only on average). A missing value meets no gate.

    >>> p = {"lpips": 0.08, "lpips_ci_low": 0.05, "lpips_ci_high": 0.12}
    >>> meets_gates(p, [("lpips", "max", 0.1)]), meets_gates(p, [("lpips", "max", 0.1)], confident=True)
    (True, False)
    """
    for gate in gates:
        v = gate_value(point, gate, confident)
        _, kind, limit = gate
        if v is None or _nan(v) or (kind == "max" and v > limit) or (kind == "min" and v < limit):
            return False
    return True


def ranked_points(points: list[dict[str, Any]], gates: list[tuple[str, str, float]],
                  confident: bool = False) -> list[dict[str, Any]]:
    """Every ok cached point meeting every gate (see :func:`meets_gates`), fastest first (the order
    `best_point` picks from)."""
    ok = [p for p in points if p.get("status") == "ok" and p.get("method") != "baseline"
          and meets_gates(p, gates, confident)]
    first = gates[0][0] if gates else None

    def rank(p):
        q = p.get(first, 0.0) if first else 0.0
        q = -q if first in METRICS and better(first) == "max" else q
        return (-p["speedup"], q, p["label"])

    return sorted(ok, key=rank)


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
