"""cache-dit's methods behind the registry: settings checked against cache-dit's own classes, each method through
the engine on the tiny Wan twin (no-op setting bit-identical, aggressive setting computes less, the baseline
bit-identical after it), its decisions in the one decision record (agreeing with the counters) and its
statistics kept, and parity with First Block Cache."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest

from experiments.errors import SpecError
from experiments.instrumentation import decisions_from_table
from experiments.methods import check_method_spec, get_method
from experiments.spec import MethodSpec

pytest.importorskip("cache_dit")

CACHE_DIT_METHODS = ("dbcache", "dbprune", "dbcache_taylorseer", "dbcache_foca", "dbcache_scm")
# held out from the probe (the matrix uses "a cat riding a horse on mars", seed 0)
PROMPT, SEED = "a red fox in snow", 3


@pytest.fixture(scope="module")
def wan():
    """An engine on the tiny Wan twin and its baseline (8 steps, CFG as two calls per step)."""
    from experiments.families.matrix import probe_engine
    from experiments.runner import GenerationRequest

    engine = probe_engine("wan")
    return engine, engine.generate(GenerationRequest(PROMPT, SEED))


def _generate(engine, method=None, params=None):
    from experiments.runner import GenerationRequest

    return engine.generate(GenerationRequest(PROMPT, SEED, method, dict(params or {})))


# -- settings: cache-dit's own fields, types and defaults, with the project's strict checks ----------------


@pytest.mark.parametrize("name", CACHE_DIT_METHODS)
def test_settings_mirror_cache_dit_config_classes(name):
    import cache_dit

    from experiments.methods import cache_dit as mod

    method = get_method(name)
    assert method.origin == "cache-dit" and method.acts_on == "pipeline"
    _, cache_name, calibrator_name, scm = mod.KINDS[method.config_class_name]
    mine = {f.name: f for f in dataclasses.fields(method.config_class)}
    hints = typing.get_type_hints(method.config_class)
    for source in [getattr(cache_dit, cache_name)] + ([getattr(cache_dit, calibrator_name)] if calibrator_name else []):
        theirs = typing.get_type_hints(source)
        for f in dataclasses.fields(source):
            if f.name in mod.FIXED or f.name in mod.SCM_FIELDS:
                assert f.name not in mine or (scm and f.name == "steps_computation_policy")
                continue
            assert hints[f.name] == theirs[f.name], f.name
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            mine_default = (mine[f.name].default if mine[f.name].default is not dataclasses.MISSING
                            else mine[f.name].default_factory())
            assert mine_default == default, f.name
    assert ("mask_policy" in mine) == scm


def _check(name, **params):
    check_method_spec(MethodSpec(name=name, params=params), "methods[0]", None)


@pytest.mark.parametrize("params, message", [
    ({"Fn_compute_blocks": True}, "must be an integer"),  # a bool is not an int
    ({"Fn_compute_blocks": 1.5}, "must be an integer"),
    ({"residual_diff_threshold": -0.1}, "is negative"),
    ({"Fn_compute_blocks": 0}, ">= 1"),  # no first block to compare: the residual is zero, 0/0
    ({"max_cached_steps": -2}, ">= -1"),  # -1 is cache-dit's "no limit"
    ({"residual_diff_threshold": float("nan")}, "finite number"),
    ({"Fn_compute_bloks": 1}, "did you mean 'Fn_compute_blocks'"),
    ({"cache_type": "DBPrune"}, "unknown parameter"),  # fixed by the method
    ({"num_inference_steps": 4}, "set automatically"),
    ({"force_refresh_step_policy": "twice"}, "allowed are once, repeat"),
    # cache-dit's own context refuses it (cache_context.py: cfg_compute_first must be False when
    # cfg_diff_compute_separate is enabled)
    ({"enable_separate_cfg": True, "cfg_compute_first": True}, "cache-dit refuses this combination"),
])
def test_bad_dbcache_settings_are_spec_errors(params, message):
    with pytest.raises(SpecError, match=message):
        _check("dbcache", **params)


def test_scm_and_calibrator_settings_are_checked():
    _check("dbcache_scm", mask_policy="fast", steps_computation_policy="static")
    with pytest.raises(SpecError, match="allowed are slow, medium, fast, ultra"):
        _check("dbcache_scm", mask_policy="turbo")
    with pytest.raises(SpecError, match="compute_bins and cache_bins together"):
        _check("dbcache_scm", compute_bins=[4, 2])
    with pytest.raises(SpecError, match="steps_mask refused"):  # bins shorter than the 28 default steps
        _check("dbcache_scm", compute_bins=[1], cache_bins=[1])
    with pytest.raises(SpecError, match="allowed are residual, hidden_states"):
        _check("dbcache_taylorseer", calibrator_cache_type="output")
    with pytest.raises(SpecError, match="unknown parameter 'taylorseer_order'"):
        _check("dbcache_foca", taylorseer_order=2)


def test_a_missing_cache_dit_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "cache_dit" else real(n, *a))
    method = get_method("dbcache")
    assert method.missing() == "not installed: pip install 'diffusion-cache-repro[cache-dit]'"
    with pytest.raises(SpecError, match=r"needs the cache_dit package, which is not installed: pip install"):
        _check("dbcache", residual_diff_threshold=0.1)


def test_repro_methods_lists_cache_dit_with_its_version_and_columns():
    from click.testing import CliRunner

    from repro.cli import main

    out = CliRunner().invoke(main, ["methods"]).output
    for name in CACHE_DIT_METHODS:
        line = next(x for x in out.splitlines() if x.startswith(name + " "))
        assert "cache-dit" in line and "(cache-dit 1." in line
    header = next(x for x in out.splitlines() if x.startswith("family") and "dbcache" in x)
    assert header.split()[1:] == list(CACHE_DIT_METHODS)


# -- each method through the engine ------------------------------------------------------------------------

AGGRESSIVE = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "residual_diff_threshold": 0.5, "max_warmup_steps": 1}


@pytest.mark.parametrize("name", CACHE_DIT_METHODS)
def test_method_through_the_engine(wan, name):
    engine, baseline = wan
    method = get_method(name)
    pipe = engine.pipe
    call = type(pipe).__call__

    same = _generate(engine, name, method.no_op)
    assert np.array_equal(same.frames, baseline.frames), f"{name} no-op setting differs from the baseline"

    params = {**AGGRESSIVE, **({"mask_policy": "fast"} if name == "dbcache_scm" else {})}
    fast = _generate(engine, name, params)
    s = fast.summary()
    assert s["compute_executed"] < baseline.summary()["compute_executed"]
    assert not np.array_equal(fast.frames, baseline.frames)
    # the decision record (the one shape of every method), read from cache-dit's context after each call
    decisions = decisions_from_table(s["decisions"])
    assert len(decisions) == s["transformer_calls"]
    assert [(d.branch, d.step) for d in decisions[:4]] == [("cond", 0), ("uncond", 0), ("cond", 1), ("uncond", 1)]
    skipped = [d for d in decisions if not d.computed]
    assert skipped
    # ... agrees with the project's counters: a step ran every sublayer exactly where both of its calls computed
    steps = sorted({d.step for d in decisions})
    assert [all(d.computed for d in decisions if d.step == k) for k in steps] == [c == 1.0 for c in s["step_computed"]]
    if name != "dbprune":  # a reused call ran its first block only (F1B0); DBPrune prunes a varying number
        per_call = s["compute_possible"] // s["transformer_calls"]
        first_block = per_call // len(engine.pipe.transformer.blocks)
        assert s["compute_executed"] == per_call * (len(decisions) - len(skipped)) + first_block * len(skipped)
    stats = s["method_stats"]
    assert stats["library"] == "cache-dit" and stats["contexts"]
    if name != "dbprune":  # DBPrune counts pruned blocks per step, not whole cached steps
        cached = stats["contexts"][0]["cached_steps"]
        assert cached == [d.step for d in decisions if d.branch == "cond" and not d.computed]

    # disabled in `finally`: the pipeline class and transformer are back, the baseline bit-identical
    assert type(pipe).__call__ is call and "forward" not in pipe.transformer.__dict__
    assert pipe.transformer._repro_cache_method is None and pipe.transformer._repro_cache_run is None
    assert np.array_equal(_generate(engine).frames, baseline.frames)


def test_a_failing_generation_still_disables_cache_dit(wan, monkeypatch):
    engine, baseline = wan
    pipe = engine.pipe
    call = type(pipe).__call__

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(engine, "_call", explode)
    with pytest.raises(RuntimeError, match="boom"):
        _generate(engine, "dbcache", AGGRESSIVE)
    monkeypatch.undo()
    assert type(pipe).__call__ is call
    assert np.array_equal(_generate(engine).frames, baseline.frames)


def test_too_many_compute_blocks_is_one_clear_error(wan):
    engine, _ = wan  # the tiny Wan has 4 blocks; a sweep records this as a failed point
    with pytest.raises(ValueError, match="exceed the 4 blocks"):
        _generate(engine, "dbcache", {"Fn_compute_blocks": 3, "Bn_compute_blocks": 2})


def test_dbcache_f1b0_makes_first_block_cache_decisions(wan):
    """Parity: DBCache F1B0 without warm-up skips exactly the calls First Block Cache skips, same output."""
    engine, _ = wan
    for threshold in (0.2, 0.5):
        fbc = _generate(engine, "first_block_cache", {"threshold": threshold}).summary()
        dbc = _generate(engine, "dbcache", {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0,
                                            "residual_diff_threshold": threshold, "max_warmup_steps": 0}).summary()
        schedule = [[(d.branch, d.step, d.computed) for d in decisions_from_table(g["decisions"])] for g in (fbc, dbc)]
        assert schedule[0] == schedule[1], threshold
        assert (fbc["compute_executed"], fbc["step_computed"]) == (dbc["compute_executed"], dbc["step_computed"])
        assert fbc["compute_executed"] < fbc["compute_possible"]
    # cache-dit's warm-up is what differs by default: its first steps always compute
    warm = _generate(engine, "dbcache", {"Fn_compute_blocks": 1, "residual_diff_threshold": 0.5,
                                         "max_warmup_steps": 3}).summary()
    assert all(d.computed and d.signal is None for d in decisions_from_table(warm["decisions"]) if d.step < 3)


def test_python_call_and_spec_snippet_name_the_method():
    method = get_method("dbcache")
    snippet = method.spec_snippet({"residual_diff_threshold": 0.12}, num_inference_steps=28)
    assert "name: dbcache" in snippet and "residual_diff_threshold: 0.12" in snippet
    code = method.python_call({"residual_diff_threshold": 0.12}, num_inference_steps=28)
    assert code == ("import cache_dit\nfrom cache_dit import DBCacheConfig\ncache_dit.enable_cache(pipe, cache_config="
                    "DBCacheConfig(residual_diff_threshold=0.12, num_inference_steps=28))")
    code = get_method("dbcache_taylorseer").python_call({"residual_diff_threshold": 0.2, "taylorseer_order": 2}, 10)
    assert "calibrator_config=TaylorSeerCalibratorConfig(taylorseer_order=2)" in code
    code = get_method("dbcache_scm").python_call({"mask_policy": "fast"}, 10)
    assert "steps_computation_mask=cache_dit.steps_mask(total_steps=10, mask_policy='fast')" in code
    exec(compile(code.replace("cache_dit.enable_cache(pipe, ", "dict("), "snippet", "exec"), {})  # it runs as printed
