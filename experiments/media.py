"""Lossless outputs on disk: one folder per generation, written atomically.

- A video (more than one frame) is one lossless H.264 file, ``frames.mkv``: ``libx264rgb`` at
  qp 0 codes the RGB planes themselves (no colour conversion), so decoding gives back every
  pixel bit for bit, and inter-frame prediction makes it smaller than a PNG per frame. Chosen by
  measurement against FFV1, lossless H.265 and VP9 and PNG (``benchmarks/bench_media.py``).
- A cached video whose baseline's frames are at hand may instead be stored as its difference from
  them: ``frames.mkv`` then codes ``(cached - baseline + 128) mod 256`` (the same lossless H.264),
  and ``media.json`` names the baseline's folder (a sibling) and the SHA-256 of its pixels. A cache
  changes little of its baseline, so the difference is mostly flat: 0.19-0.21x PNG's bytes at
  480x832x81 where the video itself took 0.39-0.67x (benchmarks/bench_media.py, docs/benchmarks.md).
  Both are encoded and the smaller is kept, per generation. Reading one decodes its baseline too.
- An image (one frame) stays one PNG, ``frame_00000.png``: a single frame gains nothing from
  inter-frame coding, and a PNG opens anywhere (reports, W&B, image viewers).
- ``media.json`` records the format, the frame count and size, and the SHA-256 of the pixels,
  so a reader knows what it reads and checks that it decoded what was written.
- Folders written before this format (a ``frame_*.png`` per frame, no ``media.json``) are read
  as before.

A viewable MP4 (lossy) may sit beside a video's frames; metrics never read it. A folder with its
final name is always complete: it is written under a temporary name and renamed into place.

Example::

    write_frames(frames, Path("runs/x/media/abc"), mp4=True)   # frames: uint8 [F, H, W, 3]
    assert np.array_equal(read_frames("runs/x/media/abc"), frames)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FRAME_PATTERN = "frame_{:05d}.png"
TMP_PREFIX = ".tmp-"
RECORD = "media.json"
VIDEO_FILE = "frames.mkv"
#: The lossless video format: H.264 High 4:4:4 Predictive, qp 0 (lossless), RGB planes, in Matroska.
VIDEO_FORMAT = "h264-lossless-rgb-mkv"
#: The same, of the difference from a baseline folder's frames: (frames - base + 128) mod 256.
DELTA_FORMAT = "h264-lossless-rgb-delta-mkv"
DELTA_OFFSET = 128  # small negative differences stay small numbers rather than wrapping to 255
IMAGE_FORMAT = "png"
LEGACY_FORMAT = "png-frames"  # a folder from before media.json: one PNG per frame
# x264's "medium" preset (bench_media.py --candidates, 2 shared cores): "slow" saved 3-4% more bytes
# for 1.4-2x the encoding time, "veryfast" cost 9-13% more bytes; medium took 1.2-2.8x PNG's time.
X264_PRESET = "medium"


class MediaError(RuntimeError):
    """A frames folder that cannot be read as what its record says (truncated, altered, unknown)."""


@dataclass(frozen=True)
class MediaInfo:
    """What a frames folder holds, read without decoding it."""

    format: str  # VIDEO_FORMAT, DELTA_FORMAT, IMAGE_FORMAT or LEGACY_FORMAT
    frames: int
    files: tuple[str, ...]  # the lossless files, relative to the folder
    height: int | None = None  # None for a legacy folder (not recorded)
    width: int | None = None
    sha256: str | None = None  # of the uint8 pixels [F, H, W, 3], C order; None for a legacy folder
    base: str | None = None  # DELTA_FORMAT: the baseline's folder name, a sibling of this one
    base_sha256: str | None = None  # DELTA_FORMAT: the baseline's pixels the difference was taken from

    @property
    def is_video(self) -> bool:
        """Decoded from one video file (rather than read as a PNG per frame)."""
        return self.format in (VIDEO_FORMAT, DELTA_FORMAT)


def write_frames(frames: np.ndarray, folder: Path, mp4: bool, fps: int = 16,
                 base: tuple[Path, np.ndarray] | None = None) -> dict[str, str | None]:
    """Write uint8 frames [F,H,W,3] to `folder` atomically; returns the paths written.

    `base`: a baseline's folder (a sibling of `folder`) and its frames; a video of the same shape is
    then stored as its difference from them when that is smaller (see the module doc)."""
    frames = np.ascontiguousarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not frames.shape[0]:
        raise ValueError(f"frames must be uint8 [F, H, W, 3] with F >= 1, got {frames.dtype} {frames.shape}")
    folder = Path(folder)
    tmp = folder.with_name(TMP_PREFIX + folder.name)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mp4_name = "video.mp4" if mp4 and len(frames) > 1 else None
    try:
        record = {"frames": int(frames.shape[0]), "height": int(frames.shape[1]), "width": int(frames.shape[2])}
        if len(frames) > 1:
            record.update(format=VIDEO_FORMAT, files=[VIDEO_FILE])
            data = _encode_video(frames, fps)
            if base is not None and Path(base[0]).parent == folder.parent and not Path(base[0]).is_symlink() \
                    and base[1].shape == frames.shape:
                delta = _encode_video(_difference(frames, base[1]), fps)
                if len(delta) < len(data):
                    data = delta
                    record.update(format=DELTA_FORMAT, base=Path(base[0]).name, base_sha256=_digest(base[1]))
            (tmp / VIDEO_FILE).write_bytes(data)
        else:
            from PIL import Image

            Image.fromarray(frames[0]).save(tmp / FRAME_PATTERN.format(0), compress_level=1)
            record.update(format=IMAGE_FORMAT, files=[FRAME_PATTERN.format(0)])
        record["sha256"] = _digest(frames)
        (tmp / RECORD).write_text(json.dumps(record, indent=1) + "\n")
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
    """The uint8 frames [F,H,W,3] of a folder written by :func:`write_frames` (any version)."""
    folder = Path(folder)
    info = media_info(folder)
    if info is None:
        raise FileNotFoundError(f"no frames in {folder}")
    if info.format == DELTA_FORMAT:  # media_info found its baseline holding the frames it was taken from
        frames = _sum(_read_video(folder / info.files[0]), read_frames(folder.parent / info.base))
    elif info.format == VIDEO_FORMAT:
        frames = _read_video(folder / info.files[0])
    else:
        from PIL import Image

        frames = np.stack([np.asarray(Image.open(folder / f).convert("RGB")) for f in info.files])
    if info.sha256 is not None:
        expected = (info.frames, info.height, info.width, 3)
        if frames.shape != expected or _digest(frames) != info.sha256:
            raise MediaError(f"{folder}: decoded {frames.shape[0]} frame(s) of {frames.shape[1:3]} that differ from "
                             f"the {info.frames} frame(s) of {expected[1:3]} its {RECORD} records (truncated or "
                             f"altered); delete the folder and re-run the sweep to regenerate it")
    return frames


def media_info(folder: str | Path) -> MediaInfo | None:
    """What `folder` holds (format, frame count, files), or None when it holds no frames. Never decodes."""
    folder = Path(folder)
    try:
        record = json.loads((folder / RECORD).read_text())
    except FileNotFoundError:
        try:
            files = sorted(e.name for e in os.scandir(folder) if e.name.startswith("frame_") and e.name.endswith(".png"))
        except OSError:
            return None
        return MediaInfo(LEGACY_FORMAT, len(files), tuple(files)) if files else None
    except (OSError, ValueError) as exc:
        raise MediaError(f"{folder / RECORD}: unreadable ({exc}); delete the folder and re-run the sweep") from None
    if record.get("format") not in (VIDEO_FORMAT, DELTA_FORMAT, IMAGE_FORMAT):
        raise MediaError(f"{folder / RECORD}: unknown media format {record.get('format')!r}; this version reads "
                         f"{VIDEO_FORMAT!r}, {DELTA_FORMAT!r}, {IMAGE_FORMAT!r} and folders of frame_*.png")
    base = record.get("base")
    if record["format"] == DELTA_FORMAT and not _sibling_name(base):
        raise MediaError(f"{folder / RECORD}: base {base!r} is not the name of a sibling folder")
    files = tuple(record["files"])
    if not all(map(_sibling_name, files)):
        raise MediaError(f"{folder / RECORD}: files {list(files)} include one that is not a plain file name "
                         f"inside the folder")
    if not all((folder / f).is_file() for f in files):
        return None
    if record["format"] == DELTA_FORMAT and not _base_holds(folder.parent / base, record.get("base_sha256")):
        return None  # its baseline's frames are gone or were replaced: this one cannot be decoded either
    return MediaInfo(record["format"], int(record["frames"]), files, int(record["height"]), int(record["width"]),
                     record["sha256"], base, record.get("base_sha256"))


def has_frames(folder: str | Path) -> bool:
    """Whether `folder` holds a complete set of frames (what "the media are present" means everywhere)."""
    try:
        return media_info(folder) is not None
    except MediaError:
        return False


def _encode_video(frames: np.ndarray, fps: int) -> bytes:
    import io

    import av

    buf = io.BytesIO()
    # +bitexact: no random segment UID or version strings, so the same frames give the same bytes
    with av.open(buf, "w", format="matroska", container_options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264rgb", rate=fps, options={"qp": "0", "preset": X264_PRESET})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush the frames the encoder holds back
    return buf.getvalue()


def _difference(frames: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``(frames - base + DELTA_OFFSET) mod 256`` in uint8 (wrapping arithmetic: exact, undone by :func:`_sum`)."""
    return frames - base + np.uint8(DELTA_OFFSET)


def _sum(delta: np.ndarray, base: np.ndarray) -> np.ndarray:
    return delta + base - np.uint8(DELTA_OFFSET)


def _base_holds(base: Path, sha256: object) -> bool:
    """Whether `base` holds, as a complete video stored as itself, the frames of that SHA-256 (its record
    read, not its media: never recursive, so crafted records cannot make a cycle)."""
    if base.is_symlink():  # never followed out of the media folder
        return False
    try:
        record = json.loads((base / RECORD).read_text())
        return record.get("format") == VIDEO_FORMAT and record.get("sha256") == sha256 \
            and all(_sibling_name(f) and (base / f).is_file() for f in record["files"])
    except (OSError, ValueError, TypeError, KeyError):
        return False


def _sibling_name(name: object) -> bool:
    """A plain name (never a path, never '..' or hidden): what a record names stays inside the media folder."""
    return isinstance(name, str) and bool(name) and name == os.path.basename(name) and not name.startswith(".") \
        and "\\" not in name


def _read_video(path: Path) -> np.ndarray:
    import av

    out = []
    with av.open(str(path)) as container:
        container.streams.video[0].thread_type = "AUTO"  # frame and slice threads; H.264 decoding stays exact
        for frame in container.decode(video=0):
            if frame.format.name != "gbrp":  # what lossless RGB H.264 decodes to; anything else was converted
                raise MediaError(f"{path}: decodes to pixel format {frame.format.name}, not the lossless RGB "
                                 f"(gbrp) this format stores")
            out.append(frame.to_ndarray())  # gbrp planes -> [H, W, 3] in R, G, B order, no conversion
    if not out:
        raise MediaError(f"{path}: holds no video frames")
    return np.stack(out)


def _digest(frames: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames, dtype=np.uint8).data).hexdigest()


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
