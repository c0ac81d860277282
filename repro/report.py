"""Plain-text views of a run for the terminal: the points table, Pareto fronts, the best point."""

from __future__ import annotations

import math
from typing import Any, TextIO

def columns(points) -> list[tuple[str, str, int]]:
    """(column, title, width) of the points table: timing, then the run's quality columns (metrics.registry)."""
    from metrics.registry import QUALITY

    quality = [(m, m, max(7, len(m))) for m in QUALITY if m in points.columns]
    return [("label", "point", 30), ("method", "method", 18), ("speedup", "speedup", 8),
            ("compute_fraction", "compute", 8), *quality, ("latency_s", "latency_s", 9), ("status", "status", 7)]


def format_points(points, only_front: str | None = None) -> str:
    """The points table; only the metrics the run requested, and "ref" where the baseline is the reference."""
    from metrics.registry import METRICS, QUALITY

    rows = points.to_dict("records")
    if only_front:
        rows = [r for r in rows if r.get(f"on_front_{only_front}")]
    columns_ = columns(points)
    head = " ".join(f"{title:>{w}}" if i > 1 else f"{title:<{w}}" for i, (_, title, w) in enumerate(columns_))
    lines = [head]
    for r in rows:
        cells = []
        for i, (col, _, w) in enumerate(columns_):
            v = r.get(col)
            text = "ref" if col in METRICS and METRICS[col].reference and _is_reference(r) and _missing(v) \
                else _fmt(col, v)
            text += "?" if col == "speedup" and r.get("timing_suspect") in (True,) else ""
            cells.append(f"{text:>{w}}" if i > 1 else f"{text[:w]:<{w}}")
        lines.append(" ".join(cells))
    labels = points.attrs.get("metric_labels", {})
    random = [v for v in labels.values() if "random weights" in v]
    if random:
        lines.append("note: " + "; ".join(random) + " -- made with random-weight networks, not comparable to published scores")
    for r in rows:
        if r.get("timing_suspect") in (True,):
            lines.append(f"timing suspect (speedup marked ?): {r['method']} {r['label']}: {r['timing_suspect_reason']}")
    for col in [c for c, _, _ in columns_ if c in METRICS and all(_missing(r.get(c)) for r in rows)]:
        m = METRICS[col]
        needs = [f"{m.min_frames} frames" if m.min_frames > 1 else "", f"{m.min_side} px a side" if m.min_side > 1 else ""]
        # the table has no frame sizes: both causes are named
        why = f"outputs of fewer than {' or '.join(n for n in needs if n)}, or " if any(needs) else ""
        lines.append(f"{col}: no value on any point ({why}not scored yet: `repro score RUN_DIR`)")
    if any(c[0] in QUALITY for c in columns_):
        lines.append("ref: the uncached, unoptimized baseline each point is scored against (not a measurement)")
    if "psnr" in points.columns:
        lines.append("psnr: identical outputs are inf per item; means cap inf at 100 dB")
    return "\n".join(lines)


def print_points(points, stream: TextIO) -> None:
    print(format_points(points), file=stream)


def format_best(point: dict[str, Any], gates: list[tuple[str, str, float]]) -> str:
    """The chosen point with its own spec snippet and Python call (both recorded with the point, ratios included)."""
    from metrics.registry import QUALITY

    gate_text = ", ".join(f"{n} {'<=' if k == 'max' else '>='} {v:g}" for n, k, v in gates) or "no gates"
    shown = ", ".join(f"{m} {_fmt(m, point[m])}" for m in QUALITY if m in point)
    lines = [f"fastest point with {gate_text}: {point['method']} {point['label']}",
             f"  speedup {point['speedup']:.2f}x" + (f", {shown}" if shown else ""),
             "", "spec snippet (merge into your spec)", _indent(point.get("spec_snippet") or "", 2), "",
             "python (after building `pipe`)", _indent(point.get("python_call") or "", 2)]
    return "\n".join(lines)


def _is_reference(row: dict[str, Any]) -> bool:
    return not _missing(row.get("reference")) and bool(row.get("reference"))


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


def _fmt(col: str, v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if math.isinf(v):
            return "inf"
        if col in ("speedup",):
            return f"{v:.2f}x"
        if col in ("psnr",):
            return f"{v:.2f}"
        if col in ("latency_s",):
            return f"{v:.3f}"
        return f"{v:.3f}"
    return str(v)
