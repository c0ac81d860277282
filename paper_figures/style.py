"""Fixed plotting style: rcParams, per-method palette/markers, sizes.

Everything a figure's look depends on is pinned here so that the same data
renders to the same bytes on any machine with this matplotlib version.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # headless and deterministic; never pick an interactive backend

import matplotlib.pyplot as plt  # noqa: E402

# Single-column width of a two-column paper (ACL/CVPR/NeurIPS-ish), inches.
COLUMN_WIDTH_IN = 3.3
# Full text width for grids that need more room.
PAGE_WIDTH_IN = 6.9
DPI = 200
# Smallest text we draw (point labels, row labels, annotations): still legible in print at 100%.
SMALL_PT = 6.5

# Okabe-Ito: colour-blind safe and still distinct in greyscale when combined
# with markers and line styles.
OKABE_ITO = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow (last: weakest contrast on white)
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", ":", "-.")
BASELINE_COLOR = "#000000"

# Known methods keep the same look in every sweep so figures can be compared
# across papers/PRs; unknown ones take the leftover styles in name order.
_KNOWN_METHODS = (
    "first_block_cache",
    "mag_cache",
    "taylorseer_cache",
    "pyramid_attention_broadcast",
    "faster_cache",
)

RC_PARAMS: dict[str, object] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 7.5,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "lines.linewidth": 1.0,
    "lines.markersize": 4,
    "errorbar.capsize": 1.5,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "savefig.bbox": "standard",  # exact figure size: 3.3 in stays 3.3 in
    "savefig.pad_inches": 0.02,
    # Determinism: fixed SVG ids, text as paths (viewer-font independent),
    # TrueType in PDF (editable, accepted by publishers).
    "svg.hashsalt": "paper_figures",
    "svg.fonttype": "path",
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "image.interpolation": "antialiased",
    "path.simplify": True,
    "axes.unicode_minus": True,
}


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Apply the fixed rcParams for the duration of a figure (caller's state untouched)."""
    with plt.rc_context(rc=RC_PARAMS):
        yield


@dataclass(frozen=True)
class MethodStyle:
    color: str
    marker: str
    linestyle: object


def method_styles(methods: Iterable[str]) -> dict[str, MethodStyle]:
    """Colour, marker and line style per method; known methods are fixed, others fill in by name."""
    names = sorted({m for m in methods if m != "baseline"})
    styles: dict[str, MethodStyle] = {}
    used: set[int] = set()
    for name in names:
        if name in _KNOWN_METHODS:
            i = _KNOWN_METHODS.index(name)
            styles[name] = _style_at(i)
            used.add(i)
    free = (i for i in range(10_000) if i not in used)
    for name in names:
        if name not in styles:
            styles[name] = _style_at(next(free))
    return styles


def _style_at(i: int) -> MethodStyle:
    # Line styles cycle with a different period than colours/markers, so the
    # 8th+ method still differs from the first in at least one cue.
    return MethodStyle(
        color=OKABE_ITO[i % len(OKABE_ITO)],
        marker=MARKERS[i % len(MARKERS)],
        linestyle=LINESTYLES[i % len(LINESTYLES)],
    )


def plain_text(s: str) -> str:
    """Escape `$` so prompts/labels are never parsed as mathtext."""
    return s.replace("$", r"\$")
