"""Reading output frames (lossless PNG folders) for grids and videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from paper_figures import contract as c


def frame_paths(frames_dir: object) -> list[Path]:
    """Sorted `frame_*.png` files of an output folder; [] when the folder is missing."""
    d = Path(c.text(frames_dir)) if c.text(frames_dir) else None
    if d is None or not d.is_dir():
        return []
    return sorted(d.glob("frame_*.png"))


def evenly_spaced(n_total: int, n: int) -> list[int]:
    """`n` indices spread over `range(n_total)`, first and last included, no repeats."""
    if n_total <= 0 or n <= 0:
        return []
    if n >= n_total:
        return list(range(n_total))
    return sorted({int(round(i)) for i in np.linspace(0, n_total - 1, n)})


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) without decoding the pixels."""
    with Image.open(path) as im:
        return im.size


def load_rgb(path: Path, max_side: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """An RGB uint8 array, resized (Lanczos, deterministic) to `size`, or so its long side is <= `max_side`."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and im.size != size:
            im = im.resize(size, Image.Resampling.LANCZOS)
        elif max_side is not None and max(im.size) > max_side:
            scale = max_side / max(im.size)
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.LANCZOS)
        return np.asarray(im)
