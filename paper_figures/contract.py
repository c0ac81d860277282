"""The input-table contract: metric names/labels, direction, and row selection.

`points` may come straight from the store or from an exported CSV (which
loses `DataFrame.attrs` and may turn booleans into strings), so every reader
goes through these helpers instead of indexing columns ad hoc.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from metrics import registry
from metrics.registry import RANDOM_WEIGHTS_TAG

#: The quality axes figures and tables show (each compares a point with its baseline).
METRICS: tuple[str, ...] = registry.FRONT
# every quality column a run may have (metrics.registry order); a run has those it requested
QUALITY: tuple[str, ...] = registry.QUALITY
# True when larger is better.
HIGHER_IS_BETTER: dict[str, bool] = {n: m.higher_is_better for n, m in registry.METRICS.items()}
DEFAULT_METRIC_LABELS: dict[str, str] = registry.default_labels()
BASELINE = "baseline"


def identity_value(metric: str) -> float:
    """What the reference scores against itself, by definition (NaN when the metric has none)."""
    m = registry.METRICS.get(metric)
    return float(m.identity) if m is not None and m.identity is not None else math.nan


def metric_label(points: pd.DataFrame, metric: str) -> str:
    """Display label of a metric (from `points.attrs["metric_labels"]`, else a default)."""
    labels = points.attrs.get("metric_labels") or {}
    return str(labels.get(metric) or DEFAULT_METRIC_LABELS.get(metric, metric))


def is_random_weights(points: pd.DataFrame, metric: str) -> bool:
    """Whether the metric was computed with random-weight networks (must be flagged visibly)."""
    return RANDOM_WEIGHTS_TAG in metric_label(points, metric)


def sweep_title(points: pd.DataFrame) -> str:
    return str(points.attrs.get("title") or "sweep")


def numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats; absent columns and unparsable cells become NaN."""
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def flag(frame: pd.DataFrame, column: str) -> pd.Series:
    """A boolean column; CSV round trips give "True"/"False" strings or NaN."""
    if column not in frame.columns:
        return pd.Series(False, index=frame.index, dtype=bool)
    col = frame[column]
    if col.dtype == bool:
        return col
    return col.map(lambda v: str(v).strip().lower() in ("true", "1", "1.0", "yes")).astype(bool)


def text(value: Any) -> str:
    """A cell as text; None/NaN become ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def tune_role(frame: pd.DataFrame) -> pd.Series:
    """`repro tune`'s mark per row: "chosen", "explored" or "" (no tune column: "")."""
    if "tune" not in frame.columns:
        return pd.Series("", index=frame.index, dtype=object)
    return frame["tune"].map(text)


def tune_note(points: pd.DataFrame) -> str:
    """Caption sentence for a run `repro tune` searched: what the ring means, under which gates."""
    roles = tune_role(points)
    if not (roles == "chosen").any():
        return ""
    methods = ((points.attrs.get("tune") or {}).get("methods") or {}).values()
    gates = {", ".join(f"{n} {'<=' if k == 'max' else '>='} {v:g}" for n, k, v in m.get("gates") or [])
             for m in methods} - {""}
    return ("Ringed: the setting `repro tune` chose per method" + (f" ({'; '.join(sorted(gates))}, holding for "
            f"the 95% bound over items)" if gates else "") + "; the other points are settings its search "
            "explored, some on a subset of the items (n in the table).")


def sort_points(points: pd.DataFrame) -> pd.DataFrame:
    """Baseline first, then methods by name, each by key_value (NaN last) then label: stable everywhere."""
    frame = points.copy()
    keys = {
        "_not_base": frame["method"].astype(str) != BASELINE,  # False sorts first
        "_method": frame["method"].map(text),
        "_key_nan": numeric(frame, "key_value").isna(),
        "_key": numeric(frame, "key_value").fillna(0.0),
        "_label": frame["label"].map(text) if "label" in frame.columns else "",
        "_pid": frame["point_id"].map(text) if "point_id" in frame.columns else "",
    }
    for name, values in keys.items():
        frame[name] = values
    frame = frame.sort_values(list(keys), kind="mergesort")
    return frame.drop(columns=list(keys))


def status_of(frame: pd.DataFrame) -> pd.Series:
    if "status" not in frame.columns:
        return pd.Series("ok", index=frame.index)
    return frame["status"].map(lambda s: text(s) or "ok")


def baseline_row(points: pd.DataFrame) -> pd.Series | None:
    rows = points[points["method"].astype(str) == BASELINE]
    return None if rows.empty else rows.iloc[0]


def cached_points(points: pd.DataFrame, include_failed: bool = False) -> pd.DataFrame:
    """Non-baseline rows in display order; failed ones only on request."""
    frame = sort_points(points[points["method"].astype(str) != BASELINE])
    if not include_failed:
        frame = frame[status_of(frame) != "failed"]
    return frame


def failed_points(points: pd.DataFrame) -> pd.DataFrame:
    frame = sort_points(points)
    return frame[status_of(frame) == "failed"]


def point_name(row: pd.Series) -> str:
    """"method label", the name used on axes and in captions."""
    method = text(row.get("method"))
    label = text(row.get("label"))
    return method if method == BASELINE or not label else f"{method} {label}"


def failure_note(points: pd.DataFrame, max_error_chars: int = 80, prefix: str = "Failed (not shown)") -> str:
    """Caption sentence listing failed points and their errors (empty if none)."""
    failed = failed_points(points)
    if failed.empty:
        return ""
    parts = []
    for _, row in failed.iterrows():
        err = short_error(row.get("error"), max_error_chars)
        parts.append(f"{point_name(row)} ({err})" if err else point_name(row))
    return f"{prefix}: " + "; ".join(parts) + "."


def partial_note(points: pd.DataFrame) -> str:
    frame = sort_points(points)
    partial = frame[status_of(frame) == "partial"]
    if partial.empty:
        return ""
    names = [f"{point_name(r)} (n={_int_text(r.get('n_items'))})" for _, r in partial.iterrows()]
    return "Partial (some items failed; averaged over the rest): " + "; ".join(names) + "."


def timing_suspect_note(points: pd.DataFrame) -> str:
    """Caption sentence naming the points whose speedup is flagged ``timing_suspect``, with the reasons."""
    flagged = points[flag(points, "timing_suspect")]
    if flagged.empty:
        return ""
    parts = [f"{point_name(r)} ({text(r.get('timing_suspect_reason')) or 'flagged'})" for _, r in flagged.iterrows()]
    return "Timing suspect (speedup not to be trusted as measured; marked ?): " + "; ".join(parts) + "."


def _int_text(value: Any) -> str:
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return "?"


def short_error(error: Any, max_chars: int = 80) -> str:
    """First line of an error message, cut to `max_chars` (tracebacks do not fit a caption)."""
    msg = text(error).strip()
    if not msg:
        return ""
    first = msg.splitlines()[-1].strip() if msg.startswith("Traceback") else msg.splitlines()[0].strip()
    return first if len(first) <= max_chars else first[: max_chars - 1] + "…"


def parse_float_list(value: Any) -> list[float]:
    """A JSON list of floats (e.g. `step_computed`); anything unparsable gives []."""
    if isinstance(value, (list, tuple, np.ndarray)):
        raw = list(value)
    else:
        s = text(value).strip()
        if not s:
            return []
        try:
            raw = json.loads(s)
        except json.JSONDecodeError:
            return []
    if not isinstance(raw, list):
        return []
    out: list[float] = []
    for v in raw:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return out


def parse_branch_lists(value: Any) -> dict[str, list[float]]:
    """A JSON mapping of CFG branch -> list of floats (e.g. `computed_by_branch`); anything unparsable gives {}."""
    if isinstance(value, dict):
        raw = value
    else:
        s = text(value).strip()
        try:
            raw = json.loads(s) if s else {}
        except json.JSONDecodeError:
            return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): parse_float_list(v) for k, v in raw.items() if parse_float_list(v)}


def available_metrics(points: pd.DataFrame) -> list[str]:
    """Quality metrics with at least one finite value among the cached (non-baseline) points."""
    cached = cached_points(points)
    return [m for m in METRICS if np.isfinite(numeric(cached, m)).any()]
