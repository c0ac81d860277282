"""TeaCache: skip decisions against a hand computation on a recorded trace of modulated inputs."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.errors import SpecError
from experiments.families import get_family
from experiments.methods import teacache
from experiments.runner import GenerationRequest
from tests.experiments.cache_traces import PROMPT, CallRecorder, tiny_engine

COEFFS = (3.0, -2.0, 1.5, 4.0, 0.01)  # any polynomial: the test computes with it by hand


def _poly_abs(x: float) -> float:
    return abs(sum(c * x ** (len(COEFFS) - 1 - i) for i, c in enumerate(COEFFS)))


def _rel_l1(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).mean() / np.abs(b).mean())


def _modulated(family: str, first_block, inputs: dict):
    """The definition written out: Wan uses the timestep projection, FLUX / HunyuanVideo norm1(x, emb=temb)."""
    import torch

    if family == "wan":
        return inputs["temb"].numpy()
    with torch.inference_mode():
        return first_block.norm1(inputs["hidden_states"], emb=inputs["temb"])[0].float().numpy()


def _hand_decisions(signals: list, steps: int, threshold: float, warmup: int, final: int, max_skip: int = 0):
    decisions, accumulated, previous, in_row = [], 0.0, None, 0
    for k, m in enumerate(signals):
        change = None if previous is None else _rel_l1(m, previous)
        previous = m
        if change is None or k < warmup or k >= steps - final:
            accumulated, in_row = 0.0, 0
            decisions.append(True)
            continue
        accumulated += _poly_abs(change)
        if accumulated < threshold and (max_skip == 0 or in_row < max_skip):
            in_row += 1
            decisions.append(False)
        else:
            accumulated, in_row = 0.0, 0
            decisions.append(True)
    return decisions


@pytest.mark.parametrize("family", ["wan", "flux", "hunyuan_video"])
def test_skip_decisions_match_a_hand_computation(family):
    steps = 8
    engine = tiny_engine(family, steps=steps)
    fam = get_family(family)
    transformer = engine.pipe.transformer
    params = {"coefficients": list(COEFFS), "warmup_steps": 1, "final_steps": 1}

    # 1. threshold 0: every block runs; the recorded modulated inputs give the scale of the signal
    recorder = CallRecorder(transformer)
    base = engine.generate(GenerationRequest(PROMPT, 0))
    exact = engine.generate(GenerationRequest(PROMPT, 0, "teacache", {**params, "threshold": 0.0}))
    assert np.array_equal(exact.frames, base.frames), "threshold 0 must reproduce the baseline bit for bit"
    trace = recorder.branches(fam.cfg == "separate")
    recorder.remove()
    first = recorder.first
    values = [_poly_abs(_rel_l1(_modulated(family, first, b["block"]), _modulated(family, first, a["block"])))
              for calls in trace.values() for a, b in zip(calls, calls[1:])]
    threshold = 2.5 * float(np.median(values))  # some calls under it, some over

    # 2. that threshold: decisions from the recorded trace of this very run, computed by hand
    recorder = CallRecorder(transformer)
    cached = engine.generate(GenerationRequest(PROMPT, 0, "teacache", {**params, "threshold": threshold}))
    recorder.remove()
    skipped = 0
    for branch, calls in recorder.branches(fam.cfg == "separate").items():
        signals = [_modulated(family, first, c["block"]) for c in calls]
        expected = _hand_decisions(signals, steps, threshold, warmup=1, final=1)
        ran = [c["ran"] for c in calls]
        assert ran == expected, f"{family}/{branch}: blocks ran {ran}, hand computation says {expected}"
        skipped += ran.count(False)
    assert 0 < skipped, f"{family}: nothing skipped at threshold {threshold}; the test would prove nothing"
    s = cached.summary()
    assert s["compute_executed"] < base.summary()["compute_executed"]
    # compute is counted like every other cache: skipped calls executed no sublayer
    calls = len(recorder.calls)
    per_call = s["compute_possible"] // calls
    assert s["compute_executed"] == per_call * sum(c["ran"] for c in recorder.calls)


def test_max_skip_steps_bounds_a_run_of_skips():
    engine = tiny_engine("wan", steps=8)
    recorder = CallRecorder(engine.pipe.transformer)
    engine.generate(GenerationRequest(PROMPT, 0, "teacache",
                                      {"coefficients": [0.0], "threshold": 1.0, "max_skip_steps": 2}))
    recorder.remove()
    for calls in recorder.branches(True).values():
        ran = [c["ran"] for c in calls]
        # rescaled change is |0| = 0 < 1 everywhere: skip at most 2 in a row between warm-up and the last step
        assert ran == [True, False, False, True, False, False, True, True]


def test_calibration_fits_residual_change_against_input_change():
    engine = tiny_engine("flux", steps=8)
    values = engine.calibrate("teacache", [(PROMPT, 0), ("a lighthouse at night", 1)])
    assert set(values) == {"cond"} and len(values["cond"]) == teacache.DEGREE + 1
    assert all(np.isfinite(values["cond"]))
    # the fit is numpy's least squares on the recorded pairs; an exact polynomial is recovered
    xs = np.linspace(0.01, 0.3, 9)
    exact = [2.0, -1.0, 0.5, 0.25, 0.1]
    assert np.allclose(teacache.fit(list(zip(xs, np.polyval(exact, xs)))), exact, atol=1e-6)
    with pytest.raises(ValueError, match="more than 4"):
        teacache.fit([(0.1, 0.2)] * 3)


def test_wan_calibrates_each_cfg_branch_separately():
    engine = tiny_engine("wan", steps=8)
    values = engine.calibrate("teacache", [(PROMPT, 0)])
    assert set(values) == {"cond", "uncond"}
    assert values["cond"] != values["uncond"]


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="threshold"):
        teacache.TeaCacheConfig(threshold=-0.1, coefficients=(1.0,))
    with pytest.raises(ValueError, match="coefficients are missing"):
        teacache.TeaCacheConfig(threshold=0.1)
    with pytest.raises(ValueError, match="modulated_input"):
        teacache.TeaCacheConfig(coefficients=(1.0,), modulated_input="x")
    with pytest.raises(ValueError, match="warmup_steps"):
        teacache.TeaCacheConfig(coefficients=(1.0,), warmup_steps=-1)


def test_published_coefficients_have_a_source_and_the_plan_uses_them():
    from repro.plan import build_plan
    from experiments.spec import Spec

    for model_id, (coeffs, source) in teacache.PUBLISHED.items():
        assert len(coeffs) == 5 and "TeaCache" in source, model_id
    raw = {"name": "p", "model": {"id": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"}, "prompts": ["a", "b"], "seeds": [0],
           "methods": [{"name": "teacache", "sweep": {"threshold": [0.05, 0.1]}}]}
    plan = build_plan(Spec.model_validate(raw))
    (cal,) = plan.calibrations
    assert cal.method == "teacache" and cal.published[0] == teacache.PUBLISHED[raw["model"]["id"]][0]
    raw["methods"][0]["calibrate"] = "always"
    (cal,) = build_plan(Spec.model_validate(raw)).calibrations
    assert cal.published is None and [p for p, _ in cal.items] == ["a", "b"]  # fitted over every prompt
    raw["model"] = {"path": "/models/my-wan", "pipeline_class": "WanPipeline"}
    raw["methods"][0]["calibrate"] = "never"
    with pytest.raises(SpecError, match="no published coefficients"):
        build_plan(Spec.model_validate(raw))


def test_a_family_without_a_rule_is_refused_clearly():
    engine = tiny_engine("kandinsky5", steps=4)
    with pytest.raises(ValueError, match="teacache"):
        engine.generate(GenerationRequest(PROMPT, 0, "teacache", {"coefficients": [1.0], "threshold": 0.1}))
    # the engine is left clean
    engine.generate(GenerationRequest(PROMPT, 0))


@pytest.mark.slow
def test_calibrate_stores_coefficients_per_branch_and_the_sweep_reuses_them(tmp_path):
    import subprocess
    import sys

    import yaml

    from repro.store import Store
    from tests.conftest import ROOT, tiny_spec_dict

    spec = tiny_spec_dict(tmp_path / "run", prompts=["a red fox in snow"],
                          methods=[{"name": "teacache", "sweep": {"threshold": [0.0, 5.0]}}])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "repro.cli"]
    out = subprocess.run([*cli, "calibrate", str(path)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    (cal,) = Store(tmp_path / "run").calibrations()
    assert cal["meta"]["method"] == "teacache" and set(cal["ratios"]) == {"cond", "uncond"}
    assert cal["used"] == "cond" and len(cal["ratios"]["cond"]) == teacache.DEGREE + 1
    out = subprocess.run([*cli, "sweep", str(path)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "calibrating" not in out.stderr  # reused, not fitted again
    store = Store(tmp_path / "run")
    assert len(store.calibrations()) == 1
    rows = {g["params"].get("threshold"): g for g in store.generations(status="ok") if g["method"] == "teacache"}
    base = next(g for g in store.generations(status="ok") if g["method"] is None)
    assert rows[0.0]["compute_executed"] == base["compute_executed"]
    assert rows[5.0]["compute_executed"] < base["compute_executed"]


def test_a_generation_without_coefficients_refuses_instead_of_running_uncached():
    engine = tiny_engine("flux", steps=4)
    with pytest.raises(ValueError, match="coefficients are missing"):
        engine.generate(GenerationRequest(PROMPT, 0, "teacache", {"threshold": 0.1}))


@pytest.mark.parametrize("family, method", [("kandinsky5", "teacache"), ("wan22", "teacache"),
                                            ("kandinsky5", "easycache")])
def test_an_unsupported_family_is_refused_before_any_model_loads(family, method):
    from experiments.spec import Spec
    from repro.plan import build_plan

    params = {"coefficients": [1.0]} if method == "teacache" else {}
    spec = Spec.model_validate({"name": "u", "model": {"tiny": family, "device": "cpu"}, "prompts": ["a"],
                                "seeds": [0], "methods": [{"name": method, "params": params}]})
    with pytest.raises(SpecError, match=f"{method} does not support the {family} family: .*probe"):
        build_plan(spec)
