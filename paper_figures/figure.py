"""The `Figure` record returned by every builder, and the one way figures hit disk."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure as MplFigure

from paper_figures.style import DPI

DEFAULT_FORMATS: tuple[str, ...] = ("png", "pdf", "svg")

# Metadata keys that would otherwise embed dates or library versions and
# break byte-identical output; None tells matplotlib to omit the key.
_METADATA: dict[str, dict[str, None]] = {
    "png": {"Software": None},
    "svg": {"Creator": None, "Date": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
}


@dataclass
class Figure:
    """One output of `make_all`: a figure, a table or a video, with its files and caption."""

    path_stem: str
    files: list[Path] = field(default_factory=list)
    caption: str = ""
    kind: str = "figure"  # "figure" | "table" | "video"

    def file(self, suffix: str) -> Path | None:
        """The file with this extension (e.g. "png"), if written."""
        for f in self.files:
            if f.suffix.lstrip(".") == suffix:
                return f
        return None


TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to; renamed onto `path` only when the write finished.

    A crash or ``kill -9`` mid-write leaves at most a ``.tmp-*`` file, never a truncated file
    under the final name (the extension is kept, so writers that pick a format by it still do).
    """
    path = Path(path)
    tmp = path.with_name(TMP_PREFIX + path.name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_figure(fig: MplFigure, out_dir: Path | str, stem: str, formats: Sequence[str]) -> list[Path]:
    """Write `fig` once per format with date/version-free metadata, then close it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    try:
        if fig.get_layout_engine() is not None:
            # Lay out once, then freeze: every format gets identical positions and
            # the (slow) constrained-layout solve does not rerun per format.
            fig.draw_without_rendering()
            fig.set_layout_engine("none")
        for fmt in formats:
            fmt = fmt.lower().lstrip(".")
            path = out / f"{stem}.{fmt}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=DPI, metadata=_METADATA.get(fmt))
            paths.append(path)
    finally:
        plt.close(fig)
    return paths
