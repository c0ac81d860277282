"""Scoring two folders of outputs against each other, pairing files by relative path.

Readable files: images (``.png .jpg .jpeg .webp .bmp .tif .tiff``, read with
PIL and converted to 8-bit RGB; 16-bit images are rejected rather than
truncated), numpy arrays (``.npy``, any layout :mod:`metrics.inputs` accepts,
e.g. ``[F, H, W, 3]`` video frames) and videos (``.mp4 .webm .avi .mov .mkv
.gif``, read with imageio, which needs imageio-ffmpeg for most of them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import InputError
from .registry import DEFAULT_NAMES

__all__ = ["score_folders", "list_pairs", "load_item"]

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".webm", ".avi", ".mov", ".mkv", ".gif"}
ARRAY_EXTS = {".npy"}
EXTS = IMAGE_EXTS | VIDEO_EXTS | ARRAY_EXTS


def list_pairs(dir_a: str | Path, dir_b: str | Path) -> tuple[list[str], list[str], list[str]]:
    """(relative paths in both, only in ``dir_a``, only in ``dir_b``), sorted; readable extensions only."""

    def scan(d: Path) -> set[str]:
        if not d.is_dir():
            raise InputError(f"{d}: not a directory")
        return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() and p.suffix.lower() in EXTS}

    a, b = scan(Path(dir_a)), scan(Path(dir_b))
    return sorted(a & b), sorted(a - b), sorted(b - a)


def load_item(path: str | Path) -> np.ndarray:
    """Pixels of one file as a numpy array (uint8 RGB for images and videos).

    >>> import tempfile, os, numpy as np
    >>> from PIL import Image
    >>> p = os.path.join(tempfile.mkdtemp(), "x.png")
    >>> Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(p)
    >>> load_item(p).shape
    (4, 5, 3)
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext in ARRAY_EXTS:
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise InputError(f"{path}: not a readable .npy array ({str(err)[:120]})") from None
    if ext in IMAGE_EXTS:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                # PIL opens a 16-bit RGB PNG/TIFF as 8-bit "RGB" (the low byte is dropped): look at the raw mode
                raw = " ".join(str(getattr(t, "args", t[3] if len(t) > 3 else "")) for t in (im.tile or []))
                if im.mode in ("I", "F") or "16" in im.mode or "16" in raw or "32" in raw:
                    raise InputError(f"{path}: a {im.mode} image with 16-bit or float samples ({raw or im.mode}); "
                                     f"it would be cut to 8 bits silently, so it is refused: save 8-bit RGB, or "
                                     f"pass float .npy arrays on [0, 1]")
                return np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise InputError(f"{path}: not a readable image ({str(err)[:120]})") from None
    if ext in VIDEO_EXTS:
        import imageio.v3 as iio

        try:
            frames = iio.imread(path, index=None)
        except Exception as err:  # imageio raises many types for bytes that are not a video
            raise InputError(f"{path}: not a readable video ({type(err).__name__}: {str(err)[:120]})") from None
        if frames.ndim == 4 and frames.shape[-1] == 4:
            frames = frames[..., :3]  # drop alpha (GIF/WebM)
        return np.asarray(frames)
    raise InputError(f"{path}: unsupported file type {ext!r}")


def score_folders(
    dir_a: str | Path,
    dir_b: str | Path,
    names: Sequence[str] = DEFAULT_NAMES,
    prompts: Mapping[str, str] | None = None,
    allow_unmatched: bool = False,
    **scorer_kwargs: Any,
) -> dict:
    """Score every file of ``dir_a`` (cached) against the same relative path in ``dir_b`` (baseline).

    CLIP needs a prompt per file: ``prompts`` maps relative paths to prompts;
    without prompts "clip" is dropped (and the result's ``notes`` say so).
    Files present on one side only are refused (:class:`InputError` naming them) unless
    ``allow_unmatched``: then they are listed under ``unmatched``, named in ``notes`` and skipped.
    Returns ``{"items": [{"file", "frames", <metric>: value, ...}], "aggregate":
    {<metric>: aggregate(...)}, "labels": ..., "random_weights": ..., "unmatched": ..., "notes": [...]}``.

    >>> import tempfile, os, numpy as np, metrics
    >>> from PIL import Image
    >>> a, b = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(os.path.join(a, "0.png"))
    >>> Image.fromarray(np.full((16, 16, 3), 2, np.uint8)).save(os.path.join(b, "0.png"))
    >>> r = metrics.score_folders(a, b, names=("psnr",), device="cpu")
    >>> r["items"][0]["file"], round(r["aggregate"]["psnr"]["mean"], 2)
    ('0.png', 42.11)
    """
    from .scorer import Scorer
    from .stats import aggregate

    common, only_a, only_b = list_pairs(dir_a, dir_b)
    if not common:
        raise InputError(f"no files with the same relative path in {dir_a} and {dir_b}")
    if (only_a or only_b) and not allow_unmatched:
        raise InputError(f"the folders hold different files: {_some(only_a)} only in {dir_a}; {_some(only_b)} only "
                         f"in {dir_b}. Scoring the common part would hide missing outputs; pass "
                         f"allow_unmatched=True (--common-only) to score the {len(common)} common file(s) anyway")
    names = tuple(names)
    notes = [f"skipped files on one side only: {_some(only_a)} only in {dir_a}; {_some(only_b)} only in {dir_b}"] \
        if only_a or only_b else []
    prompts = dict(prompts or {})
    if "clip" in names and not any(f in prompts for f in common):
        names = tuple(n for n in names if n != "clip")
        notes.append("clip skipped: no prompts given for these files")
    if not names:
        raise ValueError("no metric left to compute")
    scorer = Scorer(names=names, **scorer_kwargs)
    rows: list[dict] = []
    batch: list[str] = []
    files_in_batch = 0

    def flush() -> None:
        pairs = [(load_item(Path(dir_a) / f), load_item(Path(dir_b) / f), prompts.get(f)) for f in batch]
        try:
            scored = scorer.score_pairs(pairs)
        except InputError as err:
            # Item indices in the message refer to this batch; name the files instead.
            raise InputError(f"{err} (files: {', '.join(batch)})") from err
        for f, (ca, _, _), res in zip(batch, pairs, scored):
            row: dict[str, Any] = {"file": f, "frames": int(ca.shape[0]) if ca.ndim == 4 else 1}
            row.update({k: v["value"] for k, v in res.items() if v["value"] is not None})  # None: not applicable
            rows.append(row)

    # Load batch_size files at a time (a video alone fills chunks), never the whole folder.
    for f in common:
        batch.append(f)
        files_in_batch += 1
        if files_in_batch >= scorer.batch_size:
            flush()
            batch, files_in_batch = [], 0
    if batch:
        flush()
    order = ["psnr", "ssim", "lpips", "psnr_tdiff", "mae_tdiff", "clip_cached", "clip_baseline", "clip_delta"]
    keys = [k for k in order if any(k in r for r in rows)]
    agg = {k: aggregate([r[k] for r in rows if k in r], k) for k in keys}
    return {
        "items": rows,
        "aggregate": agg,
        "labels": scorer.labels,
        "random_weights": scorer.random_weights,
        "unmatched": {"only_in_a": only_a, "only_in_b": only_b},
        "notes": notes,
    }


def _some(names: list[str], shown: int = 5) -> str:
    """A short list of file names for a message."""
    if not names:
        return "none"
    listed = ", ".join(names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")
