"""Per-point results table (latency, speedup, compute, quality, memory) as Markdown and LaTeX.

Both renderers share one list of cells, so the two files always agree; the
best non-baseline value per quality/speed column is bold (compared on the
rounded value that is shown, so visible ties are all bold).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from paper_figures import contract as c
from paper_figures.figure import Figure, atomic_path

INF = "∞"
MINUS = "−"  # typographic minus; rendered as $-$ in LaTeX


@dataclass(frozen=True)
class Cell:
    text: str
    value: float = math.nan  # rounded number behind `text`, used to pick the best cell
    bold: bool = False
    note: int | None = None  # footnote number


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    align: str  # LaTeX alignment letter
    cell: Callable[[pd.Series], Cell]
    best: str | None = None  # "max" | "min" | None


@dataclass
class Table:
    """Rendered-agnostic table: header, row groups (baseline, then one per method) and notes."""

    columns: list[Column]
    groups: list[list[list[Cell]]]
    notes: list[str]  # numbered footnotes, referenced by Cell.note
    remarks: list[str]  # unnumbered notes under the table


def _num(row: pd.Series, col: str) -> float:
    try:
        v = float(row.get(col))
    except (TypeError, ValueError):
        return math.nan
    return v


def _fmt(v: float, decimals: int, signed: bool = False) -> str:
    if math.isinf(v):
        return INF if v > 0 else MINUS + INF
    s = f"{v:+.{decimals}f}" if signed else f"{v:.{decimals}f}"
    return s.replace("-", MINUS)


def _value_cell(col: str, decimals: int, suffix: str = "", signed: bool = False) -> Callable[[pd.Series], Cell]:
    def make(row: pd.Series) -> Cell:
        v = _num(row, col)
        if math.isnan(v):
            # the quality reference itself: its identity value is a definition, not a measurement
            return Cell("ref" if col in c.METRICS and _is_reference(row) else "–")
        rounded = v if math.isinf(v) else round(v, decimals)
        return Cell(_fmt(v, decimals, signed) + suffix, rounded)

    return make


def _is_reference(row: pd.Series) -> bool:
    return c.flag(pd.DataFrame([row]), "reference").iloc[0] if "reference" in row.index else False


def _range_cell(col: str, decimals: int, suffix: str, lo: str, hi: str) -> Callable[[pd.Series], Cell]:
    """"value (lo–hi)", e.g. latency with its IQR or speedup with its 95% CI."""
    base = _value_cell(col, decimals, suffix)

    def make(row: pd.Series) -> Cell:
        cell = base(row)
        a, b = _num(row, lo), _num(row, hi)
        if math.isnan(cell.value) or math.isnan(a) or math.isnan(b):
            return cell
        return Cell(f"{cell.text} ({_fmt(a, decimals)}–{_fmt(b, decimals)})", cell.value)

    return make


def _p_cell(col: str) -> Callable[[pd.Series], Cell]:
    """A p-value: "<0.001", "0.032", or "–" where it was not computed (baseline, fewer than 2 items)."""
    def make(row: pd.Series) -> Cell:
        v = _num(row, col)
        if math.isnan(v):
            return Cell("–")
        return Cell("<0.001" if v < 0.001 else f"{v:.3f}", v)

    return make


def _memory_cell(row: pd.Series) -> Cell:
    v = _num(row, "peak_memory_mb")
    return Cell("–") if math.isnan(v) else Cell(f"{v:,.0f}", float(round(v)))


_METRIC_FORMAT = {"lpips": (3, False), "psnr": (2, False), "ssim": (3, False), "clip_delta": (3, True)}


def computed_metrics(points: pd.DataFrame) -> list[str]:
    """Metrics with a value on some cached point (or on the baseline when it is alone).

    Metrics nobody computed are dropped rather than printed as a column of dashes.
    """
    cached = points[points["method"].astype(str) != c.BASELINE] if "method" in points.columns else points
    rows = cached if not cached.empty else points
    return [m for m in c.METRICS if c.numeric(rows, m).notna().any()]


def _columns(points: pd.DataFrame) -> list[Column]:
    cols = [
        Column("method", "Method", "l", lambda r: Cell(c.text(r.get("method")))),
        Column("label", "Setting", "l", lambda r: Cell(c.text(r.get("label")))),
    ]
    opt = points["optimization"].map(c.text) if "optimization" in points.columns else pd.Series([], dtype=str)
    if any(o not in ("", "none") for o in opt):
        cols.append(Column("optimization", "Optimization", "l", lambda r: Cell(c.text(r.get("optimization")))))
    cols += [
        Column("latency_s", "Latency s, median (IQR)", "r",
               _range_cell("latency_s", 2, "", "latency_q25_s", "latency_q75_s")),
        Column("speedup", "Speedup (95% CI)", "r",
               _range_cell("speedup", 2, "×", "speedup_ci_low", "speedup_ci_high"), best="max"),
    ]
    if "speedup_p" in points.columns and c.numeric(points, "speedup_p").notna().any():
        cols.append(Column("speedup_p", "p vs baseline", "r", _p_cell("speedup_p")))
    cols += [
        Column("compute_fraction", "Compute", "r", _value_cell("compute_fraction", 2)),
    ]
    for m in computed_metrics(points):
        decimals, signed = _METRIC_FORMAT[m]
        higher = c.HIGHER_IS_BETTER[m]
        header = f"{c.metric_label(points, m)} {'↑' if higher else '↓'}"
        cols.append(Column(m, header, "r", _value_cell(m, decimals, signed=signed), best="max" if higher else "min"))
    cols.append(Column("peak_memory_mb", "Peak mem (MB)", "r", _memory_cell))
    return cols


def build_table(points: pd.DataFrame) -> Table:
    """Cells, bold marks and footnotes for the points table (shared by both renderers)."""
    columns = _columns(points)
    frame = c.sort_points(points)
    status = c.status_of(frame)
    notes: list[str] = []
    groups: list[list[list[Cell]]] = []
    candidates: list[tuple[int, int]] = []  # (group, row) eligible for "best"
    first_value_col = next(i for i, col in enumerate(columns) if col.key == "latency_s")

    order = list(dict.fromkeys(frame["method"].astype(str)))
    for method in order:
        rows: list[list[Cell]] = []
        sub = frame[frame["method"].astype(str) == method]
        for idx, row in sub.iterrows():
            st = status.loc[idx]
            if st == "failed":
                error = c.short_error(row.get("error"), 120) or "no error recorded"
                notes.append(f"{c.point_name(row)} failed: {error}")
                cells = [col.cell(row) for col in columns[:first_value_col]]
                cells.append(Cell("failed", note=len(notes)))
                cells += [Cell("–") for _ in columns[first_value_col + 1:]]
            else:
                cells = [col.cell(row) for col in columns]
                if st == "partial":
                    notes.append(f"{c.point_name(row)}: partial, some items failed; "
                                 f"values over the {_items(row)} that succeeded")
                    cells[1] = Cell(cells[1].text, note=len(notes))  # footnote mark on the setting
                if c.flag(pd.DataFrame([row]), "timing_suspect").iloc[0]:
                    reason = c.text(row.get("timing_suspect_reason")) or "flagged"
                    notes.append(f"{c.point_name(row)}: timing suspect, speedup not to be trusted as measured: "
                                 f"{reason}")
                    k = next(i for i, col in enumerate(columns) if col.key == "speedup")
                    cells[k] = Cell(cells[k].text, cells[k].value, cells[k].bold, note=len(notes))
                if method != c.BASELINE:
                    candidates.append((len(groups), len(rows)))
            rows.append(cells)
        groups.append(rows)

    # Bold the best rounded value among non-baseline, non-failed rows (needs a real comparison: >= 2 rows).
    for j, col in enumerate(columns):
        if col.best is None or len(candidates) < 2:
            continue
        vals = [groups[g][r][j].value for g, r in candidates]
        finite = [v for v in vals if not math.isnan(v)]
        if len(finite) < 2:
            continue
        target = max(finite) if col.best == "max" else min(finite)
        for (g, r), v in zip(candidates, vals):
            if v == target:
                cell = groups[g][r][j]
                groups[g][r][j] = Cell(cell.text, cell.value, True, cell.note)

    remarks = [
        f"{c.metric_label(points, m)}: computed with random-weight networks, not a real score"
        for m in c.METRICS
        if any(col.key == m for col in columns) and c.is_random_weights(points, m)
    ]
    if any(col.key == "speedup_p" for col in columns):
        remarks.append("p vs baseline: paired bootstrap over items (prompt x seed) that the speedup differs from 1")
    if points.attrs.get("not_reportable"):
        remarks.append(f"NOT REPORTABLE: {points.attrs['not_reportable']}")
    return Table(columns, groups, notes, remarks)


def _items(row: pd.Series) -> str:
    try:
        return f"{int(row.get('n_items'))} items"
    except (TypeError, ValueError):
        return "items"


# ---------------------------------------------------------------- Markdown


def _md_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def _md_cell(cell: Cell) -> str:
    s = _md_escape(cell.text)
    if cell.bold and s:
        s = f"**{s}**"
    if cell.note is not None:
        s += f"<sup>{cell.note}</sup>"
    return s


def markdown_table(points: pd.DataFrame) -> str:
    """GitHub-flavoured Markdown table with footnotes below it."""
    t = build_table(points)
    align = {"l": ":---", "r": "---:"}
    lines = [
        "| " + " | ".join(_md_escape(col.header) for col in t.columns) + " |",
        "| " + " | ".join(align[col.align] for col in t.columns) + " |",
    ]
    for rows in t.groups:
        for cells in rows:
            lines.append("| " + " | ".join(_md_cell(cell) for cell in cells) + " |")
    out = "\n".join(lines) + "\n"
    notes = [f"<sup>{i}</sup> {_md_escape(n)}" for i, n in enumerate(t.notes, 1)] + [_md_escape(r) for r in t.remarks]
    if notes:
        # One paragraph per note: no trailing-space line breaks to get lost in editors.
        out += "\n" + "\n\n".join(notes) + "\n"
    return out


# ---------------------------------------------------------------- LaTeX

_TEX_CHARS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # `[` right after `\\` would be read as a row-spacing argument.
    "[": "{[}",
    "]": "{]}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "×": r"$\times$",
    "∞": r"$\infty$",
    "Δ": r"$\Delta$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "–": "--",
    "—": "---",
    "−": "$-$",
    "±": r"$\pm$",
    "…": r"\ldots{}",
    "μ": r"$\mu$",
    "·": r"$\cdot$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
}


def latex_escape(s: str) -> str:
    """Escape text for a LaTeX table cell; non-ASCII left over is dropped to keep pdflatex happy."""
    out = []
    for ch in s:
        if ch in _TEX_CHARS:
            out.append(_TEX_CHARS[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            out.append("?")
    return "".join(out).replace("$$", "")  # adjacent math chunks ("$-$$\infty$") merge cleanly


def _tex_cell(cell: Cell) -> str:
    s = latex_escape(cell.text)
    if cell.bold and s:
        s = rf"\textbf{{{s}}}"
    if cell.note is not None:
        s += rf"\textsuperscript{{{cell.note}}}"
    return s


def latex_table(points: pd.DataFrame) -> str:
    """A booktabs `tabular` (no preamble) ready to `\\input`; needs `\\usepackage{booktabs}`."""
    t = build_table(points)
    n = len(t.columns)
    spec = "".join(col.align for col in t.columns)
    title = " ".join(c.sweep_title(points).split())
    lines = [
        f"% {latex_escape(title)}: generated by paper_figures; requires \\usepackage{{booktabs}}",
        f"\\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(col.header) for col in t.columns) + r" \\",
    ]
    for rows in t.groups:
        lines.append(r"\midrule")
        for i, cells in enumerate(rows):
            texts = [_tex_cell(cell) for cell in cells]
            if i > 0:  # method name once per group reads better in print
                texts[0] = ""
            lines.append(" & ".join(texts) + r" \\")
    lines.append(r"\bottomrule")
    for i, note in enumerate(t.notes, 1):
        lines.append(rf"\multicolumn{{{n}}}{{l}}{{\footnotesize\textsuperscript{{{i}}}{latex_escape(note)}}} \\")
    for remark in t.remarks:
        lines.append(rf"\multicolumn{{{n}}}{{l}}{{\footnotesize {latex_escape(remark)}}} \\")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def threshold_table(points: pd.DataFrame, out_dir: Path | str) -> Figure:
    """Write `table.md` and `table.tex` and return them as one table `Figure`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, tex = out / "table.md", out / "table.tex"
    for path, text in ((md, markdown_table(points)), (tex, latex_table(points))):
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    caption = (
        f"Latency, speedup and quality per point for {c.sweep_title(points)}; "
        "best non-baseline value per column in bold; speedup with 95% CI, latency with IQR."
    )
    computed = computed_metrics(points)
    missing = [c.metric_label(points, m) for m in c.METRICS if m in points.columns and m not in computed]
    if missing:
        caption += " Not computed: " + ", ".join(missing) + "."
    caption = " ".join(p for p in (caption, c.failure_note(points, prefix="Failed (rows marked failed)")) if p)
    return Figure(path_stem="table", files=[md, tex], caption=caption, kind="table")
