"""Lossless outputs on disk: PNG per frame, plus a viewable MP4 beside video frames.

A generation's folder is written under a temporary name and renamed into place, so a
folder with the final name is always complete. Metrics read the PNGs, never the MP4.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

FRAME_PATTERN = "frame_{:05d}.png"
TMP_PREFIX = ".tmp-"


def write_frames(frames: np.ndarray, folder: Path, mp4: bool, fps: int = 16) -> dict[str, str | None]:
    """Write uint8 frames [F,H,W,3] to `folder` atomically; returns the paths written."""
    from PIL import Image

    folder = Path(folder)
    tmp = folder.with_name(TMP_PREFIX + folder.name)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mp4_name = "video.mp4" if mp4 and len(frames) > 1 else None
    try:
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / FRAME_PATTERN.format(i), compress_level=1)
        if mp4_name:
            write_mp4(frames, tmp / mp4_name, fps)
        _fsync_dir(tmp)
    except BaseException:  # e.g. a full disk: give the space back; nothing under the final name changed
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():  # a complete folder from a generation whose row never landed: replace it
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return {"media_dir": str(folder), "mp4": str(folder / mp4_name) if mp4_name else None}


def read_frames(folder: str | Path) -> np.ndarray:
    from PIL import Image

    files = sorted(Path(folder).glob("frame_*.png"))
    if not files:
        raise FileNotFoundError(f"no frames in {folder}")
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def write_mp4(frames: np.ndarray, path: Path, fps: int = 16) -> None:
    import imageio.v2 as imageio

    # libx264 needs even sizes; pad by edge replication rather than resample (the MP4 is for viewing only)
    h, w = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1,
                            ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(frame)


def write_text(path: Path, text: str) -> None:
    """A small text file written under a temporary name and renamed: never seen half-written."""
    path = Path(path)
    tmp = path.with_name(TMP_PREFIX + path.name)
    tmp.write_text(text)
    os.replace(tmp, path)


def clean_partial(media_root: Path) -> int:
    """Remove temporary folders left by a crash; returns how many were removed."""
    removed = 0
    if media_root.is_dir():
        for tmp in media_root.glob(TMP_PREFIX + "*"):
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
    return removed


def _fsync_dir(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
