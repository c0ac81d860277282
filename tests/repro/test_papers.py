"""Published tables as data, `repro papers`, `repro compare` (against a fixture table and
between points) and the runner-up check of `repro best`, on a real tiny sweep."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from scipy import stats

from repro.aggregate import tables
from repro.cli import main
from repro.papers import all_papers, get_paper, load_table, PaperError
from repro.papers.compare import compare_run_dir, format_latex, format_markdown, format_text
from repro.store import Store
from repro.sweep import run_sweep
from experiments.spec import Spec
from tests.conftest import tiny_spec_dict

pytestmark = pytest.mark.slow

METHODS = [
    {"name": "first_block_cache", "label": "FBC-fast", "params": {"threshold": 0.3}},
    {"name": "first_block_cache", "sweep": {"threshold": [0.05]}},
]
PROMPTS = ["a red fox in snow", "a lighthouse at night", "a bowl of ramen", "a city street in rain", "a green parrot"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("papers") / "run"
    spec = Spec.model_validate(tiny_spec_dict(run_dir, methods=METHODS, prompts=PROMPTS))
    assert run_sweep(spec).exit_code == 0
    return run_dir


def fixture_table(tmp_path, **changes) -> str:
    table = {
        "name": "fixture-paper", "title": "Fixture Table 1", "citation": "Doe et al., Fixture (2026), Table 1",
        "short": "Doe 2026", "source": {"kind": "quoted", "where": "this test"},
        "model": "tiny Wan twin", "model_id": "tiny:wan",
        "settings": {"height": 16, "width": 16, "num_frames": 5, "num_inference_steps": 50},
        "prompts": "VBench", "hardware": "1x NVIDIA A800",
        "protocol": {"psnr": "pooled_video", "ssim": "gaussian11"},
        "rows": [
            {"label": "baseline", "method": "baseline", "latency_s": 10.0},
            {"label": "FBC-fast", "method": "first_block_cache", "speedup": 1.25, "psnr": 20.0, "ssim": 0.5},
            {"label": "FBC 0.05", "method": "first_block_cache", "params": {"threshold": 0.05}, "latency_s": 8.0},
            {"label": "FBC-other-model", "method": "first_block_cache", "model_id": "black-forest-labs/FLUX.1-dev",
             "speedup": 3.0},
        ],
    }
    table.update(changes)
    path = tmp_path / "fixture.yaml"
    path.write_text(yaml.safe_dump(table, sort_keys=False))
    return str(path)


def point_of(points, label):
    return points[points["method"] == label].iloc[0] if (points["method"] == label).any() else \
        points[points["label"] == label].iloc[0]


def test_shipped_tables_load_and_each_records_its_source():
    papers = all_papers()
    assert {"magcache-table1", "easycache-wan-1.3b", "fbc-pr11180", "magcache-flux", "teacache-flux"} <= set(papers)
    for t in papers.values():
        assert t.citation and t.rows
        assert t.source.commit or t.source.where, t.name
        assert all(r.numbers() for r in t.rows), t.name  # no row without a published number
    mag = get_paper("magcache-table1")
    assert [(r.label, r.speedup, r.psnr) for r in mag.rows][:2] == [("MagCache-slow", 2.14, 23.42),
                                                                    ("MagCache-fast", 2.68, 21.54)]


def test_bad_table_files_get_one_clear_message(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntitle: t\n")
    with pytest.raises(PaperError, match="bad.yaml: citation"):
        load_table(path)
    path.write_text(yaml.safe_dump({**yaml.safe_load(open(fixture_table(tmp_path))), "protocol": {"pnsr": "x"}}))
    with pytest.raises(PaperError, match="unknown field.*pnsr"):
        load_table(path)
    with pytest.raises(PaperError, match="did you mean 'magcache-table1'"):
        get_paper("magcache-tabel1")


def test_compare_prints_the_right_differences_and_flags_mismatched_settings(run_dir, tmp_path):
    cmp, points, _ = compare_run_dir(run_dir, fixture_table(tmp_path))
    by_label = {rc.row.label: rc for rc in cmp.rows}
    fast = point_of(points, "FBC-fast")
    rc = by_label["FBC-fast"]
    assert rc.point_id == fast["point_id"] and rc.how == "label"
    assert rc.cells["psnr"].diff == pytest.approx(fast["psnr"] - 20.0)
    assert rc.cells["speedup"].diff == pytest.approx(fast["speedup"] - 1.25)
    lo, hi = fast["speedup_ci_low"], fast["speedup_ci_high"]
    assert rc.cells["speedup"].inside_ci == (lo <= 1.25 <= hi)
    # params match, and a speedup derived from published latencies (10 / 8), marked as derived
    rc05 = by_label["FBC 0.05"]
    assert rc05.how == "params" and rc05.cells["speedup"].derived
    assert rc05.cells["speedup"].published == pytest.approx(1.25)
    assert by_label["FBC-other-model"].how.startswith("not compared: model black-forest-labs/FLUX.1-dev")
    text = format_text(cmp)
    assert f"{fast['psnr'] - 20.0:+.2f}" in text
    joined = "\n".join(cmp.mismatches)
    assert "num_inference_steps: published 50, ours 6" in joined
    assert "protocol psnr: published pooled_video, ours per_frame_mean" in joined
    assert "hardware: published 1x NVIDIA A800, ours cpu" in joined
    assert "prompts: published VBench" in joined
    assert "protocol not stated by the source: lpips_net, lpips_spatial, averaging, data_range" in joined
    assert "height" not in joined  # agrees: not listed
    md, tex = format_markdown(cmp), format_latex(cmp)
    assert "| FBC-fast |" in md and "num\\_inference\\_steps" in tex and r"\begin{tabular}" in tex


def test_match_flag_overrides_and_bad_match_is_refused(run_dir, tmp_path):
    _, points, _ = compare_run_dir(run_dir, fixture_table(tmp_path))
    other = point_of(points, "first_block_cache")["point_id"]
    cmp, _, _ = compare_run_dir(run_dir, fixture_table(tmp_path), {"FBC-fast": other})
    assert next(r for r in cmp.rows if r.row.label == "FBC-fast").point_id == other
    runner = CliRunner()
    res = runner.invoke(main, ["compare", str(run_dir), "--paper", fixture_table(tmp_path), "--match", "nope=x"])
    assert res.exit_code == 2 and "no such row" in res.output


def test_cli_compare_writes_markdown_latex_and_overlay_figures(run_dir, tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(main, ["compare", str(run_dir), "--paper", fixture_table(tmp_path),
                                    "--format", "markdown", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "| published row |" in res.output
    assert (out / "fixture-paper.md").read_text().startswith("**t vs Fixture Table 1**")
    assert (out / "fixture-paper.tex").is_file()
    assert (out / "fixture-paper" / "pareto_psnr.png").stat().st_size > 1000


def test_overlay_draws_hollow_published_markers_with_their_citation(run_dir, tmp_path, monkeypatch):
    import importlib

    pp = importlib.import_module("paper_figures.pareto_plot")
    points, _ = tables(Store.open_existing(run_dir))
    points.attrs["published"] = [{"label": "X", "citation": "Doe 2026", "speedup": 1.4, "psnr": 25.0}]
    drawn = []
    orig = pp.save_figure
    monkeypatch.setattr(pp, "save_figure", lambda fig, *a, **k: (drawn.append(fig), orig(fig, *a, **k))[1])
    fig = pp.pareto_plot(points, "psnr", tmp_path / "f", formats=("png",))
    ax = drawn[0].axes[0]
    hollow = [ln for ln in ax.lines if ln.get_marker() == "D" and ln.get_markerfacecolor() == "none"]
    assert len(hollow) == 1 and list(hollow[0].get_xdata()) == [1.4]
    assert any("X (Doe 2026)" in t.get_text() for t in ax.texts)
    assert "Doe 2026" in fig.caption


def test_compare_points_matches_scipy_on_the_runs_items(run_dir):
    points, items = tables(Store.open_existing(run_dir))
    a, b = point_of(points, "FBC-fast")["point_id"], point_of(points, "first_block_cache")["point_id"]
    res = CliRunner().invoke(main, ["compare", str(run_dir), "--points", a, b])
    assert res.exit_code == 0, res.output
    ia = items[items.point_id == a].sort_values("prompt_index")
    ib = items[items.point_id == b].sort_values("prompt_index")
    # identical items are inf dB and count as 100 dB in every mean (metrics.PSNR_CAP_DB)
    d = np.minimum(np.asarray(ia["psnr"], float), 100) - np.minimum(np.asarray(ib["psnr"], float), 100)
    line = next(ln for ln in res.output.splitlines() if ln.startswith("psnr"))
    p_wilcoxon = stats.wilcoxon(d).pvalue if np.unique(np.abs(d)).size == d.size else None
    if p_wilcoxon is not None:
        shown = "<0.001" if p_wilcoxon < 0.001 else f"{p_wilcoxon:.3f}"
        assert shown in line
    assert f"{d.mean():+.4g}" in line
    bad = CliRunner().invoke(main, ["compare", str(run_dir), "--points", a, "nope"])
    assert bad.exit_code == 2 and "not a point of this run" in bad.output
    both = CliRunner().invoke(main, ["compare", str(run_dir)])
    assert both.exit_code == 2 and "exactly one of --paper" in both.output


def test_point_table_has_p_values_and_best_reports_the_runner_up(run_dir):
    points, items = tables(Store.open_existing(run_dir))
    cached = points[points["method"] != "baseline"]
    assert cached["speedup_p"].notna().all() and points[points["method"] == "baseline"]["speedup_p"].isna().all()
    res = CliRunner().invoke(main, ["best", str(run_dir)])
    assert res.exit_code == 0, res.output
    # 5 items: the exact Wilcoxon test cannot reach p < 0.05, so the winner is never called significant
    assert re.search(r"note: the winner is NOT significantly faster than the runner-up .*n=5 items", res.output)


def test_papers_lists_every_table():
    res = CliRunner().invoke(main, ["papers"])
    assert res.exit_code == 0
    for name in all_papers():
        assert name in res.output
    one = CliRunner().invoke(main, ["papers", "--name", "easycache-wan-1.3b"])
    assert "25.24" in one.output and "033e4fa" in one.output
    bad = CliRunner().invoke(main, ["papers", "--name", "nope"])
    assert bad.exit_code == 2 and "Known:" in bad.output


def test_rescoring_under_another_protocol_keeps_both(run_dir, tmp_path):
    import shutil

    from experiments.media import read_frames

    copy = tmp_path / "rescored"
    shutil.copytree(run_dir, copy)
    res = CliRunner().invoke(main, ["score", str(copy), "--set", "metrics.protocol.psnr=pooled_video"])
    assert res.exit_code == 0, res.output
    store = Store.open_existing(copy)
    scores = store.scores()
    cached = [g for g in store.generations(role="cached", status="ok")]
    assert all({"psnr", "psnr@pooled_video"} <= set(scores[g["key"]]) for g in cached)
    points, items = tables(store)
    gens = {g["key"]: g for g in store.generations()}
    row = items[(items.role == "cached") & np.isfinite(items["psnr@default"])].iloc[0]
    a = read_frames(copy / gens[row.key]["media_dir"]).astype(np.float64) / 255
    b = read_frames(copy / gens[row.quality_baseline_key]["media_dir"]).astype(np.float64) / 255
    assert row.psnr == pytest.approx(10 * np.log10(1 / np.mean((a - b) ** 2)), rel=1e-9)  # pooled, by hand
    per_frame = 10 * np.log10(1 / ((a - b) ** 2).reshape(a.shape[0], -1).mean(axis=1))
    assert row["psnr@default"] == pytest.approx(np.mean(np.minimum(per_frame, 100)), rel=1e-9)
    assert "psnr@default" in points.columns
    cmp, _, _ = compare_run_dir(copy, fixture_table(tmp_path))
    assert not any(m.startswith("protocol psnr") for m in cmp.mismatches)  # now the same protocol as the table


def test_bad_protocol_in_a_spec_exits_2(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / "r", metrics={"names": ["psnr"], "protocol": {"psnr": "pooled"}})))
    res = CliRunner().invoke(main, ["validate", str(path)])
    assert res.exit_code == 2 and "per_frame_mean, pooled_video" in res.output
    path.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / "r", metrics={"names": ["psnr"], "protocol": {"pnsr": 1}})))
    res = CliRunner().invoke(main, ["validate", str(path)])
    assert res.exit_code == 2 and "did you mean 'psnr'" in res.output
    plain = Spec.model_validate(tiny_spec_dict(tmp_path / "r"))
    explicit = Spec.model_validate(tiny_spec_dict(tmp_path / "r", metrics={
        "names": ["psnr", "ssim"], "device": "cpu", "protocol": {"psnr": "per_frame_mean", "data_range": 1.0}}))
    assert explicit.metrics.protocol == {} and explicit.spec_hash() == plain.spec_hash()  # defaults change nothing


def test_compare_points_renders_markdown_and_latex_and_refuses_one_point_twice(run_dir):
    points, _ = tables(Store.open_existing(run_dir))
    a, b = point_of(points, "FBC-fast")["point_id"], point_of(points, "first_block_cache")["point_id"]
    md = CliRunner().invoke(main, ["compare", str(run_dir), "--points", a, b, "--format", "markdown"])
    assert md.exit_code == 0 and "| metric | n |" in md.output and "| speedup | 5 |" in md.output
    tex = CliRunner().invoke(main, ["compare", str(run_dir), "--points", a, b, "--format", "latex"])
    assert tex.exit_code == 0 and r"\begin{tabular}" in tex.output and r"$\times$" in tex.output
    same = CliRunner().invoke(main, ["compare", str(run_dir), "--points", a, a])
    assert same.exit_code == 2 and "same point" in same.output
