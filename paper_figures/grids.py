"""Side-by-side comparison grids of baseline and cached outputs for chosen prompts.

Images: one row per method, each starting with the baseline, then the
method's points at increasing key_value. Videos: one row per output (baseline
first), columns are evenly spaced frames. Layout is computed in inches so a
grid never depends on auto-layout heuristics.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from paper_figures import contract as c
from paper_figures.figure import DEFAULT_FORMATS, Figure, save_figure
from paper_figures.frames import Frame, evenly_spaced, image_size, load_rgb
from paper_figures.grid_selection import GridEntry, PromptChoice, entry_stats, grid_entries, prompt_text, select_prompts
from paper_figures.style import COLUMN_WIDTH_IN, DPI, PAGE_WIDTH_IN, figure_style, plain_text

MAX_HEIGHT_IN = 9.0  # a grid must fit on a page; tiles shrink when there are many rows
_GAP = 0.04  # inches between tiles
_TEXT = 6.0  # pt, tile captions: grids span the page, tiles are ~1 in wide
_LINE = _TEXT * 1.3 / 72  # inches per caption line
_HEAD_GUESS = 0.35  # header height assumed while sizing tiles (before the width is known)


def comparison_grids(
    points: pd.DataFrame,
    items: pd.DataFrame,
    out_dir: Path | str,
    formats: Sequence[str] = DEFAULT_FORMATS,
    grid_prompts: Sequence[PromptChoice] | None = None,
    n_frames: int = 4,
) -> list[Figure]:
    """One grid per chosen (prompt, seed); default the first prompt and its first seed."""
    figures = [
        comparison_grid(points, items, out_dir, p, s, formats, n_frames) for p, s in select_prompts(items, grid_prompts)
    ]
    return [f for f in figures if f is not None]


def comparison_grid(
    points: pd.DataFrame,
    items: pd.DataFrame,
    out_dir: Path | str,
    prompt_index: int,
    seed: int,
    formats: Sequence[str] = DEFAULT_FORMATS,
    n_frames: int = 4,
) -> Figure | None:
    """Grid for one prompt/seed; None if no output of it exists on disk."""
    entries = grid_entries(points, items, prompt_index, seed)
    frames = {i: e.frames for i, e in enumerate(entries)}
    if not any(frames.values()):
        return None
    w, h = image_size(next(f for f in frames.values() if f)[0])
    aspect = h / w
    is_video = any(e.kind == "video" for e in entries) or any(len(f) > 1 for f in frames.values())

    lpips_random = c.is_random_weights(points, "lpips")
    lpips_name = "LPIPS*" if lpips_random else "LPIPS"
    stem = f"grid_p{prompt_index}_s{seed}"
    title = f"{c.sweep_title(points)} · prompt {prompt_index}, seed {seed}"
    prompt = prompt_text(entries)
    footer = f"* {c.metric_label(points, 'lpips')}: random-weight network, not a real score" if lpips_random else ""

    with figure_style():
        if is_video:
            fig = _video_grid(entries, frames, aspect, n_frames, lpips_name, title, prompt, footer)
        else:
            fig = _image_grid(entries, frames, aspect, lpips_name, title, prompt, footer)
        files = save_figure(fig, out_dir, stem, formats)

    kind = "video frames" if is_video else "images"
    caption = (
        f"Baseline vs cached outputs ({kind}) for prompt {prompt_index}, seed {seed}"
        + (f" (“{prompt}”)" if prompt else "")
        + f"; each output labelled with its setting, speedup and {lpips_name}."
    )
    missing = [_name(e) for i, e in enumerate(entries) if not frames[i]]
    if missing:
        caption += " Missing outputs: " + ", ".join(missing) + "."
    caption = " ".join(p for p in (caption, c.failure_note(points)) if p)
    if lpips_random:
        caption += f" {c.metric_label(points, 'lpips')}: random-weight network, not a real score."
    return Figure(path_stem=stem, files=files, caption=caption, kind="figure")


def _name(e: GridEntry) -> str:
    return "baseline" if e.is_baseline else f"{e.method} {e.label}".strip()


_Frames = dict[int, list[Frame]]


def _image_grid(entries: list[GridEntry], frames: _Frames, aspect: float, lpips_name: str, title: str, prompt: str,
                footer: str) -> plt.Figure:
    base = (0, entries[0])
    by_method: dict[str, list[tuple[int, GridEntry]]] = {}
    for i, e in enumerate(entries[1:], start=1):
        by_method.setdefault(e.method, []).append((i, e))
    rows = [(m, [base] + es) for m, es in by_method.items()] or [("", [base])]
    ncols = max(len(r) for _, r in rows)

    left, right = 0.16, 0.02
    cap_h = 2 * _LINE + 0.04
    foot_h = 0.14 if footer else 0.0
    tile_w = min(1.5, (PAGE_WIDTH_IN - left - right - _GAP * (ncols - 1)) / ncols)
    tile_w = min(tile_w, ((MAX_HEIGHT_IN - _HEAD_GUESS - foot_h) / len(rows) - cap_h) / aspect)
    tile_h = tile_w * aspect
    row_h = tile_h + cap_h
    width = max(COLUMN_WIDTH_IN, left + ncols * tile_w + (ncols - 1) * _GAP + right)
    header = _header_lines(title, prompt, width)
    head_h = sum(h for _, h, _ in header) + 0.06
    height = head_h + len(rows) * row_h + foot_h
    fig = plt.figure(figsize=(width, height))
    _draw_header(fig, width, height, header)

    for r, (method, row) in enumerate(rows):
        top = height - head_h - r * row_h
        for col, (i, e) in enumerate(row):
            x0 = left + col * (tile_w + _GAP)
            ax = fig.add_axes(_rect(x0, top - tile_h, tile_w, tile_h, width, height))
            _tile(ax, frames[i][0] if frames[i] else None)
            name = "baseline" if e.is_baseline else e.label
            stats = entry_stats(e, lpips_name)
            fig.text((x0 + tile_w / 2) / width, (top - tile_h - 0.02) / height, plain_text(f"{name}\n{stats}"),
                     ha="center", va="top", fontsize=_TEXT, linespacing=1.15)
        if method:
            fig.text(0.06 / width, (top - tile_h / 2) / height, plain_text(method), rotation=90,
                     ha="center", va="center", fontsize=_TEXT + 0.5)
    _footer(fig, width, height, footer)
    return fig


def _video_grid(entries: list[GridEntry], frames: _Frames, aspect: float, n_frames: int, lpips_name: str, title: str,
                prompt: str, footer: str) -> plt.Figure:
    base_count = len(frames[0]) or max(len(f) for f in frames.values())
    header_idx = evenly_spaced(base_count, n_frames)
    ncols = max(1, len(header_idx))

    left, right = 1.35, 0.02
    foot_h = 0.14 if footer else 0.0
    tile_w = min(1.4, (PAGE_WIDTH_IN - left - right - _GAP * (ncols - 1)) / ncols)
    tile_w = min(tile_w, ((MAX_HEIGHT_IN - _HEAD_GUESS - 0.12 - foot_h) / len(entries) - _GAP) / aspect)
    tile_h = tile_w * aspect
    row_h = tile_h + _GAP
    width = max(COLUMN_WIDTH_IN, left + ncols * tile_w + (ncols - 1) * _GAP + right)
    header = _header_lines(title, prompt, width)
    head_h = sum(h for _, h, _ in header) + 0.18  # + the "frame k" row
    height = head_h + len(entries) * row_h + foot_h
    fig = plt.figure(figsize=(width, height))
    _draw_header(fig, width, height, header)
    for col, k in enumerate(header_idx):
        fig.text((left + col * (tile_w + _GAP) + tile_w / 2) / width, (height - head_h + 0.03) / height,
                 f"frame {k}", ha="center", va="bottom", fontsize=_TEXT)

    for r, e in enumerate(entries):
        top = height - head_h - r * row_h
        # Each output picks its own evenly spaced frames (lengths may differ slightly).
        picks = evenly_spaced(len(frames[r]), ncols)
        for col in range(ncols):
            x0 = left + col * (tile_w + _GAP)
            ax = fig.add_axes(_rect(x0, top - tile_h, tile_w, tile_h, width, height))
            _tile(ax, frames[r][picks[col]] if col < len(picks) else None)
        name = "baseline" if e.is_baseline else f"{e.method}\n{e.label}"
        stats = entry_stats(e, lpips_name)
        fig.text((left - 0.05) / width, (top - tile_h / 2) / height, plain_text(f"{name}\n{stats}"),
                 ha="right", va="center", fontsize=_TEXT, linespacing=1.15)
    _footer(fig, width, height, footer)
    return fig


def _rect(x0: float, y0: float, w: float, h: float, width: float, height: float) -> list[float]:
    return [x0 / width, y0 / height, w / width, h / height]


def _tile(ax: plt.Axes, frame: Frame | None) -> None:
    ax.set_axis_off()
    bbox = ax.get_position()
    fig_w, fig_h = ax.figure.get_size_inches()
    if frame is None:
        # Keep the grid rectangular; say why the cell is empty.
        ax.add_patch(plt.Rectangle((0, 0), 1, 1, transform=ax.transAxes, color="#E6E6E6"))
        ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=_TEXT, color="#555555", transform=ax.transAxes)
        return
    # Resample once with Lanczos to the tile's pixel size at the output dpi, then draw 1:1:
    # sharp in the PNG, and PDF/SVG embed exactly that resolution instead of the full frame.
    size = (max(1, round(bbox.width * fig_w * DPI)), max(1, round(bbox.height * fig_h * DPI)))
    ax.imshow(load_rgb(frame, size=size), interpolation="none", aspect="auto")


def _header_lines(title: str, prompt: str, width: float) -> list[tuple[str, float, dict]]:
    """Title and prompt wrapped to the figure width: (text, height in inches, text kwargs) per line."""
    lines: list[tuple[str, float, dict]] = []
    quoted = f"“{prompt}”" if prompt else ""
    for text, size, style in ((title, 7.0, {"weight": "bold"}), (quoted, 6.0, {"style": "italic"})):
        if not text:
            continue
        # ~0.6 em per character is a safe upper bound for DejaVu Sans.
        chars = max(20, int((width - 0.04) * 72 / (size * 0.6)))
        for line in textwrap.wrap(text, chars):
            lines.append((line, size * 1.35 / 72, {"fontsize": size, **style}))
    return lines


def _draw_header(fig: plt.Figure, width: float, height: float, lines: list[tuple[str, float, dict]]) -> None:
    y = height - 0.03
    for text, h, kwargs in lines:
        fig.text(0.02 / width, y / height, plain_text(text), ha="left", va="top", **kwargs)
        y -= h


def _footer(fig: plt.Figure, width: float, height: float, footer: str) -> None:
    if footer:
        fig.text(0.02 / width, 0.03 / height, plain_text(footer), ha="left", va="bottom", fontsize=_TEXT,
                 color="#B00000")
