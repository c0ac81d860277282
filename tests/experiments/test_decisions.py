"""Decisions on record for diffusers' caches: read from their hook state, in the shape every method uses
(experiments.instrumentation.Decision), and consistent with the compute the counters measured."""

from __future__ import annotations

import pytest

from experiments.instrumentation import DECISION_FIELDS, decisions_from_table
from experiments.runner import GenerationRequest
from tests.experiments import official_rules as official
from tests.experiments.cache_traces import PROMPT, tiny_engine

STEPS = 6


@pytest.fixture(scope="module")
def engine():
    return tiny_engine("wan", steps=STEPS)


def _units_per_call(result) -> int:
    s = result.summary()
    return s["compute_possible"] // s["transformer_calls"]


def test_mag_cache_decisions_are_read_from_its_hook_and_replay_diffusers_rule(engine):
    ratios = engine.calibrate("mag_cache", [(PROMPT, 0)])["cond"]
    params = {"threshold": 10.0, "retention_ratio": 0.2, "max_skip_steps": 2}
    result = engine.generate(GenerationRequest(PROMPT, 0, "mag_cache", params, calibration=tuple(ratios)))
    table = result.summary()["decisions"]
    assert tuple(table) == DECISION_FIELDS
    rows = decisions_from_table(table)
    assert [(d.branch, d.step) for d in rows] == [(b, s) for s in range(STEPS) for b in ("cond", "uncond")]
    # diffusers' rule, transcribed, on the one array both branches get
    for branch in ("cond", "uncond"):
        rule = official.DiffusersMagCache(ratios, **params, num_inference_steps=STEPS)
        assert [d.computed for d in rows if d.branch == branch] == [rule.forward() for _ in range(STEPS)]
    retention = int(0.2 * STEPS + 0.5)
    assert [d.signal for d in rows if d.branch == "cond"] == [None] * retention + [float(r) for r in ratios[retention:]]
    computed = sum(d.computed for d in rows)
    assert 0 < computed < len(rows)
    assert result.summary()["compute_executed"] == computed * _units_per_call(result)  # a skipped call runs nothing


def test_first_block_cache_decisions_are_read_from_its_hook(engine):
    base = engine.generate(GenerationRequest(PROMPT, 0))
    assert base.summary()["decisions"] is None  # no cache, no decisions
    result = engine.generate(GenerationRequest(PROMPT, 0, "first_block_cache", {"threshold": 1.0}))
    rows = decisions_from_table(result.summary()["decisions"])
    assert [(d.branch, d.step) for d in rows] == [(b, s) for s in range(STEPS) for b in ("cond", "uncond")]
    assert all(d.signal is None and d.accumulated is None for d in rows)  # its difference stays inside the hook
    skipped = sum(not d.computed for d in rows)
    assert skipped > 0
    # a skipped call ran the first block only: the counters agree with the recorded decisions
    per_call = _units_per_call(result)
    first_block = per_call // len(engine.pipe.transformer.blocks)
    assert result.summary()["compute_executed"] == per_call * (len(rows) - skipped) + first_block * skipped
