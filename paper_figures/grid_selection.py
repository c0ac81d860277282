"""Which outputs a comparison grid/video shows: prompts, and the item row per point."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from paper_figures import contract as c
from paper_figures.frames import Frame, output_frames

# `grid_prompts` entries: a prompt index (first seed of it) or an explicit (prompt_index, seed).
PromptChoice = int | tuple[int, int]


@dataclass(frozen=True)
class GridEntry:
    """One output in a grid: the baseline or a cached point, with its item row (None if missing)."""

    method: str
    label: str
    point_id: str
    item: pd.Series | None
    speedup: float
    lpips: float

    @property
    def is_baseline(self) -> bool:
        return self.method == c.BASELINE

    @property
    def kind(self) -> str:
        return c.text(self.item.get("kind")) if self.item is not None else ""

    @property
    def frames(self) -> list[Frame]:
        """The output's frames on disk ([] when the output is missing)."""
        return output_frames(self.item.get("frames_dir")) if self.item is not None else []


def select_prompts(items: pd.DataFrame, grid_prompts: Sequence[PromptChoice] | None = None) -> list[tuple[int, int]]:
    """(prompt_index, seed) pairs to show; default: the first prompt with its first seed."""
    if items is None or items.empty:
        return []
    prompts = pd.to_numeric(items["prompt_index"], errors="coerce")
    seeds = pd.to_numeric(items["seed"], errors="coerce")
    pairs = sorted({(int(p), int(s)) for p, s in zip(prompts, seeds) if not (math.isnan(p) or math.isnan(s))})
    if not pairs:
        return []
    if grid_prompts is None:
        return [pairs[0]]
    chosen: list[tuple[int, int]] = []
    for choice in grid_prompts:
        if isinstance(choice, (tuple, list)):
            pair = (int(choice[0]), int(choice[1]))
            match = [pair] if pair in pairs else []
        else:
            match = [p for p in pairs if p[0] == int(choice)][:1]
        for pair in match:
            if pair not in chosen:
                chosen.append(pair)
    return chosen


def grid_entries(points: pd.DataFrame, items: pd.DataFrame, prompt_index: int, seed: int) -> list[GridEntry]:
    """Baseline then every non-failed point (method, key_value order) for one prompt/seed."""
    sel = items[
        (pd.to_numeric(items["prompt_index"], errors="coerce") == prompt_index)
        & (pd.to_numeric(items["seed"], errors="coerce") == seed)
    ]
    entries: list[GridEntry] = []
    base_items = sel[sel["method"].astype(str) == c.BASELINE]
    base_point = c.baseline_row(points)
    base_item = base_items.iloc[0] if not base_items.empty else None
    entries.append(_entry(base_point, base_item, c.BASELINE, "baseline", ""))
    for _, point in c.cached_points(points).iterrows():
        pid = c.text(point.get("point_id"))
        rows = sel[sel["point_id"].map(c.text) == pid]
        item = rows.iloc[0] if not rows.empty else None
        if item is not None and c.text(item.get("status")) == "failed":
            item = None
        entries.append(_entry(point, item, c.text(point.get("method")), c.text(point.get("label")), pid))
    return entries


def _entry(point: pd.Series | None, item: pd.Series | None, method: str, label: str, pid: str) -> GridEntry:
    def pick(col: str) -> float:
        # Per-item value when present (this prompt/seed), else the point's average.
        for row in (item, point):
            if row is not None:
                try:
                    v = float(row.get(col))
                except (TypeError, ValueError):
                    continue
                if not math.isnan(v):
                    return v
        return math.nan

    speedup = pick("speedup")
    if method == c.BASELINE and math.isnan(speedup):
        speedup = 1.0
    return GridEntry(method, label, pid, item, speedup, pick("lpips"))


def prompt_text(entries: Sequence[GridEntry], max_chars: int = 90) -> str:
    for e in entries:
        if e.item is not None and c.text(e.item.get("prompt")):
            p = " ".join(c.text(e.item.get("prompt")).split())
            return p if len(p) <= max_chars else p[: max_chars - 1] + "…"
    return ""


def entry_stats(e: GridEntry, lpips_name: str = "LPIPS") -> str:
    """"1.85× · LPIPS 0.123" (parts missing when not measured)."""
    parts = []
    if not math.isnan(e.speedup):
        parts.append(f"{e.speedup:.2f}×")
    if not e.is_baseline and not math.isnan(e.lpips):
        parts.append(f"{lpips_name} {e.lpips:.3f}")
    return " · ".join(parts)
