"""Degenerate sweeps render without crashing and say what is missing or failed."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from paper_figures import make_all, pareto_plot, pareto_plots, skip_heatmap, threshold_table

from .helpers import markdown_rows
from .synthetic import make_calibrations, make_items, make_points


def _run(points, tmp_path, items=None, calibrations=None):
    figures = make_all(points, items, calibrations, tmp_path / "out", formats=("png",))
    stems = [f.path_stem for f in figures]
    for f in figures:
        for p in f.files:
            assert p.exists(), p
    assert (tmp_path / "out" / "index.md").exists()
    return figures, stems


def test_failed_point_noted_everywhere(tmp_path):
    points = make_points(fbc=(0.1, 0.2), mag=())
    figures, _ = _run(points, tmp_path)
    for f in figures:
        if f.path_stem in ("table", "pareto_lpips", "time_breakdown", "skip_heatmap"):
            assert "first_block_cache t=0.3" in f.caption and "CUDA out of memory" in f.caption, f.path_stem
    assert "failed<sup>1</sup>" in (tmp_path / "out" / "table.md").read_text()


def test_single_point(tmp_path):
    points = make_points(fbc=(0.1,), mag=(), with_failed=False)
    items = make_items(points, tmp_path / "media", n_prompts=1, seeds=(0,))
    _, stems = _run(points, tmp_path, items, make_calibrations())
    assert {"table", "pareto_lpips", "grid_p0_s0", "time_breakdown", "skip_heatmap"} <= set(stems)
    md = (tmp_path / "out" / "table.md").read_text()
    assert "**" not in md  # nothing to compare against: no "best"


def test_one_method_only(tmp_path):
    points = make_points(fbc=(0.1, 0.2), mag=())
    items = make_items(points, tmp_path / "media", kind="video", n_prompts=1, seeds=(0,), n_frames=3)
    _, stems = _run(points, tmp_path, items)
    assert "grid_video_p0_s0" in stems and "mag_ratios" not in stems


def test_all_nan_metric_is_skipped(tmp_path):
    points = make_points(fbc=(0.1, 0.2), mag=(0.1,))
    for col in ("clip_delta", "clip_delta_ci_low", "clip_delta_ci_high", "ssim", "psnr"):
        points[col] = math.nan
    stems = [f.path_stem for f in pareto_plots(points, tmp_path, formats=("png",))]
    assert stems == ["pareto_lpips"]
    assert pareto_plot(points, "ssim", tmp_path) is None
    table = threshold_table(points, tmp_path)
    assert "Not computed: PSNR (dB), SSIM, ΔCLIP score." in table.caption
    assert not any("CLIP" in h for h in markdown_rows(table.file("md").read_text())[0])


def test_baseline_only(tmp_path):
    points = make_points(fbc=(), mag=(), with_failed=False)
    items = make_items(points, tmp_path / "media", n_prompts=1, seeds=(0,))
    figures, stems = _run(points, tmp_path, items)
    assert not any(s.startswith("pareto") for s in stems)
    assert "table" in stems and "grid_p0_s0" in stems
    rows = markdown_rows((tmp_path / "out" / "table.md").read_text())
    assert len(rows) == 3 and rows[2][0] == "baseline"


def test_only_failed_points(tmp_path):
    points = make_points(fbc=(), mag=())
    items = make_items(points, tmp_path / "media", n_prompts=1, seeds=(0,))
    figures, stems = _run(points, tmp_path, items)
    table = next(f for f in figures if f.path_stem == "table")
    assert "CUDA out of memory" in table.caption
    grid = next(f for f in figures if f.path_stem == "grid_p0_s0")
    assert "t=0.3" in grid.caption


def test_empty_points_and_no_items(tmp_path):
    points = make_points().iloc[0:0]
    _, stems = _run(points, tmp_path, items=pd.DataFrame(), calibrations=[])
    assert stems == ["table"]


def test_partial_point_is_flagged(tmp_path):
    points = make_points(fbc=(0.1, 0.2), mag=())
    points.loc[points["point_id"] == "fbc1", ["status", "n_items"]] = ["partial", 3]
    md = threshold_table(points, tmp_path).file("md").read_text()
    assert "t=0.2<sup>1</sup>" in md and "partial" in md and "3 items" in md
    assert "Partial" in pareto_plot(points, "lpips", tmp_path, formats=("png",)).caption


def test_identical_psnr_point(tmp_path):
    points = make_points(fbc=(0.0, 0.1), mag=(), with_failed=False)
    points.loc[points["point_id"] == "fbc0", "psnr"] = math.inf
    psnr = pareto_plot(points, "psnr", tmp_path, formats=("png",))
    assert "Identical to baseline" in psnr.caption and "t=0" in psnr.caption
    rows = markdown_rows(threshold_table(points, tmp_path).file("md").read_text())
    j = next(i for i, h in enumerate(rows[0]) if h.startswith("PSNR"))
    assert rows[3][j] == "**∞**"


def test_points_from_csv(tmp_path):
    """An exported CSV loses attrs and turns types into strings; defaults take over."""
    original = make_points(fbc=(0.1, 0.2), mag=(0.1,))
    points = pd.read_csv(io.StringIO(original.to_csv(index=False)))
    assert not points.attrs
    stems = [f.path_stem for f in pareto_plots(points, tmp_path, formats=("png",))]
    assert stems == ["pareto_lpips", "pareto_psnr", "pareto_ssim", "pareto_clip_delta"]
    original.attrs = {}
    assert threshold_table(points, tmp_path / "csv").file("md").read_text() == threshold_table(
        original, tmp_path / "df").file("md").read_text()


@pytest.mark.parametrize("bad", [None, "", "not json", "{}"])
def test_unusable_step_computed(tmp_path, bad):
    points = make_points(fbc=(0.1,), mag=(), with_failed=False)
    points.loc[points["point_id"] == "fbc0", "step_computed"] = bad
    assert skip_heatmap(points, tmp_path, formats=("png",)) is None  # nothing to draw, no crash


def test_partly_bad_step_computed(tmp_path):
    points = make_points(fbc=(0.1, 0.2), mag=(), with_failed=False)
    points.loc[points["point_id"] == "fbc0", "step_computed"] = '[1, "x", null, 0.5]'  # shorter and holes
    assert skip_heatmap(points, tmp_path, formats=("png",)) is not None
