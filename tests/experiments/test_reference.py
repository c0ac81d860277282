"""The reference world, its training code, the shipped reference CLIP and its manifest, and how a
spec reaches them (model.reference, metrics.clip_model: reference)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import metrics
from experiments.reference import CLIP_DIR, WEIGHTS_DIR, ReferenceUnavailable, check_weights, clip_model_id
from experiments.reference.manifest import manifest_problems, read_manifest
from experiments.reference.model import HEIGHT, MAX_SEQUENCE_LENGTH, NUM_FRAMES
from experiments.reference.world import (
    BACKGROUNDS, COLOURS, MOTIONS, SHAPES, WORLD, Caption, classify_clip, parse_caption, render_clip,
)
from experiments.spec import Spec


def _spec_dict(run_dir, **generation) -> dict:
    return {
        "name": "reference-test",
        "model": {"reference": "wan", "device": "cpu"},
        "generation": {"height": HEIGHT, "width": HEIGHT, "num_frames": NUM_FRAMES, "num_inference_steps": 10,
                       "guidance_scale": 5.0, "max_sequence_length": MAX_SEQUENCE_LENGTH, **generation},
        "prompts": ["a red circle moving left on a black background"],
        "seeds": [0],
        "methods": [{"name": "first_block_cache", "sweep": {"threshold": [0.0]}}],
        "metrics": {"names": ["psnr"], "device": "cpu"},
        "timing": {"warmup": 0, "repeats": 1},
        "wandb": {"mode": "disabled"},
        "output": {"dir": str(run_dir), "mp4": False},
    }


# -- the world ---------------------------------------------------------------------------------


def test_grammar_split_is_fixed_disjoint_and_covers_every_colour_and_motion():
    every = WORLD.captions()
    assert len(every) == len(COLOURS) * len(SHAPES) * len(MOTIONS) * len(BACKGROUNDS)
    held = WORLD.held_out()
    assert len(held) == len(set(held)) == 20
    assert set(held).isdisjoint(WORLD.training()) and len(WORLD.training()) == len(every) - 20
    assert {c.colour for c in held} == set(COLOURS) and {c.motion for c in held} == set(MOTIONS)
    assert held == WORLD.held_out()  # deterministic


def test_caption_text_round_trips_and_bad_captions_name_the_word():
    for cap in WORLD.captions()[:30]:
        assert parse_caption(cap.text) == cap
    with pytest.raises(ValueError, match="'pink'"):
        parse_caption("a pink circle moving left on a black background")
    with pytest.raises(ValueError, match="not a reference-world caption"):
        parse_caption("a red fox in snow")


def test_classifier_reads_rendered_clips_back():
    # The classifier the behaviour tests rely on, checked on ground-truth clips (with jitter).
    for i, cap in enumerate(WORLD.captions()):
        reading = classify_clip(render_clip(cap, frames=NUM_FRAMES, size=HEIGHT, jitter=i))
        assert (reading.colour, reading.motion, reading.background) == (cap.colour, cap.motion, cap.background), cap


def test_clip_is_deterministic_and_moves():
    cap = Caption("red", "circle", "right", "black")
    a, b = render_clip(cap), render_clip(cap)
    assert np.array_equal(a, b) and a.shape == (9, 32, 32, 3) and a.dtype == np.float32
    assert not np.array_equal(a[0], a[-1])
    assert classify_clip(a).displacement[0] > 10


# -- the shipped weights -----------------------------------------------------------------------


def test_shipped_weights_match_their_manifest():
    listed = read_manifest(WEIGHTS_DIR)
    assert any(name.startswith("clip/") and name.endswith(".safetensors") for name in listed)
    assert manifest_problems(WEIGHTS_DIR) == []
    check_weights()
    total = sum((WEIGHTS_DIR / name).stat().st_size for name in listed)
    assert total <= 15 * 2**20
    assert not [p for p in WEIGHTS_DIR.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]  # safetensors only


def test_manifest_catches_a_changed_a_missing_and_an_unlisted_file(tmp_path):
    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    weights = sorted(copy.rglob("*.safetensors"))
    data = bytearray(weights[0].read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights[0].write_bytes(bytes(data))
    next(p for p in sorted(copy.rglob("*.json")) if p.name != "SHA256SUMS").unlink()
    (copy / "extra.txt").write_text("x")
    problems = manifest_problems(copy)
    assert any("sha256 differs" in p for p in problems)
    assert any("missing" in p for p in problems)
    assert any("extra.txt: not listed" in p for p in problems)


def test_damaged_or_missing_reference_weights_stop_the_sweep_before_its_run_dir(tmp_path, monkeypatch):
    import experiments.reference as ref
    from experiments.pipelines import ModelUnavailable, check_model_available

    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    monkeypatch.setattr(ref, "WEIGHTS_DIR", copy)
    spec = Spec.model_validate(_spec_dict(tmp_path / "run"))
    shutil.rmtree(copy / "wan")  # the trained Wan weights gone: the message says how to train them
    with pytest.raises(ModelUnavailable, match="no trained weights.*python -m experiments.reference.train"):
        check_model_available(spec.model)
    shutil.copytree(WEIGHTS_DIR / "wan", copy / "wan")
    config = copy / "clip" / "open_clip_config.json"
    config.write_text(config.read_text() + " ")
    with pytest.raises(ReferenceUnavailable, match="clip/open_clip_config.json: sha256 differs"):
        ref.check_weights()
    with pytest.raises(ModelUnavailable, match="python -m experiments.reference.train"):
        check_model_available(spec.model)


def test_unknown_reference_name_is_a_spec_error(tmp_path):
    with pytest.raises(Exception, match="unknown reference model 'flux'; reference models: wan"):
        Spec.model_validate({**_spec_dict(tmp_path), "model": {"reference": "flux"}})
    with pytest.raises(Exception, match="exactly one of"):
        Spec.model_validate({**_spec_dict(tmp_path), "model": {"reference": "wan", "tiny": "wan"}})


# -- training ----------------------------------------------------------------------------------


def _few_steps(seed: int):
    """Two steps of every stage from an untrained model; returns losses and the trained tensors."""
    import open_clip
    import torch

    from experiments.reference import train as T
    from experiments.reference.model import build_untrained

    cfg = T.TrainConfig(seed=seed, vae_batch=2, transformer_batch=4, clip_batch=8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = build_untrained(seed)
        vae_losses = T.train_vae(pipe.vae, cfg, steps=2, log=lambda s: None)
        captions = WORLD.training()[:4]
        with torch.no_grad():
            latents = pipe.vae.encode(T._clips(captions, range(4), NUM_FRAMES, HEIGHT)).latent_dist.mean
        T.set_latent_stats(pipe.vae, latents)
        x0 = T.normalise(pipe.vae, latents)
        emb = T.caption_embeddings(pipe)
        tr_losses = T.train_transformer(pipe.transformer, x0, torch.arange(4), emb, cfg, steps=2, log=lambda s: None)
        clip = T.build_clip(pipe.tokenizer, seed + 3)
        tokenizer = open_clip.get_tokenizer(clip_model_id())  # the shipped folder's tokenizer
        clip_losses = T.train_clip(clip, tokenizer, cfg, steps=2, log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    tensors = {f"vae.{k}": v for k, v in pipe.vae.state_dict().items()}
    tensors |= {f"transformer.{k}": v for k, v in pipe.transformer.state_dict().items()}
    tensors |= {f"clip.{k}": v for k, v in clip.state_dict().items()}
    return (vae_losses, tr_losses, clip_losses), tensors


def test_a_few_training_steps_run_learn_and_are_deterministic():
    import torch

    from experiments.reference.model import build_untrained

    losses, tensors = _few_steps(0)
    again_losses, again = _few_steps(0)
    assert losses == again_losses
    assert all(np.isfinite(x) for stage in losses for x in stage)
    assert tensors.keys() == again.keys()
    assert all(torch.equal(tensors[k], again[k]) for k in tensors)
    fresh = build_untrained(0)
    changed = [k for k, v in fresh.transformer.state_dict().items() if not torch.equal(v, tensors[f"transformer.{k}"])]
    assert changed, "two optimiser steps changed no transformer weight"


# -- behaviour of the trained model ------------------------------------------------------------


def test_reference_clip_is_labelled_and_prefers_the_right_caption():
    scorer = metrics.Scorer(names=("clip",), device="cpu", clip_model=clip_model_id())
    label = scorer.labels["clip"]
    assert "reference" in label and "not comparable" in label and "random" not in label
    right, wrong = 0, 0
    for i, cap in enumerate(WORLD.held_out()):
        frames = (render_clip(cap, jitter=i) * 255).round().astype(np.uint8)
        other = Caption(next(c for c in COLOURS if c != cap.colour), cap.shape, cap.motion, cap.background)
        right += scorer.score_prompt(frames, cap.text)["value"] > scorer.score_prompt(frames, other.text)["value"]
        wrong += 1
    assert right >= 0.9 * wrong
    assert (CLIP_DIR / "open_clip_config.json").is_file()


def test_a_spec_selects_the_reference_clip_by_name(tmp_path):
    from repro.scoring import build_scorer

    spec = Spec.model_validate({**_spec_dict(tmp_path), "metrics": {"names": ["clip"], "clip_model": "reference",
                                                                     "device": "cpu"}})
    assert spec.metrics.clip_model_id == clip_model_id() == f"local-dir:{CLIP_DIR}"
    scorer = build_scorer(spec.metrics)
    assert scorer.labels["clip"].startswith("clip_reference-CLIP") and not any(scorer.random_weights.values())
    assert metrics.fetch_weights(clip_model=clip_model_id(), metrics=("clip",)) == [str(CLIP_DIR)]
