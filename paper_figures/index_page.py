"""`index.md`: every figure, table and video of a sweep on one browsable page."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from paper_figures.figure import Figure, atomic_path

INDEX_NAME = "index.md"


def write_index(figures: Sequence[Figure], out_dir: Path | str, title: str = "Sweep figures") -> Path:
    """Write `out_dir/index.md`: PNGs embedded, tables inlined (+ .tex link), videos linked."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {_md_text(title)}", ""]
    toc = [f"- [{f.path_stem}](#{_anchor(f.path_stem)})" for f in figures]
    if toc:
        lines += toc + [""]
    else:
        lines += ["_No figures were produced._", ""]
    for f in figures:
        lines += [f"## {f.path_stem}", "", _md_text(f.caption), ""]
        if f.kind == "table":
            md = f.file("md")
            if md is not None and md.exists():
                lines += [md.read_text(encoding="utf-8").rstrip(), ""]
            links = [f"[{p.name}]({_rel(p, out)})" for p in f.files]
        elif f.kind == "video":
            links = [f"[{p.name}]({_rel(p, out)})" for p in f.files]
        else:
            png = f.file("png")
            if png is not None:
                lines += [f"![{f.path_stem}]({_rel(png, out)})", ""]
            links = [f"[{p.suffix.lstrip('.')}]({_rel(p, out)})" for p in f.files]
        if links:
            lines += ["Files: " + " · ".join(links), ""]
    path = out / INDEX_NAME
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


def _rel(path: Path, base: Path) -> str:
    # Relative POSIX links so the page works when the folder is moved or viewed on GitHub.
    return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


def _one_line(s: str) -> str:
    return " ".join(str(s).split())


def _md_text(s: str) -> str:
    """Caption as literal Markdown: `LPIPS*` or `<lambda>` in an error must not turn into markup."""
    out = _one_line(s)
    for ch in ("\\", "*", "<", ">", "`"):
        out = out.replace(ch, "\\" + ch)
    return out


def _anchor(s: str) -> str:
    """GitHub's heading anchor: lowercase, spaces to '-', most punctuation dropped."""
    return "".join(ch for ch in s.lower().replace(" ", "-") if ch.isalnum() or ch in "-_")
