"""Where the end-to-end time goes: stacked horizontal bar per point.

The segments partition one generation's end-to-end time: text encode, the transformer calls of the
denoise loop, the rest of the loop (scheduler steps, guidance, step callbacks, the gaps between
calls: all inside the loop, so never stacked next to it), VAE decode, and everything else. Each
comes from the same median run as the end-to-end time (``experiments.runner``), so they add up.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from paper_figures import contract as c
from paper_figures.figure import DEFAULT_FORMATS, Figure, save_figure
from paper_figures.style import COLUMN_WIDTH_IN, SMALL_PT, figure_style, plain_text

# (column, legend label, colour, hatch): hatches keep segments apart in greyscale.
SEGMENTS: tuple[tuple[str, str, str, str], ...] = (
    ("text_encode_s", "text encode", "#E69F00", "...."),
    ("transformer_s", "transformer (denoise loop)", "#0072B2", ""),
    ("loop_overhead_s", "rest of the denoise loop", "#CC79A7", "////"),
    ("vae_decode_s", "VAE decode", "#009E73", "xxxx"),
    ("other_s", "other", "#BBBBBB", ""),
)
_ROW_IN = 0.16


def time_breakdown(
    points: pd.DataFrame, out_dir: Path | str, formats: Sequence[str] = DEFAULT_FORMATS
) -> Figure | None:
    """Stacked bar per point (baseline on top); None when no timing column has data."""
    frame = c.sort_points(points)
    frame = frame[c.status_of(frame) != "failed"]
    parts = np.column_stack([c.numeric(frame, col).to_numpy() for col, *_ in SEGMENTS])
    parts = parts.reshape(len(frame), len(SEGMENTS))  # keeps the 2-D shape when there are no rows
    keep = np.isfinite(parts).any(axis=1)
    frame, parts = frame[keep], parts[keep]
    if frame.empty:
        return None
    # Missing parts count as 0 (a table from before a part was measured).
    parts = np.clip(np.nan_to_num(parts, nan=0.0), 0.0, None)
    names = [plain_text(c.point_name(r)) for _, r in frame.iterrows()]
    totals = c.numeric(frame, "latency_s").to_numpy()
    totals = np.where(np.isfinite(totals), totals, parts.sum(axis=1))

    with figure_style():
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 0.95 + _ROW_IN * len(frame)), layout="constrained")
        y = np.arange(len(frame))
        left = np.zeros(len(frame))
        for k, (_, label, color, hatch) in enumerate(SEGMENTS):
            ax.barh(y, parts[:, k], left=left, height=0.7, color=color, hatch=hatch, edgecolor="white",
                    linewidth=0.3, label=label)
            left += parts[:, k]
        end = np.maximum(left, totals)
        for yi, x, t in zip(y, end, totals):
            ax.text(x, yi, f" {t:.2f} s", va="center", ha="left", fontsize=SMALL_PT)
        ax.set_yticks(y, names, fontsize=SMALL_PT)
        ax.invert_yaxis()  # baseline at the top, reading order
        ax.set_xlim(0, float(end.max()) * 1.16 if end.max() > 0 else 1.0)
        ax.set_xlabel("time per generation (s)")
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="y", length=0)
        ax.set_title(c.sweep_title(points), loc="left")
        fig.legend(loc="outside lower center", ncols=3, handlelength=1.6, columnspacing=0.9)
        files = save_figure(fig, out_dir, "time_breakdown", formats)

    caption = (
        f"End-to-end time split per point for {c.sweep_title(points)}: text encode, transformer calls of the "
        "denoise loop, the rest of the loop (scheduler, guidance, callbacks), VAE decode, other; "
        "number = end-to-end latency (mean over items of the median run)."
    )
    caption = " ".join(p for p in (caption, c.failure_note(points)) if p)
    return Figure(path_stem="time_breakdown", files=files, caption=caption, kind="figure")
