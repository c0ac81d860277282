"""Heat map of which denoising steps each point computed vs served from cache, per CFG branch.

A point whose cache recorded its decisions (``computed_by_branch``: per branch, the fraction of
items whose cache computed each step) gets one row per CFG branch, so a published skip pattern
(e.g. EasyCache's uncond branch following the cond call) can be checked; other points one row
from the compute counters (``step_computed``: the fraction of blocks computed in each step).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from paper_figures import contract as c
from paper_figures.figure import DEFAULT_FORMATS, Figure, save_figure
from paper_figures.style import COLUMN_WIDTH_IN, SMALL_PT, figure_style, plain_text

# Perceptually uniform with monotone lightness: reads correctly in greyscale too.
CMAP = "cividis"
_ROW_IN = 0.14


def skip_heatmap(
    points: pd.DataFrame, out_dir: Path | str, formats: Sequence[str] = DEFAULT_FORMATS
) -> Figure | None:
    """Step (x) vs point and CFG branch (y), colour = fraction computed; None without step data."""
    cached = c.cached_points(points)
    rows = []
    for _, r in cached.iterrows():
        branches = c.parse_branch_lists(r.get("computed_by_branch"))
        if len(branches) > 1:
            rows += [(f"{c.point_name(r)} · {b}", c.text(r.get("method")), v) for b, v in branches.items()]
        else:  # one branch: the compute counters say the same per step, with partial-skip caches too
            rows.append((c.point_name(r), c.text(r.get("method")), c.parse_float_list(r.get("step_computed"))))
    rows = [r for r in rows if r[2]]
    if not rows:
        return None
    n_steps = max(len(r[2]) for r in rows)
    grid = np.full((len(rows), n_steps), np.nan)
    for i, (_, _, vals) in enumerate(rows):
        grid[i, : len(vals)] = vals

    with figure_style():
        height = 0.95 + _ROW_IN * len(rows)
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, height), layout="constrained")
        cmap = plt.get_cmap(CMAP).with_extremes(bad="white")
        im = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0,
                       interpolation="nearest", extent=(-0.5, n_steps - 0.5, len(rows) - 0.5, -0.5))
        ax.grid(False)
        ax.set_yticks(range(len(rows)), [plain_text(r[0]) for r in rows], fontsize=SMALL_PT)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
        ax.set_xlabel("denoising step")
        ax.tick_params(axis="y", length=0)
        # White rules between methods make groups visible without colour.
        for i in range(1, len(rows)):
            if rows[i][1] != rows[i - 1][1]:
                ax.axhline(i - 0.5, color="white", lw=1.2)
        # Mean per row on the right: the number a reader would otherwise estimate by eye.
        means = np.nanmean(grid, axis=1)
        right = ax.secondary_yaxis("right")
        right.set_yticks(range(len(rows)), [f"{m:.0%}" for m in means], fontsize=SMALL_PT)
        right.tick_params(length=0)
        right.set_ylabel("mean", fontsize=SMALL_PT, rotation=0, labelpad=4, va="bottom")
        right.yaxis.set_label_coords(1.0, 1.0)
        for side in ("top", "right", "left", "bottom"):
            ax.spines[side].set_visible(False)
        right.spines["right"].set_visible(False)
        cb = fig.colorbar(im, ax=ax, orientation="horizontal", location="bottom", shrink=0.7, aspect=30, pad=0.02)
        cb.set_label("blocks computed (per-branch rows: share of items)")
        cb.set_ticks([0.0, 0.5, 1.0], labels=["0 (from cache)", "0.5", "1 (computed)"])
        cb.ax.tick_params(labelsize=SMALL_PT)
        ax.set_title(c.sweep_title(points), loc="left")
        files = save_figure(fig, out_dir, "skip_heatmap", formats)

    caption = (
        "Fraction of transformer blocks computed at each denoising step "
        f"(1 = computed, 0 = served from cache) for {c.sweep_title(points)}; a point that runs CFG as two calls "
        "has one row per branch (· cond, · uncond: the fraction of items whose cache computed that step, from its "
        "recorded decisions); right: mean over steps."
    )
    caption = " ".join(p for p in (caption, c.failure_note(points)) if p)
    return Figure(path_stem="skip_heatmap", files=files, caption=caption, kind="figure")
