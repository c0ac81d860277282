"""`repro compare RUN_DIR --parity`: diffusers' First Block Cache vs cache-dit's DBCache F1B0, read from the store."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from repro.parity import CACHE_DIT_DEFAULTS, _why, decisions


def test_defaults_are_cache_dits():
    cache_dit = pytest.importorskip("cache_dit")
    config = cache_dit.DBCacheConfig()
    assert CACHE_DIT_DEFAULTS == {k: getattr(config, k) for k in CACHE_DIT_DEFAULTS}


def _table(*rows):
    """A decision record as the summary stores it (experiments.instrumentation.decisions_table's columns)."""
    names = ("branch", "step", "computed", "signal", "accumulated")
    return {name: [row[i] if i < len(row) else None for row in rows] for i, name in enumerate(names)}


def test_decisions_come_from_the_decision_record():
    # 3 steps, CFG as two calls per step, in call order
    record = _table(("cond", 0, True), ("uncond", 0, True), ("cond", 1, False, 0.1), ("uncond", 1, True, 0.4),
                    ("cond", 2, False, 0.1), ("uncond", 2, False, 0.2))
    assert decisions({"decisions": record}) == {"cond": [True, False, False], "uncond": [True, True, False]}
    # one call per step: the pipeline's context name (First Block Cache) or cache-dit's "all" pair as "all"
    assert decisions({"decisions": _table(("cond", 0, True), ("cond", 1, False))}) == {"all": [True, False]}
    assert decisions({"decisions": _table(("all", 0, True), ("all", 1, False))}) == {"all": [True, False]}
    assert decisions({"decisions": None}) == {} == decisions({})  # a baseline, or a store from before the record


@pytest.mark.parametrize("fbc_computed, signal, settings, expected", [
    (False, None, {"max_warmup_steps": 2}, "warm-up"),
    (False, 0.2, {}, "tie"),  # diffusers caches at <=, cache-dit only at <
    (False, 0.3, {}, "had already diverged"),
    (False, 0.1, {"max_continuous_cached_steps": 1}, "step limits (max_continuous_cached_steps=1)"),
    (True, -1.0, {"residual_diff_threshold": 1.0}, "unconditionally"),
])
def test_differences_are_explained(fbc_computed, signal, settings, expected):
    full = {**CACHE_DIT_DEFAULTS, "residual_diff_threshold": 0.2, **settings}
    summary = {"decisions": _table(("cond", 1, True, signal), ("uncond", 1, True, None))}
    assert expected in _why(1, "cond", fbc_computed, full, summary)


def test_no_pair_is_one_clear_message(tmp_path):
    from repro.cli import main
    from repro.store import Store

    Store(tmp_path).close()
    out = CliRunner().invoke(main, ["compare", str(tmp_path), "--parity"])
    assert out.exit_code == 1 and "no pair of finished first_block_cache and dbcache points" in out.output
    out = CliRunner().invoke(main, ["compare", str(tmp_path), "--parity", "--points", "a", "b"])
    assert out.exit_code == 2 and "exactly one of" in out.output


@pytest.mark.slow
def test_parity_sweep_on_the_tiny_wan(tmp_path):
    """A sweep with both libraries: every point scored, and the parity table says where and why they differ."""
    pytest.importorskip("cache_dit")
    from experiments.spec import Spec
    from repro.cli import main
    from repro.store import Store
    from repro.sweep import run_sweep
    from tests.conftest import tiny_spec_dict

    f1b0 = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0}
    methods = [
        {"name": "first_block_cache", "sweep": {"threshold": [0.3]}},
        {"name": "dbcache", "params": {**f1b0, "max_warmup_steps": 0}, "sweep": {"residual_diff_threshold": [0.3]}},
        {"name": "dbcache", "label": "dbcache-w3", "params": {**f1b0, "max_warmup_steps": 3},
         "sweep": {"residual_diff_threshold": [0.3]}},
    ]
    spec = Spec.model_validate(tiny_spec_dict(tmp_path / "run", methods=methods))
    assert not run_sweep(spec).failed_keys
    store = Store.open_existing(tmp_path / "run", read_only=True)
    cached = [g for g in store.generations(status="ok") if g["role"] == "cached"]
    assert len(cached) == 6 and all(set(store.scores()[g["key"]]) == {"psnr", "ssim"} for g in cached)
    out = CliRunner().invoke(main, ["compare", str(tmp_path / "run"), "--parity"])
    assert out.exit_code == 0, out.output
    summary = [line for line in out.output.splitlines() if line.startswith("threshold 0.3:")]
    assert len(summary) == 2
    no_warmup = next(s for s in summary if "max_warmup_steps=0" in s)
    assert "4 of 4 branch schedules identical; outputs bit-identical on 2 of 2 items" in no_warmup
    warmup = next(s for s in summary if "max_warmup_steps=3" in s)
    assert "outputs bit-identical on 0 of 2 items" in warmup
    assert "cache-dit warm-up" in out.output

    # after each cache-dit point the baseline comes back bit for bit (the stored one, made before any of them)
    import numpy as np

    from experiments.media import read_frames
    from experiments.runner import Engine, GenerationRequest

    engine = Engine(spec)
    first = next(g for g in store.generations(status="ok") if g["role"] == "baseline" and g["prompt_index"] == 0)
    for g in cached:
        if g["method"] == "dbcache" and g["prompt_index"] == 0:
            engine.generate(GenerationRequest(g["prompt"], g["seed"], g["method"], g["params"]))
            again = engine.generate(GenerationRequest(first["prompt"], first["seed"]))
            assert np.array_equal(again.frames, read_frames(tmp_path / "run" / first["media_dir"]))
