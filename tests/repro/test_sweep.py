"""`repro sweep` end to end on the tiny Wan twin: one baseline per item, resume, failures, kill -9."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments.errors import RunLocked, SpecError
from experiments.media import read_frames
from experiments.spec import Spec
from repro.lock import RunLock
from repro.store import Store
from repro.sweep import run_sweep
from tests.conftest import ROOT, tiny_spec_dict

pytestmark = pytest.mark.slow

METHODS = [
    {"name": "first_block_cache", "sweep": {"threshold": [0.0, 0.3]}},
    {"name": "mag_cache", "params": {"max_skip_steps": 2, "retention_ratio": 0.0}, "sweep": {"threshold": [0.5]}},
]


def spec_for(run_dir: Path, **changes) -> Spec:
    return Spec.model_validate(tiny_spec_dict(run_dir, methods=METHODS, **changes))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sweep") / "run"
    spec = spec_for(run_dir)
    return spec, run_sweep(spec), None


def test_one_baseline_per_prompt_seed(finished):
    spec, outcome, _ = finished
    assert outcome.exit_code == 0 and outcome.failed == 0
    store = Store(spec.run_dir)
    baselines = store.generations(role="baseline")
    cached = store.generations(role="cached")
    items = len(spec.prompts) * len(spec.seeds)
    assert len(baselines) == items
    assert len({(b["prompt_index"], b["seed"]) for b in baselines}) == items
    assert len(cached) == 3 * items  # FBC x2 + MagCache x1
    assert all(c["quality_baseline_key"] in {b["key"] for b in baselines} for c in cached)
    assert all(g["status"] == "ok" for g in baselines + cached)


def test_threshold_zero_reproduces_baseline_bit_for_bit(finished):
    spec, _, _ = finished
    store = Store(spec.run_dir)
    scores = store.scores()
    zero = [g for g in store.generations(role="cached")
            if g["method"] == "first_block_cache" and g["params"]["threshold"] == 0.0]
    assert len(zero) == len(spec.prompts) * len(spec.seeds)  # the sweep has such generations to check
    for g in zero:
        base = store.generation(g["quality_baseline_key"])
        assert np.array_equal(read_frames(spec.run_dir / g["media_dir"]), read_frames(spec.run_dir / base["media_dir"]))
        assert scores[g["key"]]["psnr"]["value"] == float("inf")
        assert scores[g["key"]]["ssim"]["value"] == pytest.approx(1.0)


def test_cached_videos_are_stored_as_their_difference_from_their_own_baseline_and_read_back_exactly(finished):
    """Generated after their baseline in the same session, cached videos take the difference where it is smaller
    (on these clips: always); decoded, they give the very pixels the sweep scored."""
    import metrics
    from experiments.media import DELTA_FORMAT, media_info

    spec, _, _ = finished
    store = Store(spec.run_dir)
    scores = store.scores()
    for g in store.generations(role="cached"):
        base = store.generation(g["quality_baseline_key"])
        info = media_info(spec.run_dir / g["media_dir"])
        assert info.format == DELTA_FORMAT and info.base == os.path.basename(base["media_dir"]), g["key"]
        psnr = metrics.psnr(read_frames(spec.run_dir / g["media_dir"]), read_frames(spec.run_dir / base["media_dir"]))
        assert np.array_equal(np.asarray(psnr, dtype=float), np.asarray(scores[g["key"]]["psnr"]["per_frame"],
                                                                         dtype=float)), g["key"]


def test_compute_fraction_below_one_only_when_skipping(finished):
    from repro.aggregate import tables

    spec, _, _ = finished
    points, items = tables(Store(spec.run_dir))
    by_label = {(r["method"], r["label"]): r for r in points.to_dict("records")}
    assert by_label[("baseline", "baseline")]["compute_fraction"] == 1.0
    assert by_label[("first_block_cache", "t=0.0")]["compute_fraction"] == 1.0
    assert by_label[("first_block_cache", "t=0.3")]["compute_fraction"] < 1.0
    assert by_label[("mag_cache", "t=0.5")]["compute_fraction"] < 1.0
    assert by_label[("first_block_cache", "t=0.3")]["psnr"] < 100


def test_magcache_calibrated_once_with_both_branches(finished):
    spec, _, _ = finished
    cals = Store(spec.run_dir).calibrations()
    assert len(cals) == 1
    assert set(cals[0]["ratios"]) == {"cond", "uncond"} and cals[0]["used"] == "cond"
    assert len(cals[0]["ratios"]["cond"]) == spec.generation.num_inference_steps


def test_rerun_generates_nothing_and_loads_nothing(finished, monkeypatch):
    """A finished sweep run again loads no pipeline and builds no metric network (its speed: benchmarks/)."""
    import experiments.pipelines
    import repro.scoring
    import repro.sweep

    spec, _, _ = finished

    def refuse(*args, **kwargs):
        raise AssertionError("a finished sweep's re-run loaded a model or a metric network")

    monkeypatch.setattr(experiments.pipelines, "load_pipeline", refuse)
    monkeypatch.setattr(repro.scoring, "build_scorer", refuse)
    monkeypatch.setattr(repro.sweep, "build_scorer", refuse)
    again = run_sweep(spec)
    assert again.generated == 0 and again.exit_code == 0
    assert again.skipped == len(Store(spec.run_dir).generations())


def test_added_threshold_reuses_baselines_and_calibration(finished, tmp_path):
    spec, _, _ = finished
    run_dir = tmp_path / "run"  # a copy: the shared run stays as its spec made it, whatever the test order
    shutil.copytree(spec.run_dir, run_dir)
    methods = [dict(METHODS[0], sweep={"threshold": [0.0, 0.3, 0.6]}), METHODS[1]]
    wider = Spec.model_validate(tiny_spec_dict(run_dir, methods=methods))
    outcome = run_sweep(wider)
    items = len(spec.prompts) * len(spec.seeds)
    assert outcome.generated == items  # only the new threshold's cached generations
    assert len(Store(run_dir).calibrations()) == 1


def test_failed_point_is_isolated_and_retried_alone(tmp_path):
    # an invalid module-name pattern passes validation (the config accepts any string) and raises in the hook
    methods = [METHODS[0], {"name": "taylorseer_cache", "params": {"cache_identifiers": ["(unclosed"]}}]
    spec = Spec.model_validate(tiny_spec_dict(tmp_path / "run", methods=methods))
    outcome = run_sweep(spec)
    assert outcome.exit_code == 1
    store = Store(spec.run_dir)
    failed = store.generations(status="failed")
    assert failed and {g["method"] for g in failed} == {"taylorseer_cache"}
    assert all("error" in g["error"].lower() for g in failed)
    assert all(g["status"] == "ok" for g in store.generations() if g["method"] != "taylorseer_cache")
    before = {g["key"]: g["attempts"] for g in store.generations()}
    retry = run_sweep(spec, retry_failed=True)
    assert retry.exit_code == 1 and retry.generated == 0
    after = {g["key"]: g["attempts"] for g in Store(spec.run_dir).generations()}
    for key, attempts in after.items():
        assert attempts == before[key] + (1 if key in {g["key"] for g in failed} else 0)


def test_second_sweep_on_same_dir_is_refused(tmp_path):
    spec = spec_for(tmp_path / "run")
    with RunLock(spec.run_dir):
        with pytest.raises(RunLocked, match="being written by another sweep"):
            run_sweep(spec)


def test_dry_run_writes_nothing(tmp_path, capsys):
    spec = spec_for(tmp_path / "run")
    run_sweep(spec, dry_run=True)
    assert "2 baseline generations, 6 cached generations" in capsys.readouterr().err
    assert not spec.run_dir.exists()


def test_only_restricts_to_one_method(tmp_path):
    spec = spec_for(tmp_path / "run")
    outcome = run_sweep(spec, only=("method=first_block_cache",))
    store = Store(spec.run_dir)
    assert {g["method"] for g in store.generations(role="cached")} == {"first_block_cache"}
    assert outcome.generated == 2 + 4
    with pytest.raises(SpecError, match="matches no point"):
        run_sweep(spec, only=("method=nope",))


def _count_rows(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    except sqlite3.Error:
        return 0


def _start_sweep(spec_path: Path) -> subprocess.Popen:
    # SIGINT as a terminal's Ctrl-C finds it: a test run started in the background inherits SIGINT ignored,
    # and a sweep started so keeps ignoring it (by design), which would make the Ctrl-C test meaningless.
    return subprocess.Popen([sys.executable, "-m", "repro.cli", "sweep", str(spec_path)], cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_rows(db: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while _count_rows(db) < n:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "sweep made no progress"
        time.sleep(0.01)


def test_sigkill_mid_sweep_then_resume_matches_uninterrupted(finished, tmp_path):
    spec, _, _ = finished
    run_dir = tmp_path / "killed"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec_dict(run_dir, methods=METHODS)))
    proc = _start_sweep(spec_path)
    _wait_rows(run_dir / "results.sqlite", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # killed mid-item: the first item (baseline + 3 cached) has its baseline and some, not all, of its variants
    with sqlite3.connect(run_dir / "results.sqlite") as con:
        done = con.execute("SELECT prompt_index, role FROM generations").fetchall()
    assert (0, "baseline") in done and 2 <= len(done) < 4 and {p for p, _ in done} == {0}
    from click.testing import CliRunner

    from repro.cli import main

    resumed = CliRunner().invoke(main, ["sweep", str(spec_path)])  # the kill is what needed a process
    assert resumed.exit_code == 0, resumed.output[-2000:]
    reference = Store(spec.run_dir)
    ref_scores, got_scores = reference.scores(), Store(run_dir).scores()
    ref_keys = {g["key"] for g in reference.generations() if g["method"] != "first_block_cache"
                or g["params"]["threshold"] in (0.0, 0.3)}
    got = Store(run_dir).generations()
    assert {g["key"] for g in got} == ref_keys
    assert all(g["attempts"] == 1 and g["status"] == "ok" for g in got)
    for key in ref_keys:
        for metric in spec.metrics.names:
            if metric in ref_scores.get(key, {}):
                assert got_scores[key][metric]["value"] == pytest.approx(ref_scores[key][metric]["value"], abs=1e-6)
    assert not list((run_dir / "media").glob(".tmp-*"))


def test_ctrl_c_stops_after_current_generation(tmp_path):
    run_dir = tmp_path / "interrupted"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec_dict(run_dir, methods=METHODS)))
    proc = _start_sweep(spec_path)
    _wait_rows(run_dir / "results.sqlite", 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert b"Traceback" not in err
    rows = _count_rows(run_dir / "results.sqlite")
    assert 1 <= rows < 8
    assert all((run_dir / g["media_dir"]).is_dir() for g in Store(run_dir).generations(status="ok"))


def test_reports_on_a_finished_sweep(finished, tmp_path):
    """pareto, best, export and figures as a user calls them, on the finished run directory."""
    import pandas as pd
    from click.testing import CliRunner

    from repro.cli import main

    spec, _, _ = finished
    run = str(spec.run_dir)
    cli = CliRunner()
    out = cli.invoke(main, ["pareto", run, "--metric", "ssim"])
    assert out.exit_code == 0 and "Pareto front: speedup vs ssim" in out.output
    best = cli.invoke(main, ["best", run, "--min", "ssim=0.0"])
    assert best.exit_code == 0, best.output
    assert "pipe.transformer.enable_cache(" in best.output and "- name:" in best.output
    from repro.aggregate import tables

    mag = [p for p in tables(Store(spec.run_dir))[0].to_dict("records") if p["method"] == "mag_cache"]
    assert mag and all("mag_ratios=[" in p["python_call"] for p in mag)  # the calibrated ratios, ready to run
    assert cli.invoke(main, ["best", run, "--min", "ssim=2"]).exit_code == 1
    for fmt in ("csv", "parquet", "jsonl"):
        res = cli.invoke(main, ["export", run, "--format", fmt, "--out", str(tmp_path / fmt)])
        assert res.exit_code == 0, res.output
    points = pd.read_csv(tmp_path / "csv" / "points.csv")
    items = pd.read_parquet(tmp_path / "parquet" / "items.parquet")
    assert {"speedup", "speedup_ci_low", "compute_fraction", "ssim", "spec_hash", "version_diffusers"} <= set(points.columns)
    assert len(items) == len(Store(spec.run_dir).generations())
    first = cli.invoke(main, ["figures", run, "--out", str(tmp_path / "f1"), "--format", "png,svg"])
    second = cli.invoke(main, ["figures", run, "--out", str(tmp_path / "f2"), "--format", "png,svg"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output
    files = sorted(p.name for p in (tmp_path / "f1").iterdir())
    assert {"index.md", "table.md", "table.tex", "pareto_ssim.png", "skip_heatmap.svg", "mag_ratios.png",
            "frame_curves.png"} <= set(files)
    assert "Quality over the clip" in (tmp_path / "f1" / "index.html").read_text()  # where in the clip, per point
    for name in files:
        if name.endswith((".png", ".svg", ".md", ".tex")):
            assert (tmp_path / "f1" / name).read_bytes() == (tmp_path / "f2" / name).read_bytes(), name
    assert cli.invoke(main, ["figures", run, "--format", "gif"]).exit_code == 2


def test_rescoring_adds_a_metric_later(finished):
    from click.testing import CliRunner

    from repro.cli import main

    spec, _, _ = finished
    res = CliRunner().invoke(main, ["score", str(spec.run_dir), "--set", "metrics.names=[psnr, ssim, clip]",
                                    "--set", "metrics.allow_random_weights=true"])
    assert res.exit_code == 0, res.output
    scores = Store(spec.run_dir).scores()
    ok = Store(spec.run_dir).generations(status="ok")
    assert all("clip" in scores[g["key"]] for g in ok)
    assert all(scores[g["key"]]["clip"]["label"].endswith("[random weights]") for g in ok)


def test_keep_media_n_keeps_baselines_and_the_first_items_and_scores_the_rest_from_memory(tmp_path):
    """output.keep_media: 1: every baseline and the first item's cached outputs keep their lossless media; the
    other cached generations are scored from memory, stored without media, trusted on re-runs (not
    regenerated), shown in the tables, and named by `repro score` as not rescorable."""
    from click.testing import CliRunner

    from repro.aggregate import tables
    from repro.cli import main

    spec = Spec.model_validate(tiny_spec_dict(tmp_path / "run", seeds=[0],
                                              output={"dir": str(tmp_path / "run"), "mp4": False, "keep_media": 1}))
    assert run_sweep(spec).exit_code == 0
    store = Store(spec.run_dir)
    gens = store.generations()
    first = min(g["prompt_index"] for g in gens)
    kept = {g["key"] for g in gens if g["media_dir"]}
    assert kept == {g["key"] for g in gens if g["role"] == "baseline" or g["prompt_index"] == first}
    dropped = [g for g in gens if g["key"] not in kept]
    assert dropped and all(g["status"] == "ok" and g["mp4"] is None for g in dropped)
    assert len(list((spec.run_dir / "media").iterdir())) == len(kept)
    scores = store.scores()
    assert all({"psnr", "ssim"} <= set(scores[g["key"]]) for g in dropped)  # scored from memory
    zero = next(g for g in dropped if g["params"]["threshold"] == 0.0)
    assert scores[zero["key"]]["psnr"]["value"] == float("inf")  # identical to its baseline: really scored
    points, items = tables(store)
    assert (items["status"] == "ok").all() and len(items) == len(gens)
    store.close()
    again = run_sweep(spec)
    assert again.generated == 0 and again.exit_code == 0  # trusted: nothing regenerated
    out = CliRunner().invoke(main, ["score", str(spec.run_dir), "--set", "metrics.names=[psnr]"])
    assert out.exit_code == 0 and f"{len(dropped)} generation(s) kept no media" in out.output, out.output
