"""Replay: the project's TeaCache, EasyCache and magcache_official_eval take, call by call and per CFG branch,
the decisions of the official rules transcribed in ``official_rules.py``.

(a) Real runs: the tiny twins (Wan, FLUX, HunyuanVideo) and the trained reference Wan model run with the
    project's hook; independent torch hooks record every call's signal (Wan's e and e0, the first block's
    inputs, the transformer's input and output) and whether the blocks ran; the official rule is replayed on
    those signals and must compute and skip the very same calls, and the decisions the generation stored
    (``summary()["decisions"]``) must say the same.
(b) Synthetic sequences: adversarial ones (values outside a polynomial's positive window, zero changes,
    zero previous values, diverging CFG branches, runs of 1-3 steps) and random ones (seeded draws of
    signals, thresholds, coefficients and step counts that no test names), fed to the project's decision
    code (TeaCache, MagCache: the policy the hook calls; EasyCache: its real transformer hook on a synthetic
    transformer) and to the transcription side by side.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.methods import easycache, magcache_eval, teacache
from experiments.runner import GenerationRequest
from tests.experiments import official_rules as official
from tests.experiments.cache_traces import PROMPT, CallRecorder, reference_engine, tiny_engine

WAN_13B = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
BRANCHES = ("cond", "uncond")


def _engine(model: str, steps: int):
    return reference_engine(steps) if model == "reference" else tiny_engine(model, steps=steps)


def _prompt(model: str) -> str:
    return "a red diamond moving left on a gray background" if model == "reference" else PROMPT


def _stored(result) -> list[bool]:
    """The decisions the generation stored, in call order."""
    return list(result.summary()["decisions"]["computed"])


def _rel_l1(a, b) -> float:
    return official.rel_l1_item(a, b)


# --------------------------------------------------------------------------------------------------
# (a) real runs


def _poly_values(coefficients, calls_by_branch, signal) -> list[float]:
    """The rescaled change of every consecutive pair of a branch's calls (used only to pick thresholds)."""
    poly = np.poly1d(coefficients)
    return [float(poly(_rel_l1(signal(b), signal(a)))) for calls in calls_by_branch for a, b in zip(calls, calls[1:])]


def _thresholds(values: list[float]) -> list[float]:
    """Thresholds spread over the run's own values: some calls skip, some compute (no fixed, hand-picked number)."""
    pos = sorted(abs(v) for v in values)
    return sorted({float(np.quantile(pos, 0.3)) * 1.5, float(np.quantile(pos, 0.8)) * 2.5})


@pytest.mark.parametrize("model", ["wan", "reference"])
@pytest.mark.parametrize("use_ret_steps", [False, True], ids=["non-ret", "ret"])
def test_teacache_wan_replays_the_official_rule(model, use_ret_steps):
    steps = 8
    engine = _engine(model, steps)
    transformer = engine.pipe.transformer
    coefficients = teacache.PUBLISHED[WAN_13B]["ret" if use_ret_steps else "default"][0]
    key = "e0" if use_ret_steps else "e"
    rec = CallRecorder(transformer)
    engine.generate(GenerationRequest(_prompt(model), 0))
    rec.remove()
    values = _poly_values(coefficients, [rec.calls[0::2], rec.calls[1::2]], lambda c: c[key])
    skipped = 0
    for threshold in _thresholds(values):
        rec = CallRecorder(transformer)
        result = engine.generate(GenerationRequest(_prompt(model), 0, "teacache", {
            "threshold": threshold, "use_ret_steps": use_ret_steps, "coefficients": list(coefficients)}))
        rec.remove()
        rule = official.TeaCache4Wan21(coefficients, threshold, steps, use_ret_steps)
        expected = [rule.forward(c["e"], c["e0"]) for c in rec.calls]  # cond, uncond, cond, ... as the pipeline calls
        ran = [c["ran"] for c in rec.calls]
        assert ran == expected, f"{model} threshold {threshold}: blocks ran {ran}, official rule {expected}"
        assert _stored(result) == expected
        assert result.summary()["decisions"]["branch"] == [BRANCHES[i % 2] for i in range(2 * steps)]
        skipped += expected.count(False)
    assert skipped > 0, "no call skipped at any threshold: the replay would prove nothing"


@pytest.mark.parametrize("model", ["flux", "hunyuan_video"])
def test_teacache_flux_and_hunyuan_video_replay_the_official_rule(model):
    steps = 8
    engine = _engine(model, steps)
    transformer = engine.pipe.transformer
    hub = {"flux": "black-forest-labs/FLUX.1-dev", "hunyuan_video": "hunyuanvideo-community/HunyuanVideo"}[model]
    coefficients = teacache.PUBLISHED[hub]["default"][0]

    def signal(call):  # TeaCache4FLUX: transformer_blocks[0].norm1(inp, emb=temb_) (HunyuanVideo: the same tensor)
        with torch.inference_mode():
            return rec.first.norm1(call["block"]["hidden_states"], emb=call["block"]["temb"])[0]

    rec = CallRecorder(transformer)
    engine.generate(GenerationRequest(PROMPT, 0))
    rec.remove()
    values = _poly_values(coefficients, [rec.calls], signal)
    skipped = 0
    for threshold in _thresholds(values):
        rec = CallRecorder(transformer)
        result = engine.generate(GenerationRequest(PROMPT, 0, "teacache", {"threshold": threshold,
                                                                          "coefficients": list(coefficients)}))
        rec.remove()
        rule = official.TeaCache4FluxHunyuanVideo(coefficients, threshold, steps)
        expected = [rule.forward(signal(c)) for c in rec.calls]
        assert [c["ran"] for c in rec.calls] == expected
        assert _stored(result) == expected
        skipped += expected.count(False)
    assert skipped > 0


def _replay_easycache(rec_calls, rule, threshold_name="threshold"):
    """The official rule on the recorded calls, with the recorded output of each call as its model output;
    returns (decisions, outputs). A call the rule computes where the hook skipped would get the reused
    output: the decisions differ there, which fails the comparison before that output matters."""
    decisions, outputs = [], []
    for call in rec_calls:
        out, computed = rule.forward(call["x"], lambda _x, v=call["v"]: v)
        decisions.append(computed)
        outputs.append(out)
    return decisions, outputs


@pytest.mark.parametrize("model", ["wan", "reference"])
def test_easycache_wan_replays_the_official_rule_cond_deciding_for_both_branches(model):
    """Default params: the family's official 10 warm-up steps; the cond call decides for the pair."""
    steps = 14
    engine = _engine(model, steps)
    transformer = engine.pipe.transformer
    skipped = {"cond": 0, "uncond": 0}
    threshold = 1e9  # first: skip wherever the rule may; then at a threshold from that run's own predictions
    for _ in range(2):
        rec = CallRecorder(transformer)
        result = engine.generate(GenerationRequest(_prompt(model), 0, "easycache", {"threshold": threshold}))
        rec.remove()
        expected, outputs = _replay_easycache(rec.calls, official.EasyCache4Wan(threshold, steps, ret_steps=10))
        ran = [c["ran"] for c in rec.calls]
        assert ran == expected, f"{model} threshold {threshold}: transformer ran {ran}, official rule {expected}"
        assert _stored(result) == expected
        for call, out, computed in zip(rec.calls, outputs, expected):
            if not computed:  # each branch reuses its own cached residual
                torch.testing.assert_close(call["v"], out.to(call["v"].dtype), rtol=0, atol=0)
        for i, computed in enumerate(expected):
            skipped[BRANCHES[i % 2]] += not computed
        signals = [s for s in result.summary()["decisions"]["signal"] if s is not None]
        threshold = 2.5 * float(np.median(signals))
    assert expected[:20] == [True] * 20, "the official Wan2.1 warm-up is 10 steps (ret_steps = 10*2)"
    assert skipped["cond"] > 0 and skipped["uncond"] > 0


def test_easycache_hunyuan_video_replays_the_official_rule():
    steps = 9
    engine = _engine("hunyuan_video", steps)
    transformer = engine.pipe.transformer
    threshold, skipped = 1e9, 0
    for _ in range(2):
        rec = CallRecorder(transformer)
        result = engine.generate(GenerationRequest(PROMPT, 0, "easycache", {"threshold": threshold}))
        rec.remove()
        expected, _ = _replay_easycache(rec.calls, official.EasyCache4HunyuanVideo(threshold, steps, ret_steps=5))
        assert [c["ran"] for c in rec.calls] == expected
        assert _stored(result) == expected
        skipped += expected.count(False)
        signals = [s for s in result.summary()["decisions"]["signal"] if s is not None]
        threshold = 2.5 * float(np.median(signals))
    assert expected[:5] == [True] * 5 and expected[-1], "5 warm-up steps and the last step (EasyCache4HunyuanVideo)"
    assert skipped > 0


@pytest.mark.slow
def test_magcache_official_eval_replays_the_evaluation_script_on_the_tiny_wan():
    """25 steps: the script's own indexing (retention int(2N*0.2) >= call 10) needs at least 25."""
    steps = 25
    engine = _engine("wan", steps)
    rng = np.random.default_rng(7)
    ratios = list(1.0 - rng.uniform(0.0, 0.08, 2 * steps - 10))
    rec = CallRecorder(engine.pipe.transformer)
    result = engine.generate(GenerationRequest(PROMPT, 0, "magcache_official_eval",
                                               {"threshold": 0.12, "max_skip_steps": 2, "mag_ratios": ratios}))
    rec.remove()
    rule = official.MagCacheWanEval(ratios, 0.12, 2, steps)
    expected = [rule.forward() for _ in rec.calls]
    assert [c["ran"] for c in rec.calls] == expected
    assert _stored(result) == expected
    assert expected.count(False) > 0


# --------------------------------------------------------------------------------------------------
# (b) synthetic sequences: TeaCache


def _scaled_signals(changes, rng, start: float = 1.0, size: int = 24) -> list[torch.Tensor]:
    """Signals c_t * v (one fixed positive v) whose relative L1 change from one call to the next is changes[t]."""
    base = torch.from_numpy(rng.uniform(0.5, 1.5, size)).float()
    c, out = start, [start * base]
    for x in changes:
        c = c * (1.0 + x)
        out.append(c * base)
    return out


def _drive_teacache(config: teacache.TeaCacheConfig, calls: list[tuple[str, torch.Tensor]]) -> list[bool]:
    """The project's TeaCache on (branch, signal) calls, as its block hook drives it (per-branch state and step)."""
    from experiments.methods.residual_hooks import CacheState

    run = teacache.TeaCacheRun(config)
    states: dict[str, CacheState] = {}
    out = []
    for branch, signal in calls:
        state = states.setdefault(branch, CacheState(teacache.TeaCacheState))
        state.branch = branch
        compute = run.decide_signal(state, signal)
        state.step += 1
        if compute:
            state.residual = (torch.zeros(1), None)
        out.append(compute)
    return out


def _wan_case(cond_changes, uncond_changes, coefficients, threshold, use_ret_steps, rng):
    steps = len(cond_changes) + 1
    e = {"cond": _scaled_signals(cond_changes, rng), "uncond": _scaled_signals(uncond_changes, rng, start=2.0)}
    e0 = {b: [torch.nn.functional.silu(s) for s in e[b]] for b in BRANCHES}  # any second signal will do
    calls = [(b, (e[b][t], e0[b][t])) for t in range(steps) for b in BRANCHES]
    rule = official.TeaCache4Wan21(coefficients, threshold, steps, use_ret_steps)
    expected = [rule.forward(*sig) for _, sig in calls]
    config = teacache.TeaCacheConfig(threshold=threshold, coefficients=tuple(coefficients), modulated_input="wan",
                                     use_ret_steps=use_ret_steps, num_inference_steps=steps)
    got = _drive_teacache(config, [(b, sig[1] if use_ret_steps else sig[0]) for b, sig in calls])
    return got, expected


WAN_CASES = {
    # x below the ret polynomial's positive window (1.3B: x < 0.00431): poly(x) < 0, the accumulator falls
    "below-window": ([0.002] * 29, [0.002] * 29),
    # small changes mid-run, large ones (x > 0.1019: poly(x) < 0 again) in the last 8 steps
    "large-late": ([0.02] * 21 + [0.3] * 8, [0.02] * 21 + [0.3] * 8),
    "zero-change": ([0.0] * 29, [0.0] * 29),
    "diverging-branches": ([0.001] * 29, [0.25] * 29),
    "one-step": ([], []),
    "two-steps": ([0.05], [0.5]),
    "three-steps": ([0.05, 0.05], [0.0, 0.9]),
}


@pytest.mark.parametrize("case", WAN_CASES)
@pytest.mark.parametrize("use_ret_steps", [False, True], ids=["non-ret", "ret"])
@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.08, 0.3])
def test_teacache_wan_adversarial_sequences(case, use_ret_steps, threshold):
    cond, uncond = WAN_CASES[case]
    coefficients = teacache.PUBLISHED[WAN_13B]["ret" if use_ret_steps else "default"][0]
    got, expected = _wan_case(cond, uncond, coefficients, threshold, use_ret_steps, np.random.default_rng(0))
    assert got == expected


def test_teacache_wan_adversarial_sequences_do_differ_from_the_absolute_rescale():
    """The named deviation is a real one: with |poly| the 'large-late' case computes what the official skips."""
    coefficients = teacache.PUBLISHED[WAN_13B]["ret"][0]
    cond, uncond = WAN_CASES["large-late"]
    _, expected = _wan_case(cond, uncond, coefficients, 0.08, True, np.random.default_rng(0))
    config = teacache.TeaCacheConfig(threshold=0.08, coefficients=coefficients, modulated_input="wan",
                                     use_ret_steps=True, num_inference_steps=30, absolute_rescale=True)
    rng = np.random.default_rng(0)
    e = {"cond": _scaled_signals(cond, rng), "uncond": _scaled_signals(uncond, rng, start=2.0)}
    absolute = _drive_teacache(config, [(b, torch.nn.functional.silu(e[b][t])) for t in range(30) for b in BRANCHES])
    assert absolute[-16:].count(False) < expected[-16:].count(False)


def test_teacache_zero_and_vanishing_previous_signals_behave_as_torch_division():
    """A previous signal of zeros: the official relative L1 is inf (or NaN for 0/0); poly(inf) is NaN (0*inf in
    Horner's rule), a NaN accumulator is never under the threshold: computed, as the official code does."""
    coefficients = teacache.PUBLISHED["black-forest-labs/FLUX.1-dev"]["default"][0]
    z, one = torch.zeros(8), torch.ones(8)
    for signals in ([one, z, one, one, z, z, one], [z, z, z, z, one, one, one]):
        rule = official.TeaCache4FluxHunyuanVideo(coefficients, 0.5, len(signals))
        with np.errstate(invalid="ignore"):  # np.poly1d(inf): 0 * inf, as in the official run
            expected = [rule.forward(s) for s in signals]
        config = teacache.TeaCacheConfig(threshold=0.5, coefficients=coefficients, num_inference_steps=len(signals))
        assert _drive_teacache(config, [("cond", s) for s in signals]) == expected


def test_teacache_random_sequences_match_the_official_rules():
    """Held-out: seeded random signals, coefficients (published and random, of any sign), thresholds, step counts."""
    rng = np.random.default_rng(20260501)
    published = [m[k][0] for m in teacache.PUBLISHED.values() for k in m]
    for _ in range(150):
        steps = int(rng.integers(1, 40))
        coefficients = published[rng.integers(len(published))] if rng.random() < 0.5 \
            else tuple(rng.normal(0, 10.0 ** rng.uniform(0, 4), 5))
        threshold = float(rng.choice([0.0, rng.uniform(0, 0.3), rng.uniform(0, 3)]))
        def changes():  # 20% zero changes, the rest spread over four decades
            return list(np.where(rng.random(steps - 1) < 0.2, 0.0, 10 ** rng.uniform(-4, 0, steps - 1)))
        if rng.random() < 0.5:  # Wan, both modes, interleaved branches
            got, expected = _wan_case(changes(), changes(), coefficients, threshold, bool(rng.random() < 0.5), rng)
        else:  # FLUX / HunyuanVideo: one call per step
            signals = _scaled_signals(changes(), rng)
            rule = official.TeaCache4FluxHunyuanVideo(coefficients, threshold, steps)
            expected = [rule.forward(s) for s in signals]
            config = teacache.TeaCacheConfig(threshold=threshold, coefficients=tuple(coefficients),
                                             num_inference_steps=steps)
            got = _drive_teacache(config, [("cond", s) for s in signals])
        assert got == expected, f"steps {steps}, coefficients {coefficients}, threshold {threshold}"


# --------------------------------------------------------------------------------------------------
# (b) synthetic sequences: EasyCache through its real hook on a synthetic transformer


class SyntheticTransformer(torch.nn.Module):
    """A 'transformer' whose output is a given function of its input, with diffusers' cache contexts."""

    def __init__(self, models: dict):
        super().__init__()
        self.models = models
        self.branch = "cond"

    def forward(self, hidden_states):
        return self.models[self.branch](hidden_states)


def _with_cache_mixin(models):
    from diffusers.models.cache_utils import CacheMixin

    cls = type("SyntheticCacheTransformer", (SyntheticTransformer, CacheMixin), {})
    return cls(models)


def _easycache_episode(models: dict, steps: int, threshold: float, warmup: int, branches, x0, dt: float,
                       per_branch: bool = False):
    """One denoising loop run twice in lockstep, by the official rule and by the project's hook; returns the
    decisions of both, call by call. The latent advances with the official outputs (identical while decisions
    agree)."""
    transformer = _with_cache_mixin(models)
    config = easycache.EasyCacheConfig(threshold=threshold, warmup_steps=warmup, num_inference_steps=steps,
                                       per_branch_decisions=per_branch)
    easycache.apply(transformer, config)
    run = transformer._repro_cache_run
    rule = official.EasyCache4Wan(threshold, steps, ret_steps=warmup) if len(branches) == 2 \
        else official.EasyCache4HunyuanVideo(threshold, steps, ret_steps=warmup)
    x, got, expected = x0.clone(), [], []
    for _ in range(steps):
        outs = []
        for branch in branches:
            ref, computed = rule.forward(x, models[branch])
            transformer.branch = branch
            with transformer.cache_context(branch):
                ours = transformer(hidden_states=x)
            got.append(run.trace[-1]["computed"])
            expected.append(computed)
            if computed == got[-1]:
                torch.testing.assert_close(ours.float(), ref.float(), rtol=0, atol=0)
            outs.append(ref)
        guided = outs[-1] + 5.0 * (outs[0] - outs[-1]) if len(outs) == 2 else outs[0]
        x = x - dt * guided
    easycache.remove(transformer)
    return got, expected


def _models(rng, zero_output: bool = False, diverge: float = 0.0):
    w = {b: torch.from_numpy(rng.normal(0, 0.3, (16, 16))).float() for b in BRANCHES}

    def make(b):
        if zero_output:
            return lambda x: torch.zeros_like(x)
        return lambda x: torch.tanh(x @ w[b]) * (1.0 + (diverge if b == "uncond" else 0.0)) + 0.1 * x
    return {b: make(b) for b in BRANCHES}


EASY_CASES = {
    "moving": dict(dt=0.05),
    "zero-input-change": dict(dt=0.0),  # x never moves: k = 0/0 = NaN, the accumulator NaN: never skips
    "zero-output": dict(dt=0.05, zero_output=True),  # output norm 0: predicted change inf or NaN
    "diverging-branches": dict(dt=0.05, diverge=20.0),
}


@pytest.mark.parametrize("case", EASY_CASES)
@pytest.mark.parametrize("steps", [1, 2, 11, 12, 13, 30])
@pytest.mark.parametrize("wan", [True, False], ids=["wan", "hunyuan_video"])
def test_easycache_adversarial_sequences(case, steps, wan):
    rng = np.random.default_rng(1)
    opts = dict(EASY_CASES[case])
    dt = opts.pop("dt")
    branches, warmup = (BRANCHES, 10) if wan else (("cond",), 5)
    x0 = torch.from_numpy(rng.normal(0, 1, (2, 16))).float()
    for threshold in (0.0, 0.02, 0.1, 1e9):
        got, expected = _easycache_episode(_models(rng, **opts), steps, threshold, warmup, branches, x0, dt)
        assert got == expected, f"threshold {threshold}"


def test_easycache_random_episodes_match_the_official_rules():
    """Held-out: seeded random models, step sizes, thresholds, warm-ups and step counts."""
    rng = np.random.default_rng(424242)
    for _ in range(40):
        wan = bool(rng.random() < 0.6)
        steps, warmup = int(rng.integers(1, 25)), int(rng.integers(1, 12))
        threshold = float(rng.choice([0.0, rng.uniform(0, 0.05), rng.uniform(0, 0.5), 1e9]))
        x0 = torch.from_numpy(rng.normal(0, rng.uniform(0.1, 3), (2, 16))).float()
        got, expected = _easycache_episode(_models(rng, diverge=float(rng.uniform(0, 5))), steps, threshold, warmup,
                                           BRANCHES if wan else ("cond",), x0, float(rng.uniform(0, 0.2)))
        assert got == expected, f"wan={wan} steps {steps} warmup {warmup} threshold {threshold}"


def test_per_branch_decisions_is_a_real_deviation():
    """The named option changes what the uncond branch computes (issue 29: 19 vs 36 uncond steps at 0.05)."""
    rng = np.random.default_rng(3)
    x0 = torch.from_numpy(rng.normal(0, 1, (2, 16))).float()
    models = _models(rng, diverge=3.0)
    _, official_decisions = _easycache_episode(models, 30, 0.05, 10, BRANCHES, x0, 0.05)
    per_branch, _ = _easycache_episode(models, 30, 0.05, 10, BRANCHES, x0, 0.05, per_branch=True)
    assert per_branch != official_decisions


# --------------------------------------------------------------------------------------------------
# (b) synthetic sequences: MagCache's evaluation script


def _drive_magcache(config: magcache_eval.MagCacheEvalConfig, steps: int, branches=BRANCHES) -> list[bool]:
    from experiments.methods.residual_hooks import CacheState

    run = magcache_eval.MagCacheEvalRun(config)
    states = {b: CacheState(magcache_eval.MagCacheEvalState) for b in branches}
    out = []
    for _ in range(steps):
        for b in branches:
            state = states[b]
            state.branch = b
            compute = run.decide(state, None, (), {})
            state.step += 1
            if compute:
                state.residual = (torch.zeros(1), None)
            out.append(compute)
    return out


@pytest.mark.parametrize("threshold, k", [(0.12, 2), (0.12, 4), (0.06, 3), (0.0, 5), (1.0, 1)])
def test_magcache_official_eval_replays_the_script_on_its_published_ratios(threshold, k):
    config = magcache_eval.MagCacheEvalConfig(threshold=threshold, max_skip_steps=k,
                                              mag_ratios=magcache_eval.WAN_13B_RATIOS, num_inference_steps=50)
    rule = official.MagCacheWanEval(magcache_eval.WAN_13B_RATIOS, threshold, k, 50)
    assert _drive_magcache(config, 50) == [rule.forward() for _ in range(100)]


def test_magcache_official_eval_random_ratio_lists():
    """Held-out: seeded random ratio lists (some > 1, some exactly 1), thresholds, K and step counts >= 25."""
    rng = np.random.default_rng(99)
    for _ in range(60):
        steps = int(rng.integers(25, 60))
        ratios = np.where(rng.random(2 * steps - 10) < 0.1, 1.0, rng.uniform(0.8, 1.05, 2 * steps - 10))
        threshold, k = float(rng.uniform(0, 0.3)), int(rng.integers(0, 6))
        config = magcache_eval.MagCacheEvalConfig(threshold=threshold, max_skip_steps=k, mag_ratios=tuple(ratios),
                                                  num_inference_steps=steps)
        rule = official.MagCacheWanEval(ratios, threshold, k, steps)
        assert _drive_magcache(config, steps) == [rule.forward() for _ in range(2 * steps)]


def test_diffusers_mag_cache_differs_from_the_evaluation_script():
    """What docs/fidelity.md reports: on the script's ratios (cond branch, threshold 0.12, retention 0.2, 50 steps)
    the script skips 26 (K=2) and 31 (K=4) cond steps; diffusers' rule, given the same cond ratios as they are
    written (no square roots), 25 and 29 (issue 29's replay found the same pairs)."""
    cond = magcache_eval.WAN_13B_RATIOS[0::2]  # calls 10, 12, ...: the cond branch's steps 5..49
    counts = {}
    for k in (2, 4):
        script = official.MagCacheWanEval(magcache_eval.WAN_13B_RATIOS, 0.12, k, 50)
        skipped_script = [not script.forward() for _ in range(100)][0::2].count(True)
        hook = official.DiffusersMagCache([1.0] * 5 + list(cond), 0.12, k, 0.2, 50)
        skipped_diffusers = [not hook.forward() for _ in range(50)].count(True)
        counts[k] = (skipped_script, skipped_diffusers)
    assert counts == {2: (26, 25), 4: (31, 29)}, counts
