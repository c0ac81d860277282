"""EasyCache: skip decisions against a hand computation on a recorded trace of transformer inputs and outputs."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.families import get_family
from experiments.methods import easycache
from experiments.runner import GenerationRequest
from tests.experiments.cache_traces import PROMPT, CallRecorder, split_branches, tiny_engine


def _mad(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


def _hand(calls: list, steps: int, threshold: float, warmup: int, final: int):
    """The paper's rule for one branch, written out: returns (decisions, predicted increments of the
    non-forced calls). For Wan it is the project option per_branch_decisions (officially the cond call
    decides for both branches: tests/experiments/test_fidelity_replay.py replays that rule)."""
    decisions, increments = [], []
    previous_x = computed_x = computed_v = rate = None
    accumulated = 0.0
    for k, call in enumerate(calls):
        x = call["x"].numpy()
        change = None
        if previous_x is not None and computed_v is not None:
            change = _mad(x, previous_x) / float(np.abs(np.asarray(computed_v, np.float64)).mean())
        previous_x = x
        if not (change is None or rate is None or k < warmup or k >= steps - final):
            increments.append(rate * change)
            accumulated += rate * change
            if accumulated < threshold:
                decisions.append(False)
                continue
        accumulated = 0.0
        decisions.append(True)
        v = call["v"].numpy()
        if computed_x is not None and _mad(x, computed_x) > 0:
            rate = _mad(v, computed_v) / _mad(x, computed_x)
        computed_x, computed_v = x, v
    return decisions, increments


@pytest.mark.parametrize("family", ["wan", "flux", "hunyuan_video"])
def test_skip_decisions_match_a_hand_computation(family):
    steps, warmup = 8, 2
    engine = tiny_engine(family, steps=steps)
    fam = get_family(family)
    transformer = engine.pipe.transformer
    params = {"warmup_steps": warmup, "final_steps": 1, "per_branch_decisions": fam.cfg == "separate"}

    recorder = CallRecorder(transformer)
    base = engine.generate(GenerationRequest(PROMPT, 0))
    exact = engine.generate(GenerationRequest(PROMPT, 0, "easycache", {**params, "threshold": 0.0}))
    recorder.remove()
    assert np.array_equal(exact.frames, base.frames), "threshold 0 must reproduce the baseline bit for bit"
    calls_per_run = len(recorder.calls) // 2
    first_run = split_branches(recorder.calls[:calls_per_run], fam.cfg == "separate")  # the baseline's calls
    increments = [i for calls in first_run.values() for i in _hand(calls, steps, np.inf, warmup, 1)[1]]
    threshold = 2.5 * float(np.median(increments))

    recorder = CallRecorder(transformer)
    cached = engine.generate(GenerationRequest(PROMPT, 0, "easycache", {**params, "threshold": threshold}))
    recorder.remove()
    skipped = 0
    for branch, calls in recorder.branches(fam.cfg == "separate").items():
        expected, _ = _hand(calls, steps, threshold, warmup, 1)
        ran = [c["ran"] for c in calls]
        assert ran == expected, f"{family}/{branch}: transformer ran {ran}, hand computation says {expected}"
        skipped += ran.count(False)
        # a skipped call returns its input plus the residual of the last computed call
        last = None
        for c in calls:
            if c["ran"]:
                last = c
            else:
                np.testing.assert_allclose(c["v"].numpy(), (c["x"] + (last["v"] - last["x"])).numpy(), rtol=0, atol=1e-6)
    assert skipped > 0, f"{family}: nothing skipped at threshold {threshold}; the test would prove nothing"
    assert cached.summary()["compute_executed"] < base.summary()["compute_executed"]


def test_deviations_name_the_warm_up_and_the_cfg_rule():
    wan = get_family("wan").methods["easycache"].extra
    assert wan == {"warmup_steps": 10}  # EasyCache4Wan2.1: ret_steps = 10*2
    assert get_family("hunyuan_video").methods["easycache"].extra == {"warmup_steps": 5}
    assert easycache.deviations({}, wan) == []
    lines = easycache.deviations({"warmup_steps": 5, "per_branch_decisions": True}, wan)
    assert lines[0].startswith("warmup_steps=5: the official script for this family runs 10")
    assert lines[1].startswith("per_branch_decisions=True")
    assert "no official script for this family" in easycache.deviations({}, get_family("flux").methods["easycache"].extra)[0]


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="threshold"):
        easycache.EasyCacheConfig(threshold=-1)
    with pytest.raises(ValueError, match="warmup_steps"):
        easycache.EasyCacheConfig(warmup_steps=1.5)


def test_a_transformer_whose_output_differs_from_its_input_is_refused():
    import torch

    class Wide(torch.nn.Module):
        config = type("C", (), {"in_channels": 36, "out_channels": 16})()

    with pytest.raises(ValueError, match="in_channels == out_channels"):
        easycache.apply(Wide(), easycache.EasyCacheConfig())


def test_the_printed_python_call_enables_and_disables_it():
    from experiments.methods import get_method

    pipe = tiny_engine("flux", steps=4).pipe
    namespace = {"pipe": pipe}
    exec(get_method("easycache").python_call({"threshold": 0.05, "warmup_steps": 2}), namespace)
    assert pipe.transformer._repro_cache_run.config == easycache.EasyCacheConfig(threshold=0.05, warmup_steps=2)
    namespace["disable"]()
    assert pipe.transformer._repro_cache_run is None and pipe.transformer._repro_cache_method is None
    assert not any(getattr(m, "_diffusers_hook", None) and m._diffusers_hook.hooks for m in pipe.transformer.modules())
