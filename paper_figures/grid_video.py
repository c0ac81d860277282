"""Side-by-side MP4: baseline and a few cached outputs tiled horizontally, frame by frame."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import imageio.v2 as imageio
import matplotlib
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from paper_figures import contract as c
from paper_figures.figure import Figure, atomic_path
from paper_figures.frames import Frame, evenly_spaced, image_size
from paper_figures.grid_selection import GridEntry, PromptChoice, entry_stats, grid_entries, select_prompts

MAX_TILE_HEIGHT = 360
MIN_TILE_HEIGHT = 240  # small test/preview videos are upscaled so labels stay legible
_BAND = 40  # px label band above each tile (two lines)
# The DejaVu file bundled with matplotlib, so labels look the same on every machine.
_FONT_PATH = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def grid_videos(
    points: pd.DataFrame,
    items: pd.DataFrame,
    out_dir: Path | str,
    grid_prompts: Sequence[PromptChoice] | None = None,
    max_outputs: int = 3,
    fps: int = 8,
) -> list[Figure]:
    """One side-by-side MP4 per chosen prompt/seed whose outputs are videos."""
    figures = [
        grid_video(points, items, out_dir, p, s, max_outputs=max_outputs, fps=fps)
        for p, s in select_prompts(items, grid_prompts)
    ]
    return [f for f in figures if f is not None]


def grid_video(
    points: pd.DataFrame,
    items: pd.DataFrame,
    out_dir: Path | str,
    prompt_index: int,
    seed: int,
    point_ids: Sequence[str] | None = None,
    max_outputs: int = 3,
    fps: int = 8,
) -> Figure | None:
    """Baseline + cached outputs (`point_ids`, default a spread over methods) as one MP4; None for images."""
    entries = grid_entries(points, items, prompt_index, seed)
    if not any(e.kind == "video" for e in entries):
        return None
    base, cached = entries[0], [e for e in entries[1:] if e.frames]
    if point_ids is not None:
        wanted = [str(p) for p in point_ids]
        chosen = sorted((e for e in cached if e.point_id in wanted), key=lambda e: wanted.index(e.point_id))
    else:
        chosen = _spread(cached, max_outputs)
    tiles = [e for e in [base, *chosen] if e.frames]
    if not tiles:
        return None

    lpips_random = c.is_random_weights(points, "lpips")
    lpips_name = "LPIPS*" if lpips_random else "LPIPS"
    frames = [e.frames for e in tiles]
    n = max(len(f) for f in frames)
    height = _even(max(MIN_TILE_HEIGHT, min(MAX_TILE_HEIGHT, image_size(frames[0][0])[1])))
    font = ImageFont.truetype(str(_FONT_PATH), 14)
    labels = [("baseline" if e.is_baseline else f"{e.method} {e.label}", entry_stats(e, lpips_name)) for e in tiles]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"grid_video_p{prompt_index}_s{seed}.mp4"
    with atomic_path(path) as tmp:
        _write_video(tmp, frames, labels, height, font, n, fps)

    caption = (
        f"Side-by-side video, prompt {prompt_index}, seed {seed}, left to right: "
        + "; ".join(f"{name} ({stats})" if stats else name for name, stats in labels)
        + f" ({fps} fps)."
    )
    if lpips_random:
        caption += f" {c.metric_label(points, 'lpips')}: random-weight network, not a real score."
    return Figure(path_stem=path.stem, files=[path], caption=caption, kind="video")


def _write_video(path: Path, frames: list[list[Frame]], labels, height: int, font, n: int, fps: int) -> None:
    writer = imageio.get_writer(
        path, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=2,
        ffmpeg_log_level="error",
        # No encoder/version tags or timestamps in the container.
        output_params=["-crf", "18", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact"],
    )
    try:
        for k in range(n):
            row = []
            for p, label in zip(frames, labels):
                # Shorter outputs hold their last frame so all tiles stay in sync.
                row.append(_tile(p[min(k * len(p) // n, len(p) - 1)], height, label, font))
            writer.append_data(np.concatenate(row, axis=1))
    finally:
        writer.close()


def _spread(cached: list[GridEntry], max_outputs: int) -> list[GridEntry]:
    """Round-robin over methods: each method's most aggressive setting first, then evenly spaced milder ones."""
    by_method: dict[str, list[GridEntry]] = {}
    for e in cached:
        by_method.setdefault(e.method, []).append(e)
    # Each queue: last, middle, first, then the rest, so a small budget still spans the sweep.
    queues: dict[str, list[GridEntry]] = {}
    for m, es in by_method.items():
        order = evenly_spaced(len(es), min(len(es), 3))[::-1]
        rest = [i for i in range(len(es) - 1, -1, -1) if i not in order]
        queues[m] = [es[i] for i in order + rest]
    picked: list[GridEntry] = []
    while len(picked) < max_outputs and any(queues.values()):
        for m in by_method:
            if queues[m] and len(picked) < max_outputs:
                picked.append(queues[m].pop(0))
    # Back in display order (method, key_value).
    ids = {e.point_id for e in picked}
    return [e for e in cached if e.point_id in ids]


def _even(v: int) -> int:
    return max(2, v - v % 2)


def _tile(frame: Frame, height: int, label: tuple[str, str], font: ImageFont.FreeTypeFont) -> np.ndarray:
    im = frame.image()
    width = _even(round(im.width * height / im.height))
    im = im.resize((width, height), Image.Resampling.LANCZOS) if im.size != (width, height) else im
    canvas = Image.new("RGB", (width, height + _BAND), "white")
    canvas.paste(im, (0, _BAND))
    draw = ImageDraw.Draw(canvas)
    for line, text in enumerate(label):
        draw.text((4, 3 + 18 * line), _fit(draw, text, font, width - 8), fill="black", font=font, anchor="lt")
    return np.asarray(canvas)


def _fit(draw: ImageDraw.ImageDraw, s: str, font: ImageFont.FreeTypeFont, width: int) -> str:
    while s and draw.textlength(s, font=font) > width:
        s = s[:-2] + "…" if len(s) > 2 else ""
    return s
