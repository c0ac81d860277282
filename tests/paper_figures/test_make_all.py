"""make_all end to end: files per format, sizes, determinism, index page, package boundaries."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from PIL import Image

import paper_figures
from paper_figures.style import COLUMN_WIDTH_IN, DPI, PAGE_WIDTH_IN

from .conftest import ALL_FORMATS

PKG = Path(paper_figures.__file__).parent
COLUMN_PX = round(COLUMN_WIDTH_IN * DPI)


def test_expected_outputs(video_run):
    stems = [f.path_stem for f in video_run.figures]
    assert stems == [
        "table", "pareto_lpips", "pareto_psnr", "pareto_ssim", "pareto_clip_delta", "time_breakdown",
        "skip_heatmap", "mag_ratios", "grid_p0_s0", "grid_video_p0_s0",
    ]
    assert {f.kind for f in video_run.figures} == {"table", "figure", "video"}


def test_every_figure_in_every_format_and_png_size(video_run):
    for fig in video_run.figures:
        if fig.kind != "figure":
            continue
        assert sorted(p.suffix for p in fig.files) == sorted(f".{f}" for f in ALL_FORMATS), fig.path_stem
        for p in fig.files:
            assert p.exists() and p.stat().st_size > 0, p
            assert p.parent == video_run.out
        with Image.open(fig.file("png")) as im:
            im.load()
            w, h = im.size
        if fig.path_stem.startswith("grid"):
            assert 0 < w <= round(PAGE_WIDTH_IN * DPI) and h <= round(9.0 * DPI) + 1
        else:
            assert w == COLUMN_PX, (fig.path_stem, w)  # single-column width, exactly
        if fig.path_stem.startswith("pareto"):
            assert (w, h) == (COLUMN_PX, round(2.6 * DPI))


def test_vector_files_are_real(video_run):
    pdf = video_run.by_stem("pareto_lpips").file("pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    assert b"/Type3" not in pdf and b"/Subtype /Type3" not in pdf  # publishers reject Type 3 fonts
    svg = video_run.by_stem("pareto_lpips").file("svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg


def test_byte_identical_across_runs(video_runs):
    a, b = video_runs
    files_a = sorted(p.name for p in a.out.iterdir() if p.is_file())
    files_b = sorted(p.name for p in b.out.iterdir() if p.is_file())
    assert files_a == files_b
    checked = [n for n in files_a if n.rsplit(".", 1)[-1] in ("png", "svg", "pdf", "md", "tex")]
    assert {n.rsplit(".", 1)[-1] for n in checked} == {"png", "svg", "pdf", "md", "tex"}
    different = [n for n in checked if (a.out / n).read_bytes() != (b.out / n).read_bytes()]
    assert different == []


def test_no_dates_or_versions_in_outputs(video_run):
    for fig in video_run.figures:
        for p in fig.files:
            if p.suffix in (".pdf", ".svg", ".png"):
                data = p.read_bytes()
                assert b"CreationDate" not in data, p
                assert not re.search(rb"Matplotlib v?\d|matplotlib\.org|<dc:date>", data), p


def test_index_page_links_everything(video_run):
    index = (video_run.out / "index.md").read_text(encoding="utf-8")
    for fig in video_run.figures:
        assert f"## {fig.path_stem}" in index
        assert " ".join(fig.caption.split())[:40] in index.replace("\\*", "*")
        if fig.kind == "figure":
            assert f"]({fig.file('png').name})" in index
    # Embedded images use relative links that resolve from the index's folder.
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", index):
        assert not Path(link).is_absolute() and (video_run.out / link).exists(), link
    # The table is inlined and the .tex linked.
    assert "| Method | Setting |" in index and "](table.tex)" in index
    assert "](grid_video_p0_s0.mp4)" in index


def test_write_index_without_figures(tmp_path):
    path = paper_figures.write_index([], tmp_path)
    assert path == tmp_path / "index.md" and "No figures" in path.read_text()


#: the run directory's frame format (torch-free): the one way to read the media paths the tables name
MEDIA_FORMAT = "experiments.media"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names if a.name != MEDIA_FORMAT}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == MEDIA_FORMAT or (node.module == "experiments"
                                               and [a.name for a in node.names] == ["media"]):
                continue
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(PKG.glob("*.py")), ids=lambda p: p.name)
def test_package_stays_independent(path):
    # Works from exported tables and media paths only: no store, no experiment code (the frame format aside),
    # no database driver.
    assert not _imports(path) & {"repro", "experiments", "sqlite3", "sqlalchemy", "wandb", "torch"}


def test_the_frame_format_it_reads_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, paper_figures.frames, paper_figures.html_report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent)
    assert out.stdout.strip() == "False", out.stderr
