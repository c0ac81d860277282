"""Quality against frame index, per point: where in the clip a cache loses quality.

Input is a tidy table (one row per item, metric and frame), built from plain data by
:func:`frame_table` (the item rows and each generation's stored ``per_frame`` lists; this
module never reads the store). A metric whose ``per_frame`` is indexed by transition
(``metrics.registry`` ``per_frame_axis == "transition"``: value t is about frames t -> t+1)
is drawn half-way between the two frames, one indexed by odd frame at frame 2t+1. Each curve is a point's mean over its items; inf
(PSNR of identical frames) is drawn at ``metrics.PSNR_CAP_DB`` and the caption says so.
When the points table carries ``step_computed`` (the fraction of transformer calls computed
at each denoising step), a panel beside the curves shows that time-resolved skip pattern.

>>> import pandas as pd
>>> items = [{"key": "a", "point_id": "p", "label": "FBC 0.1"}]
>>> scores = {"a": {"mae_tdiff": {"per_frame": [0.0, 0.02]}}}
>>> frame_table(items, scores)[["point_id", "metric", "frame", "value"]].values.tolist()
[['p', 'mae_tdiff', 0.5, 0.0], ['p', 'mae_tdiff', 1.5, 0.02]]
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from metrics import registry
from metrics.psnr_db import PSNR_CAP_DB
from paper_figures import contract as c
from paper_figures.figure import DEFAULT_FORMATS, Figure, save_figure
from paper_figures.style import COLUMN_WIDTH_IN, LINESTYLES, OKABE_ITO, PAGE_WIDTH_IN, figure_style, plain_text

__all__ = ["COLUMNS", "frame_table", "frame_curves"]

COLUMNS = ("key", "point_id", "label", "metric", "frame", "value")


def frame_table(items: Sequence[Mapping[str, Any]] | pd.DataFrame,
                scores: Mapping[str, Mapping[str, Mapping[str, Any]]],
                metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """The tidy per-frame table: ``items`` rows (key, point_id, label) and ``scores[key][metric]["per_frame"]``.

    ``metrics`` defaults to every registered metric that has per-frame values in ``scores``; CLIP's
    per-frame values are stored under "clip". Baseline rows of reference metrics have no scores
    and so no rows (a baseline is the reference, not a point on these curves).
    """
    rows = items.to_dict("records") if isinstance(items, pd.DataFrame) else list(items)
    out: list[tuple] = []
    for it in rows:
        per_metric = scores.get(str(it.get("key")), {})
        for metric, entry in per_metric.items():
            base = metric.partition("@")[0]
            if base not in registry.METRICS or (metrics is not None and metric not in metrics):
                continue
            for t, v in enumerate(entry.get("per_frame") or []):
                value = math.nan if v is None else float(v)
                out.append((it.get("key"), it.get("point_id"), c.text(it.get("label")) or it.get("point_id"),
                            metric, registry.METRICS[base].frame_position(t), value))
    return pd.DataFrame(out, columns=list(COLUMNS))


def frame_curves(table: pd.DataFrame, out_dir: Path | str, points: pd.DataFrame | None = None,
                 metrics: Sequence[str] | None = None, formats: Sequence[str] = DEFAULT_FORMATS,
                 stem: str = "frame_curves") -> Figure | None:
    """One panel per metric (quality against frame index, a line per point), plus the skip pattern.

    ``points`` (optional) gives labels and metric labels (``attrs["metric_labels"]``, random-weight
    tags included) and ``step_computed`` for the skip-pattern panel. Returns None without data.
    """
    if table is None or table.empty:
        return None
    frame = table[[col for col in COLUMNS if col in table.columns]].copy()
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype(float)
    names = [m for m in (metrics or dict.fromkeys(frame["metric"])) if (frame["metric"] == m).any()]
    if not names:
        return None
    capped = [m for m in names if registry.capped(m) and np.isinf(frame.loc[frame["metric"] == m, "value"]).any()]
    frame.loc[np.isinf(frame["value"]), "value"] = PSNR_CAP_DB
    curves = (frame.groupby(["metric", "point_id", "frame"], sort=False)["value"].mean().reset_index())
    order = list(dict.fromkeys(frame["point_id"]))
    labels = dict(zip(frame["point_id"], frame["label"]))
    skips = _skip_patterns(points, order)
    labelled = points if points is not None else pd.DataFrame()
    panels = len(names) + (1 if skips else 0)
    width = COLUMN_WIDTH_IN if panels == 1 else PAGE_WIDTH_IN
    with figure_style():
        fig, axes = plt.subplots(1, panels, figsize=(width, 2.3), layout="constrained", squeeze=False)
        for ax, metric in zip(axes[0], names):
            for k, pid in enumerate(order):
                cur = curves[(curves["metric"] == metric) & (curves["point_id"] == pid)].sort_values("frame")
                if cur.empty:
                    continue
                ax.plot(cur["frame"], cur["value"], color=OKABE_ITO[k % len(OKABE_ITO)],
                        ls=LINESTYLES[(k // len(OKABE_ITO)) % len(LINESTYLES)], marker="o", ms=2.2, lw=1.0,
                        label=plain_text(labels.get(pid, pid)))
            ident = c.identity_value(metric.partition("@")[0])
            if math.isfinite(ident):
                ax.axhline(ident, color="black", lw=0.5, ls=(0, (1, 2)), alpha=0.7)
            axis = registry.METRICS[metric.partition("@")[0]].per_frame_axis
            ax.set_xlabel({"transition": "frame (transitions between frames)",
                           "odd_frame": "frame (odd frames, interpolated from their neighbours)"}.get(axis, "frame"))
            ax.set_ylabel(plain_text(c.metric_label(labelled, metric)))
            ax.set_title(plain_text(c.metric_label(labelled, metric)), loc="left")
        axes[0][0].legend(loc="best", fontsize="small")
        if skips:
            ax = axes[0][-1]
            for k, pid in enumerate(order):
                if pid in skips:
                    ax.step(np.arange(len(skips[pid])), skips[pid], where="mid", color=OKABE_ITO[k % len(OKABE_ITO)],
                            lw=1.0, label=plain_text(labels.get(pid, pid)))
            ax.set_ylim(-0.05, 1.05)
            ax.set_xlabel("denoising step")
            ax.set_ylabel("fraction computed")
            ax.set_title("skip pattern", loc="left")
        files = save_figure(fig, out_dir, stem, formats)
    caption = ("Quality against frame index, one line per point (mean over its items); transition metrics "
               "(frame t to t+1) are drawn between the frames.")
    if skips:
        caption += " Right: fraction of transformer calls computed at each denoising step (the skip pattern)."
    if capped:
        caption += f" Identical frames (inf dB) of {', '.join(capped)} are drawn at {PSNR_CAP_DB:g} dB."
    random = [m for m in names if c.is_random_weights(labelled, m)]
    if random:
        caption += f" {', '.join(random)}: RANDOM network weights, not comparable with published values."
    return Figure(path_stem=stem, files=files, caption=caption, kind="figure")


def _skip_patterns(points: pd.DataFrame | None, order: list[str]) -> dict[str, list[float]]:
    if points is None or "step_computed" not in points.columns or "point_id" not in points.columns:
        return {}
    out = {}
    for _, row in points.iterrows():
        pid = row["point_id"]
        raw = row["step_computed"]
        try:
            steps = json.loads(raw) if isinstance(raw, str) else list(raw or [])
        except (TypeError, ValueError):
            continue
        if pid in order and steps:
            out[pid] = [float(v) for v in steps]
    return out
