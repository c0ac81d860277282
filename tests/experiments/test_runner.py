"""The generation engine on the tiny Wan twin: same seeds, bit-exact no-op caches, honest counting."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.errors import SpecError
from experiments.pipelines import ModelUnavailable, load_pipeline
from experiments.runner import Engine, GenerationRequest
from experiments.spec import Spec
from tests.conftest import tiny_spec_dict

PROMPT = "a red fox in snow"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    spec = Spec.model_validate(tiny_spec_dict(tmp_path_factory.mktemp("run")))
    return Engine(spec)


@pytest.fixture(scope="module")
def baseline(engine):
    return engine.generate(GenerationRequest(prompt=PROMPT, seed=0))


def test_baseline_shape_and_full_compute(engine, baseline):
    assert baseline.kind == "video"
    assert baseline.frames.shape == (5, 16, 16, 3) and baseline.frames.dtype == np.uint8
    s = baseline.summary()
    assert s["compute_executed"] == s["compute_possible"] > 0
    assert s["step_computed"] == [1.0] * engine.spec.generation.num_inference_steps


def test_same_seed_identical_different_seed_differs(engine, baseline):
    again = engine.generate(GenerationRequest(prompt=PROMPT, seed=0))
    other = engine.generate(GenerationRequest(prompt=PROMPT, seed=1))
    assert np.array_equal(again.frames, baseline.frames)
    assert not np.array_equal(other.frames, baseline.frames)


def test_first_block_cache_threshold_zero_is_bit_exact(engine, baseline):
    cached = engine.generate(GenerationRequest(prompt=PROMPT, seed=0, method="first_block_cache",
                                               params={"threshold": 0.0}))
    assert np.array_equal(cached.frames, baseline.frames)
    assert cached.summary()["compute_executed"] == baseline.summary()["compute_executed"]


def test_positive_threshold_skips_and_does_not_leak(engine, baseline):
    cached = engine.generate(GenerationRequest(prompt=PROMPT, seed=0, method="first_block_cache",
                                               params={"threshold": 0.5}))
    s = cached.summary()
    assert s["compute_executed"] < baseline.summary()["compute_executed"]
    assert min(s["step_computed"]) < 1.0 and s["step_computed"][0] == 1.0
    assert not engine.pipe.transformer.is_cache_enabled
    after = engine.generate(GenerationRequest(prompt=PROMPT, seed=0))
    assert np.array_equal(after.frames, baseline.frames)


def test_magcache_calibration_reads_both_cfg_branches(engine, baseline):
    ratios = engine.calibrate("mag_cache", [(PROMPT, 0)])
    steps = engine.spec.generation.num_inference_steps
    assert set(ratios) == {"cond", "uncond"}  # Wan runs CFG as two separate passes
    assert all(len(r) == steps and r[0] == 1.0 for r in ratios.values())
    cached = engine.generate(GenerationRequest(prompt=PROMPT, seed=0, method="mag_cache",
                                               params={"threshold": 10.0, "retention_ratio": 0.0, "max_skip_steps": 2},
                                               calibration=tuple(ratios["cond"])))
    assert cached.summary()["compute_executed"] < baseline.summary()["compute_executed"]


def test_loop_profile_parts_add_up(engine):
    run = engine.generate(GenerationRequest(prompt=PROMPT, seed=0)).runs[0]
    assert len(run.step_s) == engine.spec.generation.num_inference_steps
    # other_s is the time covered by no phase (measured from the union of the phases' intervals), so the
    # parts add up to the end-to-end time only if the phases are disjoint and inside the call
    parts = run.text_encode_s + run.denoise_s + run.vae_decode_s + run.other_s
    assert parts == pytest.approx(run.e2e_s, rel=1e-9)
    assert run.other_s > 0
    # inside the loop: transformer time plus the gaps between calls cannot exceed the loop itself
    assert run.transformer_s + run.inter_step_gap_s <= run.denoise_s * 1.001
    assert run.transformer_s > 0.5 * run.denoise_s
    assert 0 < run.text_encode_s < run.e2e_s and 0 < run.vae_decode_s < run.e2e_s


def test_parts_do_not_add_up_when_phases_overlap(engine):
    """The check above can fail: a text-encoder span inside the denoise loop (double counted) breaks it."""
    instr = engine.instrumentation
    start = instr.start()
    engine.call(GenerationRequest(prompt=PROMPT, seed=0))
    instr._text_spans.append((instr._calls[0][0], instr._calls[-1][1]))  # as if the loop were text encoding too
    run = instr.stop(start)
    parts = run.text_encode_s + run.denoise_s + run.vae_decode_s + run.other_s
    assert parts > run.e2e_s * 1.2


def test_roundtrip_through_local_folder_offline(engine, baseline, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine.pipe.save_pretrained(tmp_path / "tiny-wan")
    spec = engine.spec.model_copy(update={"model": engine.spec.model.model_copy(
        update={"tiny": None, "path": str(tmp_path / "tiny-wan"), "pipeline_class": "WanPipeline"})})
    loaded = Engine(spec).generate(GenerationRequest(prompt=PROMPT, seed=0))
    assert np.array_equal(loaded.frames, baseline.frames)


def test_missing_hub_model_offline_names_model_and_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    model = Spec.model_validate(tiny_spec_dict(tmp_path)).model.model_copy(
        update={"tiny": None, "id": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"})
    with pytest.raises(ModelUnavailable, match=r"Wan-AI/Wan2.1-T2V-1.3B-Diffusers.*repro fetch-weights"):
        load_pipeline(model)


def test_local_folder_that_is_not_a_pipeline(tmp_path):
    model = Spec.model_validate(tiny_spec_dict(tmp_path)).model.model_copy(update={"tiny": None, "path": str(tmp_path)})
    with pytest.raises(SpecError, match="no model_index.json"):
        load_pipeline(model)


@pytest.mark.parametrize("value", ["", "0", "1", "true", "True", "TRUE", "yes", "on", "ON", "off", "false", "no",
                                   " 1", "2"])
def test_one_hf_hub_offline_parser_agrees_with_huggingface_hub(monkeypatch, value):
    """Model loading and metric weights read HF_HUB_OFFLINE with one parser, the hub's own rule."""
    from huggingface_hub.constants import _is_true

    from experiments import pipelines
    from metrics import weights

    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert pipelines._hub_offline() is weights.offline() is _is_true(value)
