"""Speedup vs quality scatter per metric, with the Pareto front, CIs and the baseline."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from paper_figures import contract as c
from paper_figures.figure import DEFAULT_FORMATS, Figure, save_figure
from paper_figures.label_placement import LabelSpec, place_labels
from paper_figures.style import BASELINE_COLOR, COLUMN_WIDTH_IN, SMALL_PT, figure_style, method_styles, plain_text

FRONT_COLOR = "#8C8C8C"
PUBLISHED_COLOR = "#000000"


def pareto_plots(
    points: pd.DataFrame, out_dir: Path | str, formats: Sequence[str] = DEFAULT_FORMATS
) -> list[Figure]:
    """One Pareto plot per quality metric that has any finite value."""
    figures = [pareto_plot(points, m, out_dir, formats) for m in c.available_metrics(points)]
    return [f for f in figures if f is not None]


def pareto_plot(
    points: pd.DataFrame, metric: str, out_dir: Path | str, formats: Sequence[str] = DEFAULT_FORMATS
) -> Figure | None:
    """Speedup (x) vs `metric` (y); returns None when no cached point has a finite value."""
    cached = c.cached_points(points)
    y_all = c.numeric(cached, metric)
    identical = cached[np.isposinf(y_all)]  # e.g. PSNR = inf: output equals the baseline
    shown = cached[np.isfinite(y_all) & np.isfinite(c.numeric(cached, "speedup"))]
    if shown.empty:
        return None

    label = c.metric_label(points, metric)
    higher = c.HIGHER_IS_BETTER.get(metric, True)
    direction = "higher is better" if higher else "lower is better"
    styles = method_styles(shown["method"].astype(str))
    front_col = f"on_front_{metric}"
    base = c.baseline_row(points)
    base_y = float(c.numeric(pd.DataFrame([base]), metric).iloc[0]) if base is not None else np.nan
    if base is not None and np.isnan(base_y):  # the quality reference: drawn at its value by definition
        base_y = c.identity_value(metric)

    with figure_style():
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.6), layout="constrained")
        labels: list[LabelSpec] = []
        lines: list[np.ndarray] = []  # everything drawn as a line, kept clear of labels
        xs_all: list[float] = [1.0]
        ys_all: list[float] = []

        # Front first so it sits underneath the markers.
        front = _front_xy(points, metric, front_col)
        if len(front) >= 2:
            ax.step(front[:, 0], front[:, 1], where="pre", color=FRONT_COLOR, lw=2.4, alpha=0.45,
                    solid_capstyle="round", zorder=1)
        ax.axvline(1.0, color=BASELINE_COLOR, lw=0.5, ls=(0, (1, 2)), alpha=0.6, zorder=1)

        for method, group in shown.groupby("method", sort=True):
            st = styles[str(method)]
            x = c.numeric(group, "speedup").to_numpy()
            y = c.numeric(group, metric).to_numpy()
            on_front = c.flag(group, front_col).to_numpy()
            xerr = _err(group, "speedup", x)
            yerr = _err(group, metric, y)
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor=st.color, elinewidth=0.5, alpha=0.7,
                        zorder=2)
            # `shown` is sorted by key_value, so this line follows the threshold sweep.
            ax.plot(x, y, color=st.color, ls=st.linestyle, lw=0.8, zorder=3)
            # Filled = on the front, hollow = dominated: a cue that survives greyscale printing.
            ax.plot(x[on_front], y[on_front], ls="none", marker=st.marker, color=st.color, mew=0.8, zorder=4)
            ax.plot(x[~on_front], y[~on_front], ls="none", marker=st.marker, mfc="white", mec=st.color, mew=0.8,
                    zorder=4)
            chosen = (c.tune_role(group) == "chosen").to_numpy()  # `repro tune`'s choice: ringed
            ax.plot(x[chosen], y[chosen], ls="none", marker="o", ms=11, mfc="none", mec="black", mew=1.0, zorder=5)
            suspect = c.flag(group, "timing_suspect").to_numpy()
            for k, (xi, yi, lab, fr) in enumerate(zip(x, y, group["label"].map(c.text), on_front)):
                lab = f"{lab} ?" if suspect[k] else lab  # its speedup is flagged: see the caption
                labels.append(LabelSpec(float(xi), float(yi), plain_text(lab), st.color, must_show=bool(fr)))
                lines.append(np.array([[xi - xerr[0, k], yi], [xi + xerr[1, k], yi]]))
                lines.append(np.array([[xi, yi - yerr[0, k]], [xi, yi + yerr[1, k]]]))
            lines.append(np.column_stack([x, y]))
            xs_all += list(_finite(np.concatenate([x, x - xerr[0], x + xerr[1]])))
            ys_all += list(_finite(np.concatenate([y, y - yerr[0], y + yerr[1]])))

        published = _published(points, metric)
        for pub in published:  # published results: hollow diamonds, labelled with their citation
            ax.plot([pub["speedup"]], [pub[metric]], ls="none", marker="D", ms=5, mfc="none", mec=PUBLISHED_COLOR,
                    mew=1.0, zorder=5)
            labels.append(LabelSpec(pub["speedup"], pub[metric], plain_text(f"{pub['label']} ({pub['citation']})"),
                                    PUBLISHED_COLOR, must_show=True))
            xs_all.append(pub["speedup"])
            ys_all.append(pub[metric])

        if np.isfinite(base_y):
            ax.plot([1.0], [base_y], ls="none", marker="*", ms=8, color=BASELINE_COLOR, zorder=5)
            labels.append(LabelSpec(1.0, base_y, "baseline (ref)", BASELINE_COLOR, must_show=True))
            ys_all.append(base_y)

        _set_limits(ax, xs_all, ys_all)
        if base is not None and np.isposinf(base_y):
            # PSNR of the baseline against itself: no finite position, say so instead.
            ax.annotate("baseline: identical (∞)", xy=(1.0, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(2, -2), textcoords="offset points", ha="left", va="top", fontsize=SMALL_PT,
                        color=BASELINE_COLOR).set_in_layout(False)

        ax.set_xlabel("speedup (×, higher is better)")
        ax.set_ylabel(plain_text(f"{label}\n({direction})"))
        title = textwrap.fill(c.sweep_title(points), 60)
        if c.is_random_weights(points, metric):
            title += f"\n{c.RANDOM_WEIGHTS_TAG} {_short(label)}: not a real score"
        ax.set_title(plain_text(title), loc="left")
        handles = [
            Line2D([], [], color=st.color, marker=st.marker, ls=st.linestyle, lw=0.8, label=plain_text(m))
            for m, st in sorted(styles.items())
        ]
        if np.isfinite(base_y):
            handles.append(Line2D([], [], color=BASELINE_COLOR, marker="*", ms=7, ls="none", label="baseline"))
        if len(front) >= 2:
            handles.append(Line2D([], [], color=FRONT_COLOR, lw=2.4, alpha=0.45, label="Pareto front"))
        if published:
            handles.append(Line2D([], [], color=PUBLISHED_COLOR, marker="D", mfc="none", ls="none", label="published"))
        if (c.tune_role(shown) == "chosen").any():
            handles.append(Line2D([], [], color="black", marker="o", ms=9, mfc="none", ls="none",
                                  label="chosen by repro tune"))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)),
                   handlelength=2.2, columnspacing=1.0)

        if len(front) >= 2:
            lines.append(_step_path(front))
        placed = place_labels(ax, labels, lines=lines)
        fig_path = save_figure(fig, out_dir, f"pareto_{metric}", formats)

    dropped = [s.text for s, a in zip(labels, placed) if a is None]
    caption = f"Speedup vs {label} ({direction}) for {c.sweep_title(points)}. "
    caption += "Filled markers are on the Pareto front" + (" (grey step)" if len(front) >= 2 else "")
    caption += "; bars are 95% intervals" + ("; star = baseline, the reference (its value by definition, "
                                             "not measured)." if np.isfinite(base_y) else ".")
    if published:
        caption += (" Hollow diamonds are published results (" + "; ".join(sorted({p["citation"] for p in published}))
                    + "), measured on other hardware and possibly another protocol.")
    if dropped:
        caption += f" {len(dropped)} crowded label(s) omitted (see the table)."
    if not identical.empty:
        names = ", ".join(c.point_name(r) for _, r in identical.iterrows())
        caption += f" Identical to baseline (∞, not drawn): {names}."
    caption = _join(caption, c.tune_note(points), c.partial_note(points),
                    c.failure_note(points), c.timing_suspect_note(shown))
    if c.is_random_weights(points, metric):
        caption += f" {label}: computed with random-weight networks, not a real score."
    return Figure(path_stem=f"pareto_{metric}", files=fig_path, caption=caption, kind="figure")


def _published(points: pd.DataFrame, metric: str) -> list[dict]:
    """Published points (``points.attrs["published"]``, set by `repro compare --paper`) with this metric."""
    out = []
    for p in points.attrs.get("published") or []:
        x, y = p.get("speedup"), p.get(metric)
        if x is not None and y is not None and np.isfinite(x) and np.isfinite(y):
            out.append(p)
    return out


def _front_xy(points: pd.DataFrame, metric: str, front_col: str) -> np.ndarray:
    """(speedup, metric) of the flagged front points, baseline included, sorted by speedup."""
    frame = points[c.status_of(points) != "failed"]
    frame = frame[c.flag(frame, front_col)]
    xy = np.column_stack([c.numeric(frame, "speedup").to_numpy(), c.numeric(frame, metric).to_numpy()])
    xy = xy[np.all(np.isfinite(xy), axis=1)]
    return xy[np.lexsort((xy[:, 1], xy[:, 0]))] if len(xy) else xy.reshape(0, 2)


def _step_path(xy: np.ndarray) -> np.ndarray:
    """Vertices of `ax.step(..., where="pre")`: rise at x[i], then run to x[i+1]."""
    pts = [xy[0]]
    for (x0, _), (x1, y1) in zip(xy[:-1], xy[1:]):
        pts += [[x0, y1], [x1, y1]]
    return np.array(pts, dtype=float)


def _err(group: pd.DataFrame, column: str, v: np.ndarray) -> np.ndarray:
    """Asymmetric bar lengths from `<column>_ci_low/high`; a missing or inverted bound draws no bar there."""
    lo = c.numeric(group, f"{column}_ci_low").to_numpy()
    hi = c.numeric(group, f"{column}_ci_high").to_numpy()
    below = np.where(np.isfinite(lo), v - lo, 0.0)
    above = np.where(np.isfinite(hi), hi - v, 0.0)
    return np.vstack([np.clip(np.nan_to_num(below), 0, None), np.clip(np.nan_to_num(above), 0, None)])


def _finite(a: np.ndarray) -> np.ndarray:
    return a[np.isfinite(a)]


def _set_limits(ax: Axes, xs: list[float], ys: list[float]) -> None:
    # Generous fixed margins leave room for labels and keep limits independent of autoscale quirks.
    x0, x1 = min(xs), max(xs)
    xpad = max((x1 - x0) * 0.12, 0.05)
    ax.set_xlim(x0 - xpad, x1 + xpad)
    if ys:
        y0, y1 = min(ys), max(ys)
        span = y1 - y0
        ypad = span * 0.15 if span > 0 else max(abs(y1) * 0.1, 0.01)
        ax.set_ylim(y0 - ypad, y1 + ypad)
    ax.autoscale(False)


def _short(label: str) -> str:
    """"LPIPS (alex) [random weights]" -> "LPIPS": the name without qualifiers."""
    return label.split(" (")[0].split(" [")[0]


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)
