"""MagCache calibration curves: magnitude ratio per step for each CFG branch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from paper_figures.figure import DEFAULT_FORMATS, Figure, save_figure
from paper_figures.style import COLUMN_WIDTH_IN, OKABE_ITO, figure_style, plain_text


def mag_ratio_plot(
    calibrations: Sequence[dict[str, Any]], out_dir: Path | str, formats: Sequence[str] = DEFAULT_FORMATS
) -> Figure | None:
    """Ratios per step per calibration; the branch actually used is solid, the other dashed."""
    cals = sorted((c for c in calibrations or [] if _branches(c) and _is_mag_cache(c)), key=lambda c: str(c.get("key", "")))
    if not cals:
        return None

    with figure_style():
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.3), layout="constrained")
        ax.axhline(1.0, color="black", lw=0.5, ls=(0, (1, 2)), alpha=0.7)
        for k, cal in enumerate(cals):
            color = OKABE_ITO[k % len(OKABE_ITO)]
            used = str(cal.get("used") or "cond").split(",")  # the branches the sweep's entries ran with
            name = _name(cal, len(cals))
            for branch, ratios in _branches(cal).items():
                is_used = branch in used
                ax.plot(
                    np.arange(len(ratios)), ratios, color=color, ls="-" if is_used else "--",
                    lw=1.1 if is_used else 0.8, marker="o" if is_used else "x", ms=2.2,
                    label=plain_text(f"{name}{branch}" + (" (used)" if is_used else "")),
                )
        ax.set_xlabel("denoising step")
        ax.set_ylabel("magnitude ratio")
        ax.set_title("MagCache calibration", loc="left")
        ax.legend(loc="best", handlelength=2.5)
        files = save_figure(fig, out_dir, "mag_ratios", formats)

    used = ", ".join(f"{_name(c, 2)}{c.get('used') or 'cond'}" for c in cals)
    caption = (
        "MagCache calibrated magnitude ratios per denoising step (solid: branch used, dashed: other CFG branch); "
        f"used: {used}."
    )
    models = sorted({str(c.get("model")) for c in cals if c.get("model")})
    if models:
        caption += " Model: " + ", ".join(models) + "."
    return Figure(path_stem="mag_ratios", files=files, caption=caption, kind="figure")


def _branches(cal: dict[str, Any]) -> dict[str, list[float]]:
    ratios = cal.get("ratios") or {}
    out = {}
    for branch in sorted(ratios, key=lambda b: (b != "cond", b)):  # cond first, then others by name
        vals = [float(v) for v in ratios[branch] or []]
        if vals:
            out[str(branch)] = vals
    return out


def _name(cal: dict[str, Any], n_cals: int) -> str:
    """Prefix a branch with its calibration key only when several are drawn."""
    return f"{cal.get('key', '?')}: " if n_cals > 1 else ""


def _is_mag_cache(cal: dict[str, Any]) -> bool:
    """Calibrations of other methods (TeaCache coefficients) share the store table; rows without a method are MagCache's."""
    return (cal.get("meta") or {}).get("method", "mag_cache") == "mag_cache"
