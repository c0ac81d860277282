"""`repro tune`: bisection on synthetic curves, gates at 95% confidence, the optuna fallback for a plugin,
ranges in the spec, and resume after kill -9."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from experiments.spec import Spec
from repro.cli import main
from repro.pareto import meets_gates
from repro.store import Store
from repro.tune import Bisection, MonotoneSearch, Outcome, Space, rank_key, run_rounds
from tests.conftest import ROOT, tiny_spec_dict

LPIPS_GATE = [("lpips", "max", 0.1)]
THRESHOLDS = tuple(round(0.025 * k, 3) for k in range(21))  # 0.0 .. 0.5, the benchmark's resolution


def _space(axes: dict, primary: str | None = "threshold") -> Space:
    return Space("m", "first_block_cache", {}, {k: tuple(v) for k, v in axes.items()}, frozenset({"threshold"}),
                 primary)


def _measured(lpips: float, halfwidth: float, compute: float) -> Outcome:
    """A synthetic measurement: mean LPIPS with a 95% interval, checked by the real gate function."""
    row = {"lpips": lpips, "lpips_ci_low": lpips - halfwidth, "lpips_ci_high": lpips + halfwidth,
           "compute_fraction": compute, "status": "ok"}
    return Outcome(meets_gates(row, LPIPS_GATE, confident=True), compute, row)


# -- bisection on a synthetic quality curve ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 21, 64])
def test_bisection_finds_every_boundary_exactly_in_log_evaluations(n):
    for last_feasible in range(-1, n):
        b, evaluated = Bisection(n), []
        while (i := b.next()) is not None:
            evaluated.append(i)
            b.record(i, i <= last_feasible)
        assert b.answer == (last_feasible if last_feasible >= 0 else None)
        assert len(evaluated) <= math.ceil(math.log2(n + 1)) and len(set(evaluated)) == len(evaluated)


def test_monotone_search_on_a_synthetic_curve_gives_the_exact_answer_and_evaluations():
    # LPIPS = 0.02 + 0.3 t (interval +- 0.004): the 95% bound meets 0.1 up to t = 0.25 (0.099) and fails from
    # 0.275 (0.1065); the compute fraction 1 - t falls as t grows
    curve = {t: _measured(0.02 + 0.3 * t, 0.004, 1 - t) for t in THRESHOLDS}
    search = MonotoneSearch(_space({"threshold": THRESHOLDS}), LPIPS_GATE)
    asked: list[float] = []

    def evaluate(todo):
        asked.extend(s["threshold"] for _, s in todo)
        return [curve[s["threshold"]] for _, s in todo]

    rounds = run_rounds({"m": search}, evaluate)
    best = search.candidates()[0]
    assert best[0] == {"threshold": 0.25}
    # bracket (-1, 21): 10 -> feasible, 15 -> not, 12 -> not, 11 -> not: 4 of the grid's 21
    assert asked == [0.25, 0.375, 0.3, 0.275] and rounds == 4 and search.evaluated == 4


def test_the_mean_alone_would_accept_a_setting_the_95_percent_bound_refuses():
    wide = _measured(0.08, 0.04, 0.5)
    assert meets_gates(wide.row, LPIPS_GATE) and not wide.feasible


def test_secondary_axes_are_enumerated_and_the_compute_fraction_drops_a_combination_that_cannot_win():
    # retention r in {0.1, 0.5}: r = 0.5 keeps half the steps (compute >= 0.5) and still fails the gate at the
    # first midpoint, computing more (0.875) than r = 0.1 does there while feasible (0.775): it cannot be faster
    def model(t, r):
        lpips = 0.02 + (0.19 if r == 0.1 else 2.0) * t
        return _measured(lpips, 0.0, r + (1 - r) * (1 - t))

    space = Space("mag", "mag_cache", {}, {"threshold": THRESHOLDS, "retention_ratio": (0.1, 0.5)},
                  frozenset({"threshold"}), "threshold")
    search = MonotoneSearch(space, LPIPS_GATE)
    run_rounds({"mag": search}, lambda todo: [model(s["threshold"], s["retention_ratio"]) for _, s in todo])
    assert list(search.pruned) == [1] and "0.875 >= 0.775" in search.pruned[1]
    # r = 0.1 alone: feasible while 0.02 + 0.19 t <= 0.1, i.e. up to t = 0.4 (index 16)
    assert search.candidates()[0][0] == {"threshold": 0.4, "retention_ratio": 0.1}
    grid = {(t, r): model(t, r) for t in THRESHOLDS for r in (0.1, 0.5)}
    fastest = min((k for k, o in grid.items() if o.feasible), key=lambda k: rank_key(grid[k], LPIPS_GATE, k[0]))
    assert fastest == (0.4, 0.1)
    assert search.evaluated == 1 + 5  # r = 0.5 once, r = 0.1's bisection; a grid has 42 settings


def test_confirmation_on_every_item_continues_the_bisection_when_it_disagrees():
    search = MonotoneSearch(_space({"threshold": THRESHOLDS}), LPIPS_GATE)
    few = {t: _measured(0.3 * t, 0.0, 1 - t) for t in THRESHOLDS}  # feasible up to 0.325 on a few items
    run_rounds({"m": search}, lambda todo: [few[s["threshold"]] for _, s in todo])
    assert search.candidates()[0][0] == {"threshold": 0.325}
    every = {t: _measured(0.3 * t + 0.035, 0.0, 1 - t) for t in THRESHOLDS}  # every item: up to 0.2 only
    confirmation = search.confirmation()
    asked: list[list[float]] = []

    def evaluate(todo):
        asked.append([s["threshold"] for _, s in todo])
        return [every[s["threshold"]] for _, s in todo]

    run_rounds({"m": confirmation}, evaluate)
    assert confirmation.chosen()[0] == {"threshold": 0.2}
    # the neighbours first (all fail), then bisection below them on every item: (-1, 12) -> 5, 8, 10, 9
    assert asked == [[0.3, 0.325, 0.35], [0.125], [0.2], [0.25], [0.225]]


def test_on_a_compute_plateau_the_confirmation_prefers_the_equally_fast_neighbour_of_better_quality():
    # 0.225 and 0.25 skip the same work (compute 0.6); 0.225 has the lower LPIPS: a grid ranks it first
    curve = {t: _measured(0.02 + 0.3 * t, 0.004, 0.6 if t in (0.225, 0.25) else 1 - t) for t in THRESHOLDS}
    search = MonotoneSearch(_space({"threshold": THRESHOLDS}), LPIPS_GATE)
    run_rounds({"m": search}, lambda todo: [curve[s["threshold"]] for _, s in todo])
    assert search.candidates()[0][0] == {"threshold": 0.25}
    confirmation = search.confirmation()
    run_rounds({"m": confirmation}, lambda todo: [curve[s["threshold"]] for _, s in todo])
    assert confirmation.chosen()[0] == {"threshold": 0.225}


def test_a_combination_the_confirmation_moved_down_lets_the_next_one_be_confirmed_and_win():
    # on a few items retention 0.1 looks fastest (feasible up to 0.5, compute 0.55 there vs 0.65 for 0.3); on
    # every item 0.1 only holds up to 0.125 (compute 0.8875), so 0.3's answer is confirmed too, and wins
    def few(t, r):
        return _measured(0.19 * t, 0.0, r + (1 - r) * (1 - t))

    def every(t, r):
        return _measured(0.02 + 0.6 * t if r == 0.1 else 0.18 * t + 0.005, 0.0, r + (1 - r) * (1 - t))

    space = Space("mag", "mag_cache", {}, {"threshold": THRESHOLDS, "retention_ratio": (0.1, 0.3)},
                  frozenset({"threshold"}), "threshold")
    search = MonotoneSearch(space, LPIPS_GATE)
    run_rounds({"mag": search}, lambda todo: [few(s["threshold"], s["retention_ratio"]) for _, s in todo])
    assert [c[0] for c in search.candidates()] == [{"threshold": 0.5, "retention_ratio": 0.1},
                                                     {"threshold": 0.5, "retention_ratio": 0.3}]
    confirmation = search.confirmation()
    run_rounds({"mag": confirmation}, lambda todo: [every(s["threshold"], s["retention_ratio"]) for _, s in todo])
    assert [m.chosen()[0] for m in confirmation.done] == [{"threshold": 0.125, "retention_ratio": 0.1},
                                                           {"threshold": 0.5, "retention_ratio": 0.3}]
    assert confirmation.chosen()[0] == {"threshold": 0.5, "retention_ratio": 0.3}


def test_the_budget_stops_the_search_with_the_best_answer_so_far():
    curve = {t: _measured(0.02 + 0.3 * t, 0.004, 1 - t) for t in THRESHOLDS}
    search = MonotoneSearch(_space({"threshold": THRESHOLDS}), LPIPS_GATE, budget=2)
    run_rounds({"m": search}, lambda todo: [curve[s["threshold"]] for _, s in todo])
    assert search.evaluated == 2 and search.budget_hit and search.candidates()[0][0] == {"threshold": 0.25}


@pytest.mark.parametrize("entry, primary, why", [
    ({"name": "first_block_cache", "sweep": {"threshold": {"min": 0.0, "max": 0.5}}}, "threshold", ""),
    ({"name": "mag_cache", "sweep": {"threshold": [0.3, 0.1], "retention_ratio": [0.1, 0.2]}}, "threshold", ""),
    ({"name": "mag_cache", "params": {"threshold": 0.1}, "sweep": {"retention_ratio": {"min": 0.0, "max": 0.4}}},
     None, "its aggressiveness axis threshold is not swept"),
    ({"name": "taylorseer_cache", "sweep": {"cache_interval": {"min": 1, "max": 6}}}, "cache_interval", ""),
])
def test_which_search_runs_follows_the_registry(entry, primary, why):
    from experiments.spec import MethodSpec
    from repro.tune import build_space

    space = build_space(MethodSpec.model_validate(entry))
    assert space.primary == primary and space.why_not == why
    if primary:
        assert list(space.axes[primary]) == sorted(space.axes[primary])  # bisected ascending
    if entry["name"] == "taylorseer_cache":
        assert space.axes["cache_interval"] == (1, 2, 3, 4, 5, 6)


# -- gates with confidence bounds, by hand ------------------------------------------------------------------------


def _gen(key, role, point, i, executed, quality=None):
    summary = {"e2e_s": 1.0, "denoise_s": 0.9, "transformer_s": 0.8, "step_computed": [1.0]}
    return {"key": key, "role": role, "point_id": point, "method": None if role == "baseline" else "first_block_cache",
            "params": {}, "optimization": {}, "prompt_index": i, "prompt": f"p{i}", "seed": 0,
            "quality_baseline_key": quality, "speed_baseline_key": quality, "status": "ok", "error": None,
            "kind": "image", "media_dir": None, "mp4": None, "num_frames": 1, "height": 8, "width": 8,
            "e2e_s": 1.0 if role == "baseline" else executed / 100, "denoise_s": 0.9, "compute_executed": executed,
            "compute_possible": 100, "peak_memory_bytes": None, "summary": summary, "device": "cpu"}


def _store_with_lpips(tmp_path, points: dict[str, tuple[int, list[float]]]) -> Path:
    """A results-only run: one baseline per item, each point's per-item LPIPS as given."""
    run = tmp_path / "run"
    store = Store(run)
    spec = tiny_spec_dict(run, metrics={"names": ["lpips"], "device": "cpu"})
    store.set_meta(spec=Spec.model_validate(spec).model_dump(mode="json"))
    store.put_points([{"point_id": p, "method": "first_block_cache", "label": p, "params": {}, "optimization": {},
                       "key_param": None, "key_value": None} for p in points])
    n = len(next(iter(points.values()))[1])
    for i in range(n):
        store.put_generation(_gen(f"b{i}", "baseline", "baseline", i, 100))
    for p, (executed, values) in points.items():
        for i, v in enumerate(values):
            store.put_generation(_gen(f"{p}{i}", "cached", p, i, executed, quality=f"b{i}"))
            store.put_scores(f"{p}{i}", {"lpips": {"label": "lpips_alex", "value": v, "per_frame": [v]}}, f"b{i}")
    store.close()
    return run


def test_a_gate_holds_at_95_percent_over_items_on_a_hand_computed_case(tmp_path):
    from repro.aggregate import point_rows

    # three items: a bootstrap resample repeats the largest value three times with probability 1/27 = 3.7%,
    # more than the 2.5% above the percentile interval's upper end, so that end is the largest item
    run = _store_with_lpips(tmp_path, {"fast": (40, [0.05, 0.06, 0.13]), "slow": (60, [0.08, 0.09, 0.095])})
    rows = {r["point_id"]: r for r in point_rows(Store(run, read_only=True))}
    fast, slow = rows["fast"], rows["slow"]
    assert fast["lpips"] == pytest.approx(0.08) and fast["lpips_ci_high"] == pytest.approx(0.13)
    assert slow["lpips"] == pytest.approx(0.088333, abs=1e-6) and slow["lpips_ci_high"] == pytest.approx(0.095)
    assert meets_gates(fast, LPIPS_GATE) and not meets_gates(fast, LPIPS_GATE, confident=True)
    assert meets_gates(slow, LPIPS_GATE, confident=True)
    # `repro best` reads the same definition: on the mean the faster point wins, at 95% the slower one
    runner = CliRunner()
    on_mean = runner.invoke(main, ["best", str(run), "--max", "lpips=0.1"])
    confident = runner.invoke(main, ["best", str(run), "--max", "lpips=0.1", "--confident"])
    assert on_mean.exit_code == 0 and "first_block_cache fast" in on_mean.output
    assert confident.exit_code == 0 and "first_block_cache slow" in confident.output


# -- the spec: ranges --------------------------------------------------------------------------------------------


def _write(tmp_path, methods, **changes) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / "run", methods=methods, **changes)))
    return path


FBC_RANGE = [{"name": "first_block_cache", "sweep": {"threshold": {"min": 0.0, "max": 0.5, "step": 0.025}}}]


@pytest.mark.parametrize("axis, needle", [
    ({"min": 0.5, "max": 0.1}, "a range needs min < max"),
    ({"min": 0.0, "max": float("inf")}, "'threshold'.max: must be a finite number"),
    ({"min": 0.0, "max": 0.5, "step": 0.03}, "step 0.03 does not divide max - min = 0.5"),
    ({"min": 0.0, "max": 0.5, "step": 0}, "step must be > 0"),
    ({"min": True, "max": 0.5}, "'threshold'.min: must be a finite number"),
    ({"min": 0.0, "maxx": 0.5}, "unknown field 'maxx'"),
    ({"min": -0.1, "max": 0.5}, "a range's end threshold=-0.1 is negative"),
    ({"min": 0.0, "max": 1.0, "step": 1e-6}, "at most 10,000"),
    (3, "expected a list of values or a range"),
])
def test_a_bad_range_is_refused_with_one_clear_message(tmp_path, axis, needle):
    path = _write(tmp_path, [{"name": "first_block_cache", "sweep": {"threshold": axis}}])
    out = CliRunner().invoke(main, ["validate", str(path)])
    assert out.exit_code == 2 and needle in out.output and "Traceback" not in out.output, out.output


@pytest.mark.parametrize("sweep, needle", [
    ({"retention_ratio": {"min": 0.0, "max": 2.0}}, "retention_ratio=2.0 must be in [0, 1]"),
    ({"max_skip_steps": {"min": 1, "max": 4.5}}, "max_skip_steps=4.5 must be an integer"),
    ({"max_skip_steps": {"min": 1, "max": 4, "step": 1.5}}, "step=1.5 must be an integer"),
])
def test_a_range_is_checked_against_the_registry(tmp_path, sweep, needle):
    mag = {"name": "mag_cache", "params": {"mag_ratios": [1.0] * 6}, "calibrate": "never", "sweep": sweep}
    out = CliRunner().invoke(main, ["validate", str(_write(tmp_path, [mag]))])
    assert out.exit_code == 2 and needle in out.output, out.output


def test_validate_says_ranges_are_for_tune_and_sweep_refuses_them(tmp_path):
    path = _write(tmp_path, FBC_RANGE)
    out = CliRunner().invoke(main, ["validate", str(path)])
    assert out.exit_code == 0, out.output
    assert "threshold {min: 0.0, max: 0.5, step: 0.025}: ranges, for `repro tune" in out.output
    assert "21 point(s) x 2 item(s)" in out.output
    swept = CliRunner().invoke(main, ["sweep", str(path)])
    assert swept.exit_code == 2 and "ranges are searched by `repro tune" in swept.output
    assert not (tmp_path / "run").exists()


def test_an_integer_range_is_a_grid_of_integers():
    from experiments.methods import get_method
    from experiments.spec import SweepRange

    mag = get_method("mag_cache")
    assert mag.axis_values("max_skip_steps", SweepRange(min=1, max=4)) == [1, 2, 3, 4]
    assert mag.axis_values("threshold", SweepRange(min=0, max=0.3, step=0.1)) == [0.0, 0.1, 0.2, 0.3]
    assert mag.axis_values("threshold", SweepRange(min=0.0, max=0.5)) == [round(0.025 * k, 3) for k in range(21)]


def test_every_built_in_method_declares_a_settable_numeric_aggressiveness_axis():
    import importlib.util

    from experiments.methods import all_methods, builtin_names
    from experiments.methods.registry import library_names

    library = library_names() if importlib.util.find_spec("cache_dit") else ()  # cache-dit's, when installed
    for name in (*builtin_names(), *library):
        m = all_methods()[name]
        if not m.settable():  # lossless with nothing to set (text_kv_cache): nothing to tune either
            assert m.aggressiveness is None and not m.key_params, name
            continue
        assert m.aggressiveness in m.settable(), name
        assert m.check_param(m.aggressiveness, 2) is None, name


@pytest.mark.parametrize("gates, needle", [
    ([], "needs at least one quality gate"),
    (["--max", "psnr=30"], "--min psnr=VALUE"),
    (["--min", "speedup=1.5"], "maximises speed itself"),
    (["--max", "lpips=0.1"], "not among the spec's metrics.names"),
    (["--max", "lpips=nan"], "must be a finite number"),
])
def test_gates_tune_cannot_answer_are_refused_before_anything_runs(tmp_path, gates, needle):
    out = CliRunner().invoke(main, ["tune", str(_write(tmp_path, FBC_RANGE)), *gates])
    assert out.exit_code == 2 and needle in out.output, out.output
    assert not (tmp_path / "run").exists()


# -- a plugin without monotone structure: optuna ------------------------------------------------------------------

PLUGIN = '''
from dataclasses import dataclass

from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import StateManager

from experiments.methods import register_method


@dataclass
class StrideCacheConfig:
    period: int = 2  # run the transformer on one call in `period` (per CFG branch), reuse its output otherwise
    phase: int = 0  # which call of each period runs


class Memory:
    def __init__(self):
        self.calls, self.output = 0, None

    def reset(self):
        self.__init__()


class StrideHook(ModelHook):
    _is_stateful = True

    def __init__(self, config):
        super().__init__()
        self.config, self.state_manager = config, StateManager(Memory)

    def reset_state(self, module):
        self.state_manager.reset()
        return module

    def new_forward(self, module, *args, **kwargs):
        memory = self.state_manager.get_state()
        if memory.output is None or memory.calls % self.config.period == self.config.phase % self.config.period:
            memory.output = self.fn_ref.original_forward(*args, **kwargs)
        memory.calls += 1
        return memory.output


def apply(transformer, config):
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(StrideHook(config), "stride")


def remove(transformer):
    HookRegistry.check_if_exists_or_initialize(transformer).remove_hook("stride", recurse=False)


register_method("stride_cache", StrideCacheConfig, apply, remove, key_params=("period", "phase"))
'''


def test_a_plugin_without_monotone_structure_is_searched_by_optuna(tmp_path, monkeypatch):
    import io

    from experiments.methods import load_plugins
    from repro.aggregate import tables
    from repro.tune import tune

    (tmp_path / "stride_cache_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugins(["stride_cache_plugin"])
    data = tiny_spec_dict(tmp_path / "run", plugins=["stride_cache_plugin"], prompts=["a red fox in snow"],
                          methods=[{"name": "stride_cache", "sweep": {"period": {"min": 1, "max": 4},
                                                                      "phase": [0, 1]}}])
    spec = Spec.model_validate(data)
    (result,) = tune(spec, [("psnr", "min", 20.0)], budget=4, search_items=1, stream=io.StringIO())
    assert result.search == "optuna" and "declares no aggressiveness axis" in result.space.why_not
    assert result.searched == 4 and result.grid_generations == 8 and result.generations == 4
    # every setting tried is a point of the run directory; the chosen one is marked, and meets the gate
    points, _ = tables(Store(spec.run_dir, read_only=True))
    cached = points[points["method"] == "stride_cache"]
    assert len(cached) == 4 and sorted(cached["tune"]) == ["chosen", "explored", "explored", "explored"]
    chosen = cached[cached["tune"] == "chosen"].iloc[0]
    assert chosen["point_id"] == result.point_id and chosen["psnr_ci_low"] >= 20.0
    # and it computes least among the feasible settings tried
    feasible = cached[cached["psnr_ci_low"] >= 20.0]
    assert chosen["compute_fraction"] == feasible["compute_fraction"].min()
    assert "StrideCacheConfig(" in result.python_call and "stride_cache" in result.spec_snippet


def test_every_round_of_a_search_runs_on_one_loaded_pipeline_and_metric_networks(tmp_path, monkeypatch):
    import io

    import experiments.pipelines
    import repro.scoring
    import repro.sweep
    from repro.tune import tune

    loads, scorers = [], []
    real_load, real_scorer = experiments.pipelines.load_pipeline, repro.scoring.build_scorer
    monkeypatch.setattr(experiments.pipelines, "load_pipeline", lambda m: loads.append(m) or real_load(m))
    for module in (repro.sweep, repro.scoring):
        monkeypatch.setattr(module, "build_scorer", lambda m: scorers.append(m) or real_scorer(m))
    spec = Spec.model_validate(tiny_spec_dict(tmp_path / "run", methods=FBC_RANGE))
    stream = io.StringIO()
    tune(spec, [("psnr", "min", 60.0)], search_items=1, stream=stream)
    rounds = stream.getvalue().count("tune: sweeping")
    assert rounds >= 3, stream.getvalue()
    # a real model loads for minutes and its metric networks for seconds: once per tune, not once per round
    assert len(loads) == 1 and len(scorers) <= 1, (len(loads), len(scorers), rounds)


def test_kept_networks_serve_only_the_metrics_they_were_built_for(tmp_path):
    from repro.executors.resident import Resident

    one = Spec.model_validate(tiny_spec_dict(tmp_path / "a"))
    other = Spec.model_validate(tiny_spec_dict(tmp_path / "b", metrics={"names": ["psnr"], "device": "cpu"}))
    resident, nets = Resident(), object()
    assert resident.keep_scorer(one.metrics, nets) is nets and resident.scorer_for(one.metrics) is nets
    assert resident.scorer_for(other.metrics) is None  # another metrics section builds its own


# -- resume after kill -9 -----------------------------------------------------------------------------------------


def _tune_cmd(spec_path: Path) -> list[str]:
    # on the tiny model the first item keeps PSNR 68.9 up to threshold 1.0, the second falls below 60 from 0.25
    # on: the search (first item) and the confirmation (both) disagree, so both stages and the overturn replay
    return [sys.executable, "-m", "repro.cli", "tune", str(spec_path), "--min", "psnr=60", "--search-items", "1"]


def _rows(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM generations WHERE role = 'cached'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _generations(run: Path) -> dict[str, int]:
    with sqlite3.connect(run / "results.sqlite") as con:
        return dict(con.execute("SELECT key, attempts FROM generations WHERE status = 'ok'").fetchall())


@pytest.mark.slow
def test_a_tune_killed_mid_search_resumes_to_the_same_answer(tmp_path):
    methods = [{"name": "first_block_cache", "sweep": {"threshold": {"min": 0.0, "max": 1.0, "step": 0.05}}}]
    specs = {}
    for name in ("whole", "killed"):
        specs[name] = tmp_path / f"{name}.yaml"
        specs[name].write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / name, methods=methods)))
    from click.testing import CliRunner

    from repro.cli import main

    def tune_here(spec_path):  # only the kill needs a process of its own
        return CliRunner().invoke(main, _tune_cmd(spec_path)[3:])

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    whole = tune_here(specs["whole"])
    assert whole.exit_code in (0, 1), whole.output[-3000:]
    proc = subprocess.Popen(_tune_cmd(specs["killed"]), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while _rows(tmp_path / "killed" / "results.sqlite") < 2:  # a round or more done, the search not finished
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _rows(tmp_path / "killed" / "results.sqlite") < _rows(tmp_path / "whole" / "results.sqlite")
    resumed = tune_here(specs["killed"])
    assert resumed.exit_code == whole.exit_code, resumed.output[-3000:]
    # the same decisions, replayed from the store: the same generations (none made twice) and the same answer
    done, reference = _generations(tmp_path / "killed"), _generations(tmp_path / "whole")
    assert set(done) == set(reference) and set(done.values()) == {1}
    answer = [ln for ln in resumed.stdout.splitlines() if ln.startswith(("==", "confirmation", "generations"))]
    assert answer == [ln for ln in whole.stdout.splitlines() if ln.startswith(("==", "confirmation", "generations"))]
    assert any("OVERTURNED" in ln for ln in answer)
    assert any("tune:" in ln and "on 1 item(s)" in ln for ln in resumed.stderr.splitlines())
