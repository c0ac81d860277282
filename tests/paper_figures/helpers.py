"""Parsers used by the table tests: they check structure, not our own rendering code."""

from __future__ import annotations

import re

_MD_SPLIT = re.compile(r"(?<!\\)\|")
_TEX_AMP = re.compile(r"(?<!\\)&")


def markdown_rows(md: str) -> list[list[str]]:
    """Cells of every table line (`| a | b |`), outer pipes dropped; escaped pipes kept in cells."""
    rows = []
    for line in md.splitlines():
        if line.startswith("|"):
            assert line.rstrip().endswith("|"), line
            rows.append([c.strip() for c in _MD_SPLIT.split(line.strip())[1:-1]])
    return rows


def latex_body(tex: str) -> tuple[str, list[str]]:
    """(column spec, row lines) of the single tabular in `tex`; rules and comments excluded."""
    lines = [ln for ln in tex.splitlines() if ln.strip() and not ln.lstrip().startswith("%")]
    begin = [i for i, ln in enumerate(lines) if ln.startswith(r"\begin{tabular}")]
    end = [i for i, ln in enumerate(lines) if ln.startswith(r"\end{tabular}")]
    assert len(begin) == 1 and len(end) == 1 and begin[0] < end[0], "exactly one balanced tabular"
    spec = re.match(r"\\begin\{tabular\}\{([^}]*)\}", lines[begin[0]]).group(1)
    rows = [ln for ln in lines[begin[0] + 1 : end[0]] if ln.strip() not in (r"\toprule", r"\midrule", r"\bottomrule")]
    return spec, rows


def latex_cells(row: str) -> list[str]:
    assert row.rstrip().endswith(r"\\"), row
    return [c.strip() for c in _TEX_AMP.split(row.rstrip()[:-2])]


def latex_width(row: str) -> int:
    """Columns a row spans: cells, with \\multicolumn{k} counting k."""
    width = 0
    for cell in latex_cells(row):
        m = re.match(r"\\multicolumn\{(\d+)\}", cell)
        width += int(m.group(1)) if m else 1
    return width


def spec_width(spec: str) -> int:
    spec = re.sub(r"[@!]\{[^}]*\}", "", spec)
    spec = re.sub(r"[pmb]\{[^}]*\}", "p", spec)
    return sum(ch in "lcrp" for ch in spec)


def unescaped(pattern_char: str, s: str) -> int:
    return len(re.findall(r"(?<!\\)" + re.escape(pattern_char), s))
