"""`make_all`: every figure, table and video of a sweep plus its index page."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from paper_figures import contract as c
from paper_figures.figure import DEFAULT_FORMATS, Figure
from paper_figures.frame_curves import frame_curves
from paper_figures.grid_selection import PromptChoice
from paper_figures.grid_video import grid_videos
from paper_figures.grids import comparison_grids
from paper_figures.html_report import write_html_report
from paper_figures.index_page import write_index
from paper_figures.mag_ratios import mag_ratio_plot
from paper_figures.pareto_plot import pareto_plots
from paper_figures.skip_heatmap import skip_heatmap
from paper_figures.tables import threshold_table
from paper_figures.time_breakdown import time_breakdown


def make_all(
    points: pd.DataFrame,
    items: pd.DataFrame | None,
    calibrations: Sequence[dict[str, Any]] | None,
    out_dir: Path | str,
    formats: Sequence[str] = DEFAULT_FORMATS,
    grid_prompts: Sequence[PromptChoice] | None = None,
    frames: pd.DataFrame | None = None,
) -> list[Figure]:
    """Write all outputs to `out_dir`, `out_dir/index.md` and `out_dir/index.html`; returns the figures in index order.

    `frames` is the per-frame quality table (``frame_curves.frame_table``) for the quality-over-the-clip
    figure. Builders that have nothing to draw (no calibrations, no video items, an all-NaN metric, one-frame
    outputs, ...) are skipped rather than producing empty plots.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    formats = tuple(dict.fromkeys(f.lower().lstrip(".") for f in formats))
    items = items if items is not None else pd.DataFrame()

    figures: list[Figure | None] = [threshold_table(points, out)]
    figures += pareto_plots(points, out, formats)
    figures.append(time_breakdown(points, out, formats))
    figures.append(skip_heatmap(points, out, formats))
    if frames is not None and not frames.empty and frames["frame"].max() > 0:  # videos: where in the clip
        figures.append(frame_curves(frames, out, points, formats=formats))
    figures.append(mag_ratio_plot(calibrations or [], out, formats))
    if not items.empty:
        figures += comparison_grids(points, items, out, formats, grid_prompts)
        figures += grid_videos(points, items, out, grid_prompts)
    done = [f for f in figures if f is not None]
    write_index(done, out, title=c.sweep_title(points))
    write_html_report(points, items, done, out)  # provenance from points.attrs["provenance"] when given
    return done
