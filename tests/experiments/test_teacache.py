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


def _poly(x: float) -> float:
    """The official rescaling adds the polynomial's value itself (no absolute value)."""
    return sum(c * x ** (len(COEFFS) - 1 - i) for i, c in enumerate(COEFFS))


def _rel_l1(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).mean() / np.abs(b).mean())


def _modulated(family: str, first_block, call: dict):
    """The definition written out: Wan's time embedding e (TeaCache4Wan2.1 without --use_ret_steps), FLUX /
    HunyuanVideo norm1(x, emb=temb)."""
    import torch

    if family == "wan":
        return call["e"].numpy()
    with torch.inference_mode():
        return first_block.norm1(call["block"]["hidden_states"], emb=call["block"]["temb"])[0].float().numpy()


def _hand_decisions(signals: list, steps: int, threshold: float, warmup: int, final: int, max_skip: int = 0):
    decisions, accumulated, previous, in_row = [], 0.0, None, 0
    for k, m in enumerate(signals):
        change = None if previous is None else _rel_l1(m, previous)
        previous = m
        if change is None or k < warmup or k >= steps - final:
            accumulated, in_row = 0.0, 0
            decisions.append(True)
            continue
        accumulated += _poly(change)
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
    params = {"coefficients": list(COEFFS)}  # the official schedule: 1 warm-up step, the last step forced

    # 1. threshold 0: every block runs; the recorded modulated inputs give the scale of the signal
    recorder = CallRecorder(transformer)
    base = engine.generate(GenerationRequest(PROMPT, 0))
    exact = engine.generate(GenerationRequest(PROMPT, 0, "teacache", {**params, "threshold": 0.0}))
    assert np.array_equal(exact.frames, base.frames), "threshold 0 must reproduce the baseline bit for bit"
    trace = recorder.branches(fam.cfg == "separate")
    recorder.remove()
    first = recorder.first
    values = [abs(_poly(_rel_l1(_modulated(family, first, b), _modulated(family, first, a))))
              for calls in trace.values() for a, b in zip(calls, calls[1:])]
    threshold = 2.5 * float(np.median(values))  # some calls under it, some over

    # 2. that threshold: decisions from the recorded trace of this very run, computed by hand
    recorder = CallRecorder(transformer)
    cached = engine.generate(GenerationRequest(PROMPT, 0, "teacache", {**params, "threshold": threshold}))
    recorder.remove()
    skipped = 0
    for branch, calls in recorder.branches(fam.cfg == "separate").items():
        signals = [_modulated(family, first, c) for c in calls]
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
    # and the stored decisions say, per branch and step, what ran
    d = s["decisions"]
    assert d["computed"] == [c["ran"] for c in recorder.calls] and len(d["branch"]) == calls


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


def test_calibration_fits_the_output_change_against_the_input_change_as_the_published_fits():
    engine = tiny_engine("flux", steps=8)
    items = [(PROMPT, 0), ("a lighthouse at night", 1)]
    values = engine.calibrate("teacache", items)
    assert set(values) == {"cond"} and len(values["cond"]) == teacache.DEGREE + 1
    assert all(np.isfinite(values["cond"]))
    # the named deviation fits the block stack's residual instead: another target, other coefficients
    residual = engine.calibrate("teacache", items, {"calibration_target": "residual"})
    assert residual["cond"] != values["cond"]
    # the output target by hand: pairs (input change, output change) of one recorded uncached run
    recorder = CallRecorder(engine.pipe.transformer)
    engine.calibrate("teacache", items[:1])
    recorder.remove()
    import torch

    signals = [torch.from_numpy(_modulated("flux", recorder.first, c)) for c in recorder.calls]
    outputs = [c["v"] for c in recorder.calls]
    rel = lambda a, b: float((a - b).abs().mean() / b.abs().mean())  # noqa: E731 (float32, as the official scripts)
    pairs = [(rel(signals[i], signals[i - 1]), rel(outputs[i], outputs[i - 1])) for i in range(1, 8)]
    assert np.allclose(teacache.fit(pairs), engine.calibrate("teacache", items[:1])["cond"], rtol=1e-6)
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
    with pytest.raises(ValueError, match="use_ret_steps is a mode of TeaCache4Wan2.1 only"):
        teacache.TeaCacheConfig(coefficients=(1.0,), modulated_input="norm1", use_ret_steps=True)
    with pytest.raises(ValueError, match="calibration_target"):
        teacache.TeaCacheConfig(coefficients=(1.0,), calibration_target="loss")


def test_published_coefficients_have_a_source_and_the_plan_uses_them():
    from repro.plan import build_plan
    from experiments.spec import Spec

    for model_id, modes in teacache.PUBLISHED.items():
        for mode, (coeffs, source) in modes.items():
            assert len(coeffs) == 5 and "TeaCache" in source and mode in ("default", "ret"), model_id
    wan = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    raw = {"name": "p", "model": {"id": wan}, "prompts": ["a", "b"], "seeds": [0],
           "methods": [{"name": "teacache", "sweep": {"threshold": [0.05, 0.1]}}]}
    plan = build_plan(Spec.model_validate(raw))
    (cal,) = plan.calibrations
    assert cal.method == "teacache" and cal.published[0] == teacache.PUBLISHED[wan]["default"][0]
    # --use_ret_steps has its own coefficients, and its own calibration
    raw["methods"][0]["params"] = {"use_ret_steps": True}
    (ret,) = build_plan(Spec.model_validate(raw)).calibrations
    assert ret.published[0] == teacache.PUBLISHED[wan]["ret"][0] and ret.key != cal.key
    raw["methods"][0]["params"] = {}
    raw["methods"][0]["sweep"]["use_ret_steps"] = [False, True]
    with pytest.raises(SpecError, match="use_ret_steps changes what teacache calibrates; put it in params"):
        build_plan(Spec.model_validate(raw))
    del raw["methods"][0]["sweep"]["use_ret_steps"]
    raw["methods"][0]["calibrate"] = "always"
    (cal,) = build_plan(Spec.model_validate(raw)).calibrations
    assert cal.published is None and [p for p, _ in cal.items] == ["a", "b"]  # fitted over every prompt
    raw["model"] = {"path": "/models/my-wan", "pipeline_class": "WanPipeline"}
    raw["methods"][0]["calibrate"] = "never"
    with pytest.raises(SpecError, match="no published coefficients"):
        build_plan(Spec.model_validate(raw))


def test_deviations_name_every_option_that_is_not_the_official_scripts():
    wan = {"modulated_input": "wan"}
    assert teacache.deviations({}, wan) == [] and teacache.deviations({"use_ret_steps": True}, wan) == []
    lines = teacache.deviations({"use_ret_steps": True, "warmup_steps": 1, "final_steps": 1, "max_skip_steps": 2,
                                 "absolute_rescale": True, "calibration_target": "residual"}, wan)
    assert [ln.split("=")[0] for ln in lines] == ["warmup_steps", "final_steps", "max_skip_steps", "absolute_rescale",
                                                  "calibration_target"]
    assert "runs 5" in lines[0] and "runs 0" in lines[1]  # ret mode: 5 warm-up steps, no forced last step
    assert teacache.deviations({"warmup_steps": 1, "final_steps": 1}, {"modulated_input": "norm1"}) == []


def test_the_project_temb_rule_is_named_a_deviation_on_every_point():
    """CogView4 and LTX-Video run the project's temb rule (no official TeaCache script there): every point says so."""
    from experiments.families import get_family

    for family in ("cogview4", "ltx_video"):
        fixed = get_family(family).methods["teacache"].extra
        assert fixed["modulated_input"] == "temb"
        (line,) = teacache.deviations({}, fixed)
        assert line.startswith("modulated_input='temb'") and "not an official TeaCache script" in line
    assert "not an official" in teacache.deviations({"modulated_input": "temb"}, {"modulated_input": "norm1"})[-1]
    with pytest.raises(ValueError, match="use_ret_steps is a mode of TeaCache4Wan2.1 only"):
        teacache.TeaCacheConfig(coefficients=(1.0,), modulated_input="temb", use_ret_steps=True)


def test_the_temb_rule_reads_the_first_blocks_timestep_projection():
    """The signal of each call is the relative L1 change of the `temb` the first block receives, per CFG branch;
    a transformer whose first block takes no temb is refused."""
    import inspect

    from experiments.instrumentation import decisions_from_table
    from experiments.methods.residual_hooks import rel_l1

    engine = tiny_engine("cogview4", steps=6)
    seen = []
    block = engine.pipe.transformer.transformer_blocks[0]
    signature = inspect.signature(type(block).forward)

    def capture(module, args, kwargs):
        seen.append(signature.bind(module, *args, **kwargs).arguments["temb"].detach().clone())

    handle = block.register_forward_pre_hook(capture, with_kwargs=True)
    try:  # threshold 0 never skips: every call runs, so the block sees every call's temb
        out = engine.generate(GenerationRequest(PROMPT, 0, "teacache", {"coefficients": [1.0], "threshold": 0.0}))
    finally:
        handle.remove()
    decisions = decisions_from_table(out.summary()["decisions"])
    assert len(seen) == len(decisions) == 12 and all(d.computed for d in decisions)
    by_branch = {}
    for d, temb in zip(decisions, seen):
        previous = by_branch.get(d.branch)
        by_branch[d.branch] = temb
        if d.signal is not None:  # measured on every call but the first and last step (the forced ones)
            assert d.signal == pytest.approx(rel_l1(temb, previous), rel=1e-6)
    assert sum(d.signal is not None for d in decisions) == 8
    with pytest.raises(ValueError, match="modulated_input='temb' reads the first block's temb argument"):
        tiny_engine("kandinsky5", steps=2).generate(
            GenerationRequest(PROMPT, 0, "teacache", {"coefficients": [1.0], "modulated_input": "temb"}))


def test_ret_mode_on_a_model_without_it_is_refused_when_applied():
    engine = tiny_engine("flux", steps=4)
    with pytest.raises(ValueError, match="use_ret_steps is a mode of TeaCache4Wan2.1 only"):
        engine.generate(GenerationRequest(PROMPT, 0, "teacache", {"coefficients": [1.0], "use_ret_steps": True}))
    engine.generate(GenerationRequest(PROMPT, 0))  # the engine is left clean


def test_a_family_without_a_rule_is_refused_clearly():
    engine = tiny_engine("kandinsky5", steps=4)
    with pytest.raises(ValueError, match="teacache"):
        engine.generate(GenerationRequest(PROMPT, 0, "teacache", {"coefficients": [1.0], "threshold": 0.1}))
    # the engine is left clean
    engine.generate(GenerationRequest(PROMPT, 0))


@pytest.mark.slow
def test_calibrate_stores_coefficients_per_branch_and_the_sweep_reuses_them(tmp_path):
    import yaml
    from click.testing import CliRunner

    from repro.cli import main
    from repro.store import Store
    from tests.conftest import tiny_spec_dict

    spec = tiny_spec_dict(tmp_path / "run", prompts=["a red fox in snow"],
                          methods=[{"name": "teacache", "sweep": {"threshold": [0.0, 5.0]}}])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = CliRunner().invoke(main, ["calibrate", str(path)])
    assert out.exit_code == 0, out.output
    (cal,) = Store(tmp_path / "run").calibrations()
    assert cal["meta"]["method"] == "teacache" and set(cal["ratios"]) == {"cond", "uncond"}
    assert cal["used"] == "cond" and len(cal["ratios"]["cond"]) == teacache.DEGREE + 1
    out = CliRunner().invoke(main, ["sweep", str(path)])
    assert out.exit_code == 0, out.output
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
