"""Markdown/LaTeX tables: structure, escaping, formatting, bold best cells, failure footnotes."""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import pandas as pd
import pytest

from paper_figures import latex_table, markdown_table, threshold_table

from .helpers import latex_body, latex_cells, latex_width, markdown_rows, spec_width, unescaped
from .synthetic import make_points

METRIC_COLS = ("lpips", "psnr", "ssim", "clip_delta")


def _hand_points() -> pd.DataFrame:
    """Four rows whose best cells are known by hand (see test_bold_marks_best_cell_per_column)."""
    nan = math.nan
    rows = [
        # point_id, method, label, key, speedup, lpips, psnr, ssim, clip_delta
        ("b", "baseline", "baseline", nan, 1.00, 0.000, math.inf, 1.000, 0.000),
        ("f1", "first_block_cache", "t=0.1", 0.1, 1.50, 0.050, 30.00, 0.900, -0.010),
        ("f2", "first_block_cache", "t=0.2", 0.2, 2.00, 0.100, 28.00, 0.850, -0.020),
        ("m1", "mag_cache", "t=0.1 r=0.2", 0.1, 1.80, 0.040, 31.00, 0.880, 0.0001),
    ]
    frame = pd.DataFrame(rows, columns=["point_id", "method", "label", "key_value", "speedup", *METRIC_COLS])
    frame["status"] = "ok"
    frame["error"] = None
    frame["latency_s"] = 10.0 / frame["speedup"]
    frame["peak_memory_mb"] = 1000.0
    frame["compute_fraction"] = 1.0 / frame["speedup"]
    frame.attrs["metric_labels"] = {"lpips": "LPIPS (alex)", "psnr": "PSNR (dB)", "ssim": "SSIM", "clip_delta": "ΔCLIP"}
    return frame


def _md_by_row(md: str) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
    rows = markdown_rows(md)
    header, body = rows[0], rows[2:]
    return header, {(r[0].replace("\\_", "_"), r[1]): r for r in body}


def test_markdown_is_a_table():
    md = markdown_table(make_points(random_lpips=True))
    rows = markdown_rows(md)
    assert len(rows) == 1 + 1 + 11  # header, separator, baseline + 9 points + 1 failed
    widths = {len(r) for r in rows}
    assert widths == {len(rows[0])}, widths
    assert all(re.fullmatch(r":?-{3,}:?", c) for c in rows[1])
    # Table lines are contiguous: a blank line inside would split it in two on GitHub.
    lines = md.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    assert all(ln.startswith("|") for ln in lines[first : first + len(rows)])


def test_latex_structure():
    points = make_points(random_lpips=True)
    cached = points.index[points["method"] != "baseline"]
    points.loc[cached[0], "psnr"] = float("inf")  # an output identical to its baseline
    tex = latex_table(points)
    assert "\\documentclass" not in tex and "\\begin{document}" not in tex
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 1
    order = [tex.index(r) for r in ("\\toprule", "\\midrule", "\\bottomrule")]
    assert order == sorted(order)
    spec, rows = latex_body(tex)
    n = spec_width(spec)
    assert n >= 8
    for row in rows:
        assert latex_width(row) == n, row
        body = row.rstrip()[:-2]
        assert unescaped("_", body) == 0, row
        assert unescaped("%", body) == 0 and unescaped("#", body) == 0, row
        assert unescaped("$", body) % 2 == 0, row
        assert unescaped("{", body) == unescaped("}", body), row
    assert "first\\_block\\_cache" in tex and "$\\infty$" in tex and "$\\times$" in tex
    assert " ref " in tex  # the baseline's quality cells: the reference, not a score


def test_latex_compiles_when_pdflatex_available(tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not on PATH")
    (tmp_path / "table.tex").write_text(latex_table(make_points(random_lpips=True)), encoding="utf-8")
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=0.5in,landscape]{geometry}\n"
        "\\begin{document}\n\\input{table.tex}\n\\end{document}\n"
    )
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_bold_marks_best_cell_per_column():
    points = _hand_points()
    # Best among non-baseline rows: speedup max -> f2; LPIPS min -> m1; PSNR max -> m1 (baseline's
    # inf excluded); SSIM max -> f1 (baseline's 1.0 excluded); ΔCLIP max -> m1.
    expected = {"Speedup": ("first_block_cache", "t=0.2"), "LPIPS": ("mag_cache", "t=0.1 r=0.2"),
                "PSNR": ("mag_cache", "t=0.1 r=0.2"), "SSIM": ("first_block_cache", "t=0.1"),
                "ΔCLIP": ("mag_cache", "t=0.1 r=0.2")}
    header, rows = _md_by_row(markdown_table(points))
    for prefix, key in expected.items():
        j = next(i for i, h in enumerate(header) if h.startswith(prefix))
        bold = [k for k, r in rows.items() if r[j].startswith("**")]
        assert bold == [key], (prefix, bold)
    # Columns without a "best" rule stay plain.
    for name in ("Latency", "Compute", "Peak mem"):
        j = next(i for i, h in enumerate(header) if h.startswith(name))
        assert not any("**" in r[j] for r in rows.values())

    spec, body = latex_body(latex_table(points))
    tex_header = latex_cells(body[0])
    method = ""
    tex_bold: dict[str, list[tuple[str, str]]] = {}
    for row in body[1:]:
        cells = latex_cells(row)
        method = cells[0].replace("\\_", "_") or method
        for j, cell in enumerate(cells):
            if cell.startswith("\\textbf"):
                tex_bold.setdefault(tex_header[j], []).append((method, cells[1]))
    got = {next(p for p in expected if h.replace("$\\Delta$", "Δ").startswith(p)): v for h, v in tex_bold.items()}
    assert got == {k: [v] for k, v in expected.items()}


def test_rounded_ties_are_all_bold():
    points = _hand_points()
    points.loc[points["point_id"] == "f1", "lpips"] = 0.0401  # shows as 0.040, same as m1
    header, rows = _md_by_row(markdown_table(points))
    j = next(i for i, h in enumerate(header) if h.startswith("LPIPS"))
    assert sorted(k for k, r in rows.items() if r[j].startswith("**")) == [
        ("first_block_cache", "t=0.1"), ("mag_cache", "t=0.1 r=0.2")]


def test_number_formats():
    header, rows = _md_by_row(markdown_table(_hand_points()))
    col = {h.split(" ")[0]: i for i, h in enumerate(header)}
    base = rows[("baseline", "baseline")]
    assert base[col["PSNR"]] == "∞"
    f2 = rows[("first_block_cache", "t=0.2")]
    assert f2[col["Speedup"]] == "**2.00×**"
    assert f2[col["LPIPS"]] == "0.100" and f2[col["PSNR"]] == "28.00" and f2[col["SSIM"]] == "0.850"
    assert f2[col["Latency"]] == "5.00"
    assert rows[("mag_cache", "t=0.1 r=0.2")][col["ΔCLIP"]] == "**+0.000**"


def test_groups_sorted_by_method_then_key_value():
    points = _hand_points().iloc[::-1].reset_index(drop=True)  # input order must not matter
    _, rows = _md_by_row(markdown_table(points))
    assert list(rows) == [("baseline", "baseline"), ("first_block_cache", "t=0.1"),
                          ("first_block_cache", "t=0.2"), ("mag_cache", "t=0.1 r=0.2")]


def test_failed_point_row_and_footnote(tmp_path):
    points = make_points()
    fig = threshold_table(points, tmp_path)
    md, tex = fig.file("md").read_text(), fig.file("tex").read_text()
    _, rows = _md_by_row(md)
    assert rows[("first_block_cache", "t=0.3")][2] == "failed<sup>1</sup>"
    assert "<sup>1</sup> first\\_block\\_cache t=0.3 failed: torch.OutOfMemoryError: CUDA out of memory" in md
    assert "failed\\textsuperscript{1}" in tex and "CUDA out of memory" in tex
    assert "t=0.3" in fig.caption and "CUDA out of memory" in fig.caption


def test_random_weight_columns_are_labelled():
    points = make_points(random_lpips=True)
    header = markdown_rows(markdown_table(points))[0]
    assert any(h.startswith("LPIPS") and "[random weights]" in h for h in header)
    assert not any(h.startswith("PSNR") and "random" in h for h in header)
    assert "{[}random weights{]}" in latex_table(points)
    assert "random weights" not in markdown_table(make_points(random_lpips=False))


def test_special_characters_are_escaped():
    points = _hand_points()
    points.loc[points["point_id"] == "f1", "label"] = "t=5% & #1_a|b [x] $y"
    tex = latex_table(points)
    assert r"t=5\% \& \#1\_a\textbar{}b {[}x{]} \$y" in tex
    md = markdown_table(points)
    assert r"t=5% & #1\_a\|b [x] $y" in md
    assert {len(r) for r in markdown_rows(md)} == {len(markdown_rows(md)[0])}
