"""Reading output frames for grids, videos and the report, in any format experiments.media writes.

A frame is a :class:`Frame` handle: frame ``index`` of an output folder, with ``file`` set when the
folder keeps that frame as its own PNG (images, and folders written before the lossless video
format). Frames of a video file are decoded once per folder and kept for the next few reads.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from experiments import media
from paper_figures import contract as c

_DECODED_VIDEOS = 6  # kept decoded at once: a side-by-side video shows the baseline and up to 3 outputs


@dataclass(frozen=True)
class Frame:
    """Frame `index` of the output folder `folder`; `file` is its PNG when it has one."""

    folder: Path
    index: int
    file: Path | None = None

    def image(self) -> Image.Image:
        """The frame as an RGB image."""
        if self.file is not None:
            with Image.open(self.file) as im:
                return im.convert("RGB")
        folder = self.folder.resolve()
        return Image.fromarray(_decoded(folder, _stamp(folder))[self.index])


def output_frames(frames_dir: object) -> list[Frame]:
    """The frames of an output folder, in order; [] when the folder is missing or holds no frames."""
    d = Path(c.text(frames_dir)) if c.text(frames_dir) else None
    if d is None or not d.is_dir():
        return []
    try:
        info = media.media_info(d)
    except media.MediaError:
        return []
    if info is None:
        return []
    if info.is_video:
        return [Frame(d, i) for i in range(info.frames)]
    return [Frame(d, i, d / f) for i, f in enumerate(info.files)]


def _stamp(folder: Path) -> tuple[int, ...]:
    """Changes when the folder, or the baseline a difference is decoded with, is rewritten (so a cached decode
    is never stale)."""
    info = media.media_info(folder)
    base = info.base if info is not None else None
    return tuple((f / media.RECORD).stat().st_mtime_ns for f in (folder, *([folder.parent / base] if base else [])))


@functools.lru_cache(maxsize=_DECODED_VIDEOS)
def _decoded(folder: Path, stamp: tuple[int, ...]) -> np.ndarray:
    return media.read_frames(folder)


def evenly_spaced(n_total: int, n: int) -> list[int]:
    """`n` indices spread over `range(n_total)`, first and last included, no repeats."""
    if n_total <= 0 or n <= 0:
        return []
    if n >= n_total:
        return list(range(n_total))
    return sorted({int(round(i)) for i in np.linspace(0, n_total - 1, n)})


def image_size(frame: Frame) -> tuple[int, int]:
    """(width, height); a PNG's without decoding its pixels."""
    if frame.file is not None:
        with Image.open(frame.file) as im:
            return im.size
    info = media.media_info(frame.folder)
    return (info.width, info.height)


def load_rgb(frame: Frame, max_side: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """An RGB uint8 array, resized (Lanczos, deterministic) to `size`, or so its long side is <= `max_side`."""
    im = frame.image()
    if size is not None and im.size != size:
        im = im.resize(size, Image.Resampling.LANCZOS)
    elif max_side is not None and max(im.size) > max_side:
        scale = max_side / max(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(im)
