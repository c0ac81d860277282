"""Greedy, deterministic placement of point labels that avoids overlaps.

Each label tries a fixed list of offsets around its point (alternating
above/below first, so neighbours on a curve fan out) and takes the first one
that stays inside the axes and clears every marker and already placed label.
Crowded labels move further out with a thin leader line; a label that still
cannot be placed without covering text or markers (or crossing more than a
short piece of line) is dropped, unless it is must-show, in which case the
least overlapping spot is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backend_bases import RendererBase
from matplotlib.text import Annotation

from paper_figures.style import SMALL_PT

# (dx, dy) in points and the text alignment that keeps the text off the point.
_NEAR = 5.5
_RINGS = (11.0, 17.0)  # further out, drawn with a leader line
_LINE_PAD_PT = 1.3
_SOFT_MAX = 8  # line samples (2 px apart) a label may cover before it is dropped instead


def _candidates(d: float) -> list[tuple[float, float, str, str]]:
    return [
        (0.0, d, "center", "bottom"),  # above
        (0.0, -d, "center", "top"),  # below
        (d, 0.0, "left", "center"),  # right
        (-d, 0.0, "right", "center"),  # left
        (d * 0.8, d * 0.8, "left", "bottom"),
        (-d * 0.8, d * 0.8, "right", "bottom"),
        (d * 0.8, -d * 0.8, "left", "top"),
        (-d * 0.8, -d * 0.8, "right", "top"),
    ]


@dataclass(frozen=True)
class LabelSpec:
    x: float
    y: float
    text: str
    color: str = "black"
    must_show: bool = False


def place_labels(
    ax: Axes,
    labels: Sequence[LabelSpec],
    fontsize: float = SMALL_PT,
    marker_radius_pt: float = 3.0,
    lines: Sequence[np.ndarray] = (),
) -> list[Annotation | None]:
    """Annotate points in `labels` (data coords); returns the annotation or None (dropped) per label.

    Call after limits, legend and layout-affecting artists are final: placement
    uses display coordinates. `lines` are polylines (N x 2, data coords) that
    labels should not cross: curves, fronts, error bars.
    """
    fig = ax.figure
    fig.draw_without_rendering()  # settle constrained layout so transforms are final
    # Freeze the layout: positions computed below must still hold when the figure is saved.
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72.0
    frame = ax.get_window_extent(renderer)
    inside = np.array([frame.x0, frame.y0, frame.x1, frame.y1])

    pts = ax.transData.transform(np.array([[s.x, s.y] for s in labels], dtype=float).reshape(-1, 2))
    r = marker_radius_pt * px_per_pt + 1.0
    markers = [np.array([px - r, py - r, px + r, py + r]) for px, py in pts]
    placed: list[np.ndarray] = []
    samples = _sample_lines(ax, lines, step_px=2.0)

    # Must-show labels first so they get the best spots; otherwise keep input order.
    order = sorted(range(len(labels)), key=lambda i: (not labels[i].must_show, i))
    result: list[Annotation | None] = [None] * len(labels)
    for rank, i in enumerate(order):
        spec = labels[i]
        w, h = _text_size(ax, spec.text, fontsize, renderer)
        near = _candidates(_NEAR)
        if rank % 2:  # alternate above/below between consecutive labels
            near[0], near[1] = near[1], near[0]
        options = [(c, False) for c in near] + [(c, True) for d in _RINGS for c in _candidates(d)]
        pad = _LINE_PAD_PT * px_per_pt
        # Hard cost: covering text, markers or leaving the axes. Soft cost: crossing lines,
        # which a reader tolerates better than losing the label.
        best: tuple[float, float, tuple, bool, np.ndarray] | None = None
        for cand, far in options:
            box = _box(pts[i], cand, w, h, px_per_pt)
            if not np.all(np.isfinite(box)):
                continue
            hard = _outside(box, inside) * 10.0
            hard += sum(_overlap(box, o) for o in placed)
            hard += sum(_overlap(box, m) for j, m in enumerate(markers) if j != i)
            soft = 0.0
            if len(samples):
                # Padded so thick lines (the 2.4 pt front) count even when only their edge is hit.
                hit = (
                    (samples[:, 0] > box[0] - pad) & (samples[:, 0] < box[2] + pad)
                    & (samples[:, 1] > box[1] - pad) & (samples[:, 1] < box[3] + pad)
                )
                soft = float(np.count_nonzero(hit))
            if hard == 0.0 and soft == 0.0:
                best = (0.0, 0.0, cand, far, box)
                break
            if best is None or (hard, soft) < (best[0], best[1]):
                best = (hard, soft, cand, far, box)
        if best is None:
            continue
        if not spec.must_show and (best[0] > 0.0 or best[1] > _SOFT_MAX):
            continue
        _, _, (dx, dy, ha, va), far, box = best
        ann = ax.annotate(
            spec.text,
            xy=(spec.x, spec.y),
            xytext=(dx, dy),
            textcoords="offset points",
            ha=ha,
            va=va,
            fontsize=fontsize,
            color=spec.color,
            annotation_clip=False,
            arrowprops=dict(arrowstyle="-", lw=0.4, color=spec.color, shrinkA=0, shrinkB=2) if far else None,
            zorder=6,
        )
        ann.set_in_layout(False)  # labels must not move the axes after placement
        placed.append(box)
        result[i] = ann
    return result


def _sample_lines(ax: Axes, lines: Sequence[np.ndarray], step_px: float) -> np.ndarray:
    """Points every `step_px` along each polyline, in display coordinates."""
    out = []
    for line in lines:
        xy = ax.transData.transform(np.asarray(line, dtype=float).reshape(-1, 2))
        xy = xy[np.all(np.isfinite(xy), axis=1)]
        if len(xy) == 1:
            out.append(xy)
        for a, b in zip(xy[:-1], xy[1:]):
            n = max(2, int(np.hypot(*(b - a)) / step_px) + 1)
            out.append(a + np.linspace(0.0, 1.0, n)[:, None] * (b - a))
    return np.concatenate(out) if out else np.empty((0, 2))


def _text_size(ax: Axes, s: str, fontsize: float, renderer: RendererBase) -> tuple[float, float]:
    probe = ax.text(0, 0, s, fontsize=fontsize)
    bb = probe.get_window_extent(renderer)
    probe.remove()
    return bb.width, bb.height


def _box(p: np.ndarray, cand: tuple[float, float, str, str], w: float, h: float, px_per_pt: float) -> np.ndarray:
    dx, dy, ha, va = cand
    x = p[0] + dx * px_per_pt
    y = p[1] + dy * px_per_pt
    x0 = {"left": x, "center": x - w / 2, "right": x - w}[ha]
    y0 = {"bottom": y, "center": y - h / 2, "top": y - h}[va]
    return np.array([x0, y0, x0 + w, y0 + h])


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return float(w * h) if w > 0 and h > 0 else 0.0


def _outside(box: np.ndarray, frame: np.ndarray) -> float:
    """Area of `box` that falls outside `frame`."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    return float(area - _overlap(box, frame))
