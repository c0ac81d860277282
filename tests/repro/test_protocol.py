"""The execution and timing protocol: item-major order, one pipeline call per generation, warm-ups once,
targeted B C B C repeats, paired speedups, the Amdahl bound flag, listeners."""

from __future__ import annotations

import functools
import math
import statistics
from pathlib import Path

import pytest

from experiments.spec import Spec
from repro.aggregate import amdahl_bound, item_rows, point_rows
from repro.events import SweepListener
from repro.plan import build_plan, item_major
from repro.store import Store
from repro.sweep import run_sweep
from tests.conftest import tiny_spec_dict

FBC = {"name": "first_block_cache", "sweep": {"threshold": [0.0, 0.3]}}


@pytest.fixture
def calls(monkeypatch):
    """Every pipeline call, counted from outside the runner: (prompt, seed, cache enabled) in call order."""
    from diffusers import WanPipeline

    seen: list[tuple[str, int, bool]] = []
    original = WanPipeline.__call__

    @functools.wraps(original)
    def counted(self, *args, **kwargs):
        seen.append((kwargs["prompt"], kwargs["generator"].initial_seed(), bool(self.transformer.is_cache_enabled)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WanPipeline, "__call__", counted)
    return seen


def _spec(run_dir: Path, **changes) -> Spec:
    return Spec.model_validate(tiny_spec_dict(run_dir, **changes))


# -- order ------------------------------------------------------------------------------------


def test_items_run_baseline_first_and_back_to_back(tmp_path, calls):
    spec = _spec(tmp_path / "run", methods=[FBC], seeds=[0, 1], timing={"warmup": 0})
    assert run_sweep(spec).exit_code == 0
    items = [(prompt, seed) for prompt, seed, _ in calls]
    # each item's calls are contiguous: the item changes exactly (number of items - 1) times
    changes = sum(1 for a, b in zip(items, items[1:]) if a != b)
    assert changes == len(spec.prompts) * len(spec.seeds) - 1
    # and within each item the first call is the uncached baseline, the rest are its cached variants
    for start in [0] + [i + 1 for i, (a, b) in enumerate(zip(items, items[1:])) if a != b]:
        block = calls[start:start + 3]
        assert [cached for *_, cached in block] == [False, True, True], calls


def test_optimization_groups_follow_their_own_speed_baseline():
    spec = Spec.model_validate(tiny_spec_dict(Path("/nonexistent"), methods=[FBC],
                                              optimizations={"vae_tiling": [False, True]}))
    plan = build_plan(spec)
    works = item_major(plan, plan.jobs)
    assert len(works) == len(spec.prompts)
    for w in works:
        groups = [w.groups[j.key] for j in w.jobs]
        assert groups == ["none"] * 3 + ["vae_tiling=True"] * 3  # the unoptimized group first
        assert [j.role for j in w.jobs] == ["baseline", "cached", "cached"] * 2
        for j in w.jobs:
            if j.role == "cached":
                assert w.speed_baselines[w.groups[j.key]].key == j.speed_baseline_key


# -- calls ------------------------------------------------------------------------------------


def test_one_pipeline_call_per_generation_with_default_timing(tmp_path, calls):
    spec = _spec(tmp_path / "run", methods=[FBC], timing={})  # the defaults: warmup 1, repeats 1
    outcome = run_sweep(spec)
    generations = len(build_plan(spec).jobs)
    assert outcome.generated == generations == 6
    assert len(calls) == generations + 1  # one warm-up for the (only) worker, then one call each
    assert outcome.stats["calls"] == {"warmup": 1, "generation": generations}


def test_warm_up_runs_once_per_worker_not_per_generation(tmp_path, calls):
    spec = _spec(tmp_path / "run", methods=[FBC], timing={"warmup": 3})
    run_sweep(spec)
    assert len(calls) == 6 + 3
    assert all(not cached for *_, cached in calls[:3])  # warm-ups are uncached, before anything else


def test_targeted_repeats_interleave_baseline_and_cached(tmp_path, calls):
    spec = _spec(tmp_path / "run", methods=[FBC], timing={"warmup": 0, "repeats": 3, "items": 1})
    outcome = run_sweep(spec)
    # item 0 (targeted): B, then per point C + (B C) x 2; item 1: B C C
    first = [cached for *_, cached in calls[:11]]
    assert first == [False, True, False, True, False, True, True, False, True, False, True]
    assert [cached for *_, cached in calls[11:]] == [False, True, True]
    assert outcome.stats["calls"] == {"generation": 6, "timing": 8}
    store = Store(spec.run_dir)
    pairs = {(g["prompt_index"], g["params"]["threshold"]): len(g["summary"]["pairs"])
             for g in store.generations(role="cached")}
    assert pairs == {(0, 0.0): 3, (0, 0.3): 3, (1, 0.0): 1, (1, 0.3): 1}


def test_extended_sweep_re_times_the_stored_baseline_next_to_the_new_points(tmp_path, calls):
    run_dir = tmp_path / "run"
    run_sweep(_spec(run_dir, methods=[FBC], timing={"warmup": 0}))
    calls.clear()
    wider = _spec(run_dir, methods=[{"name": "first_block_cache", "sweep": {"threshold": [0.0, 0.3, 0.6]}}],
                  timing={"warmup": 0})
    outcome = run_sweep(wider)
    assert outcome.generated == 2  # only the new threshold, for both items
    assert outcome.stats["calls"] == {"generation": 2, "timing": 2}  # plus one baseline re-timing per item
    assert [cached for *_, cached in calls] == [False, True, False, True]
    store = Store(run_dir)
    for g in store.generations(role="cached"):
        assert len(g["summary"]["pairs"]) == 1
        if g["params"]["threshold"] == 0.6:  # paired with the re-timing, not with the stored baseline run
            base = store.generation(g["speed_baseline_key"])
            assert g["summary"]["pairs"][0]["baseline_e2e_s"] != base["e2e_s"]


# -- arithmetic -------------------------------------------------------------------------------


def _row(key, role, point, prompt, e2e, transformer, executed, pairs=None, quality=None, speed=None):
    summary = {"e2e_s": e2e, "denoise_s": e2e * 0.9, "transformer_s": transformer, "step_computed": [1.0]}
    if pairs is not None:
        summary["pairs"] = [{"baseline_e2e_s": b, "baseline_denoise_s": b * 0.9, "baseline_transformer_s": bt,
                             "e2e_s": c, "denoise_s": c * 0.9} for b, bt, c in pairs]
    return {"key": key, "role": role, "point_id": point, "method": None if role == "baseline" else "first_block_cache",
            "params": {}, "optimization": {}, "prompt_index": prompt, "prompt": f"p{prompt}", "seed": 0,
            "quality_baseline_key": quality, "speed_baseline_key": speed, "status": "ok", "error": None,
            "kind": "video", "media_dir": None, "mp4": None, "num_frames": 1, "height": 16, "width": 16,
            "e2e_s": e2e, "denoise_s": e2e * 0.9, "compute_executed": executed, "compute_possible": 100,
            "peak_memory_bytes": None, "summary": summary, "device": "cpu"}


def _synthetic_store(tmp_path, cached: dict[str, list[list[tuple]]], executed: dict[str, int]) -> Store:
    """One baseline per item (80% of its time in the transformer); cached points with the given pairs per item."""
    store = Store(tmp_path / "synthetic")
    store.put_points([{"point_id": pid, "method": "first_block_cache", "label": pid, "params": {}, "optimization": {},
                       "key_param": None, "key_value": None} for pid in cached])
    n_items = len(next(iter(cached.values())))
    for i in range(n_items):
        store.put_generation(_row(f"b{i}", "baseline", "baseline", i, 10.0, 8.0, 100))
    for pid, per_item in cached.items():
        for i, pairs in enumerate(per_item):
            store.put_generation(_row(f"{pid}{i}", "cached", pid, i, pairs[0][2], 3.0, executed[pid], pairs,
                                      quality=f"b{i}", speed=f"b{i}"))
    return store


def test_paired_speedups_match_a_hand_computation(tmp_path):
    # item 0: three pairs (ratios 2.0, 2.5, 1.6 -> median 2.0); item 1: one pair 9/6 = 1.5 (its stored
    # baseline row says 10 s: the pair, measured side by side, is what counts)
    store = _synthetic_store(tmp_path, {"p": [[(10.0, 8.0, 5.0), (10.0, 8.0, 4.0), (8.0, 6.4, 5.0)],
                                              [(9.0, 7.2, 6.0)]]}, {"p": 50})
    items = {r["key"]: r for r in item_rows(store)}
    assert items["p0"]["speedup"] == pytest.approx(2.0)
    assert items["p1"]["speedup"] == pytest.approx(1.5)
    assert items["p0"]["speedup_denoise"] == pytest.approx(2.0)
    assert items["p0"]["timing_pairs"] == 3
    point = next(r for r in point_rows(store) if r["point_id"] == "p")
    assert point["speedup"] == pytest.approx(statistics.mean([2.0, 1.5]))
    assert point["speedup_ci_low"] <= point["speedup"] <= point["speedup_ci_high"]
    # bound: 80% of the baseline in the transformer, half of the compute -> 1 / (0.2 + 0.4)
    assert items["p0"]["speedup_bound"] == pytest.approx(1 / 0.6)
    assert amdahl_bound(0.8, 0.5) == pytest.approx(1 / 0.6)
    assert amdahl_bound(1.0, 0.0) == math.inf


def test_speedup_beyond_its_bound_or_widely_spread_is_flagged(tmp_path):
    store = _synthetic_store(tmp_path, {
        # compute 50% of 80% -> bound 1.67x; measured 3x on every item: impossible, flagged
        "beyond": [[(9.0, 7.2, 3.0)], [(9.3, 7.44, 3.1)], [(8.7, 6.96, 2.9)]],
        # same bound, 1.5x on every item: fine
        "honest": [[(9.0, 7.2, 6.0)], [(9.3, 7.44, 6.2)], [(8.7, 6.96, 5.8)]],
        # 1.0x, 1.6x, 1.1x: within the bound but spread over more than half the median
        "spread": [[(9.0, 7.2, 9.0)], [(9.6, 7.68, 6.0)], [(8.8, 7.04, 8.0)]],
    }, {"beyond": 50, "honest": 50, "spread": 50})
    points = {r["point_id"]: r for r in point_rows(store)}
    assert points["beyond"]["timing_suspect"] and "Amdahl bound 1.67x" in points["beyond"]["timing_suspect_reason"]
    assert not points["honest"]["timing_suspect"] and points["honest"]["timing_suspect_reason"] == ""
    assert points["spread"]["timing_suspect"] and "spread 1.00x..1.60x" in points["spread"]["timing_suspect_reason"]
    assert not points["baseline"]["timing_suspect"]

    from repro.aggregate import tables
    from repro.report import format_points

    table, _ = tables(store)
    text = format_points(table)
    assert "3.00x?" in text and "1.50x?" not in text
    assert "timing suspect (speedup marked ?): first_block_cache beyond" in text


# -- listeners --------------------------------------------------------------------------------


class _Recorder(SweepListener):
    def __init__(self):
        self.events = []

    def sweep_started(self, event):
        self.events.append(("start", event.items, len(event.todo)))

    def generation_finished(self, event):
        assert event.row["status"] == "ok"
        self.events.append(("gen", event.job.key, sorted(event.scores), event.done, event.total))

    def item_finished(self, event):
        self.events.append(("item", (event.prompt_index, event.seed), len(event.keys)))

    def point_finished(self, event):
        self.events.append(("point", event.point_id, len(event.keys)))

    def sweep_finished(self, event):
        self.events.append(("end", event.outcome.generated))


class _Broken(SweepListener):
    def generation_finished(self, event):
        raise RuntimeError("dashboard down")


def test_listeners_hear_every_generation_item_and_point(tmp_path, capsys):
    spec = _spec(tmp_path / "run", methods=[FBC], timing={"warmup": 0})
    recorder = _Recorder()
    outcome = run_sweep(spec, listeners=[_Broken(), recorder])
    assert outcome.exit_code == 0
    ev = recorder.events
    assert ev[0] == ("start", 2, 6) and ev[-1] == ("end", 6)
    gens = [e for e in ev if e[0] == "gen"]
    assert [e[3] for e in gens] == list(range(1, 7)) and {e[4] for e in gens} == {6}
    cached = {j.key for j in build_plan(spec).cached}
    for _, key, scores, *_ in gens:  # cached generations arrive with their scores
        assert scores == (["psnr", "ssim"] if key in cached else [])
    assert [e for e in ev if e[0] == "item"] == [("item", (0, 0), 3), ("item", (1, 0), 3)]
    points = sorted(e[1:] for e in ev if e[0] == "point")
    assert len(points) == 3 and ("baseline", 2) in points
    # an item's event comes right after the last of its generations finished (scores can finish out of order)
    plan_items = {(j.prompt_index, j.seed): set() for j in build_plan(spec).jobs}
    for j in build_plan(spec).jobs:
        plan_items[(j.prompt_index, j.seed)].add(j.key)
    for item, keys in plan_items.items():
        at = ev.index(("item", item, 3))
        seen = [i for i, e in enumerate(ev) if e[0] == "gen" and e[1] in keys]
        assert len(seen) == 3 and max(seen) == at - 1
    assert "sweep listener _Broken failed in generation_finished" in capsys.readouterr().err


def test_scoring_never_runs_inside_a_timed_call_and_follows_each_item(tmp_path, monkeypatch):
    """Sequential measurement: no scoring chunk overlaps a pipeline call, each item is scored before the next
    item's first call, and no thread of ours runs beside the timed calls (W&B is another process)."""
    import threading
    import time as _time

    import metrics
    from experiments.runner import Engine

    timed, scored, threads = [], [], []

    def spans(target, name, into, slow=0.0):
        original = getattr(target, name)

        def wrapped(*args, **kwargs):
            if into is timed:
                threads.append(threading.active_count())
            t0 = _time.perf_counter()
            try:
                _time.sleep(slow)  # scoring slower than a generation: a background scorer would overlap
                return original(*args, **kwargs)
            finally:
                into.append((t0, _time.perf_counter()))

        monkeypatch.setattr(target, name, wrapped)

    spans(Engine, "_call", timed)
    spans(metrics.Scorer, "_compute_chunk", scored, slow=0.4)
    monkeypatch.setattr(Engine, "warm_up", lambda self, request: None)  # only timed calls remain
    before = threading.active_count()
    spec = _spec(tmp_path / "run", methods=[FBC], seeds=[0, 1], timing={"warmup": 0})
    assert run_sweep(spec).exit_code == 0
    assert len(timed) == 12 and len(scored) >= 8  # 4 items x (baseline + 2 cached); 8 cached scored
    for a0, a1 in scored:
        assert all(a1 <= b0 or b1 <= a0 for b0, b1 in timed), "a scoring chunk overlapped a timed pipeline call"
    starts = sorted(t0 for t0, _ in timed)
    for item in range(3):  # between the last call of an item and the first of the next: its scores
        end, nxt = starts[3 * item + 2], starts[3 * item + 3]
        assert any(end < s0 and s1 <= nxt for s0, s1 in scored), f"item {item} was not scored before item {item + 1}"
    assert set(threads) == {before}, (before, threads)
