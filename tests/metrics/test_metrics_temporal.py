"""Temporal metrics against hand computations on synthetic clips; VBench's rules against transcriptions."""

from __future__ import annotations

import math

import numpy as np
import pytest

import metrics
from metrics import registry

H = W = 8
TEMPORAL = ("psnr_tdiff", "mae_tdiff", "vbench_temporal_flickering")


def still(n: int = 4, level: int = 100) -> np.ndarray:
    return np.full((n, H, W, 3), level, np.uint8)


@pytest.fixture(scope="module")
def scorer():
    return metrics.Scorer(names=TEMPORAL, device="cpu", batch_size=2)  # batch 2: chunks split every video


def pair_and_alone(s, cached, baseline):
    out = s.score_pair(cached, baseline)
    out.update(s.score_alone(cached))
    return out


def test_still_clip_against_itself_is_the_identity(scorer):
    v = still()
    r = pair_and_alone(scorer, v, v)
    assert r["psnr_tdiff"]["value"] == registry.get("psnr_tdiff").identity == math.inf
    assert r["mae_tdiff"]["value"] == registry.get("mae_tdiff").identity == 0.0
    assert r["psnr_tdiff"]["per_frame"] == [math.inf] * 3 and r["psnr_tdiff"]["n_inf"] == 3
    assert r["vbench_temporal_flickering"]["value"] == 1.0  # a still video does not flicker


def test_one_frame_swapped(scorer):
    # baseline: a ramp 0, 40, 80, 120 (every pixel); cached: frames 1 and 2 swapped -> 0, 80, 40, 120
    base = np.stack([np.full((H, W, 3), 40 * t, np.uint8) for t in range(4)])
    cached = base[[0, 2, 1, 3]]
    r = pair_and_alone(scorer, cached, base)
    # by hand: D(base) = 40, 40, 40; D(cached) = 80, -40, 80; E = 40, -80, 40 (levels of 255)
    e = np.array([40, -80, 40]) / 255.0
    np.testing.assert_allclose(r["mae_tdiff"]["per_frame"], np.abs(e), rtol=0, atol=1e-15)
    assert r["mae_tdiff"]["value"] == pytest.approx(np.abs(e).mean(), abs=1e-15)
    np.testing.assert_allclose(r["psnr_tdiff"]["per_frame"], 10 * np.log10(1 / e**2), rtol=0, atol=1e-12)
    assert r["psnr_tdiff"]["value"] == pytest.approx(np.mean(10 * np.log10(1 / e**2)), abs=1e-12)
    # VBench flickering of the cached video alone: |80|, |40|, |80| -> (255 - 200/3) / 255
    assert r["vbench_temporal_flickering"]["value"] == pytest.approx((255 - 200 / 3) / 255, abs=1e-15)
    baseline_alone = scorer.score_alone(base)["vbench_temporal_flickering"]["value"]
    assert baseline_alone == pytest.approx((255 - 40) / 255, abs=1e-15)  # the swap adds flicker


def test_per_frame_noise(scorer, rng):
    base = still(5, 128)
    noise = rng.integers(-6, 7, base.shape)
    cached = (base.astype(int) + noise).astype(np.uint8)
    r = pair_and_alone(scorer, cached, base)
    d = np.diff(noise.astype(float) / 255.0, axis=0)  # the baseline is still: E_t = D_t(noise)
    mae = np.abs(d).reshape(4, -1).mean(axis=1)
    mse = (d**2).reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(r["mae_tdiff"]["per_frame"], mae, rtol=1e-12)
    np.testing.assert_allclose(r["psnr_tdiff"]["per_frame"], 10 * np.log10(1 / mse), rtol=1e-12)
    flick = np.abs(np.diff(cached.astype(float), axis=0)).reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(r["vbench_temporal_flickering"]["per_frame"], (255 - flick) / 255, rtol=1e-12)


def test_float_and_uint8_inputs_agree(scorer, rng):
    base = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    cached = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    a = pair_and_alone(scorer, cached, base)
    b = pair_and_alone(scorer, cached / 255.0, base / 255.0)
    for k in TEMPORAL:
        assert a[k]["value"] == pytest.approx(b[k]["value"], rel=1e-12), k


def test_an_image_gets_no_value_and_says_why(scorer):
    img = still(1)[0]
    r = pair_and_alone(scorer, img, img)
    for k in TEMPORAL:
        assert r[k]["value"] is None and r[k]["per_frame"] == [], k
        assert "not applicable" in r[k]["note"], k


def test_batched_items_equal_single_items(scorer, rng):
    items = [(rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8), rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8),
              None) for n in (5, 1, 3)]
    items[1] = (items[1][0][0], items[1][1][0], None)
    batched = scorer.score_pairs(items)
    for (c, b, _), got in zip(items, batched):
        one = scorer.score_pair(c, b)
        assert got == one
        ref = scorer.score_pair(c, scorer.reference(b))
        assert ref == one


def test_registry_states_direction_unit_identity_and_protocol():
    p, m = registry.get("psnr_tdiff"), registry.get("mae_tdiff")
    assert (p.direction, p.unit, p.identity, p.protocol["data_range"]) == ("max", "dB", math.inf, 1.0)
    assert (m.direction, m.identity, m.protocol["data_range"]) == ("min", 0.0, 1.0)
    assert {"psnr_tdiff", "mae_tdiff"} <= set(registry.REFERENCE) and "vbench_temporal_flickering" in registry.ALONE
    assert registry.DEFAULT_NAMES == ("lpips", "psnr", "ssim", "clip")
    assert all(registry.get(n).per_frame_axis == "transition" for n in TEMPORAL)


# ----------------------------------------------------------------------------- VBench transcription
# Vchitect/VBench vbench/temporal_flickering.py @ 5a069552bfaf96d314440ece110c051973bfd91c, transcribed with
# numpy in place of cv2 (cv2.absdiff of two float32 arrays is |a - b| in float32): frames as cv2 gives them
# (uint8 H x W x 3), mae_seq over consecutive frames, (255 - mean) / 255.

def _vbench_calculate_mae(img1, img2):
    return np.mean(np.abs(np.array(img1, dtype=np.float32) - np.array(img2, dtype=np.float32)))


def _vbench_mae_seq(frames):
    return np.array([_vbench_calculate_mae(frames[i], frames[i + 1]) for i in range(len(frames) - 1)])


def _vbench_cal_score(frames):
    score_seq = _vbench_mae_seq(frames)
    return (255.0 - np.mean(score_seq).item()) / 255.0


def _clips(rng):
    t = np.arange(6)[:, None, None, None]
    yield rng.integers(0, 256, (6, 24, 32, 3), dtype=np.uint8)  # noise
    yield np.broadcast_to((t * 37) % 256, (6, 24, 32, 3)).astype(np.uint8)  # global steps
    ramp = np.zeros((8, 16, 16, 3), np.uint8)
    for i in range(8):
        ramp[i, :, i * 2 : i * 2 + 3] = 255  # a moving bar
    yield ramp
    yield np.full((4, 16, 16, 3), 7, np.uint8)  # still


def test_vbench_temporal_flickering_equals_the_transcription(rng):
    s = metrics.Scorer(names=("vbench_temporal_flickering",), device="cpu", batch_size=3)
    for clip in _clips(rng):
        ours = s.score_alone(clip)["vbench_temporal_flickering"]["value"]
        assert ours == pytest.approx(_vbench_cal_score(list(clip)), abs=1e-6)
        # and the per-transition values are VBench's per-transition MAE on its scale
        per = s.score_alone(clip)["vbench_temporal_flickering"]["per_frame"]
        np.testing.assert_allclose(per, (255.0 - _vbench_mae_seq(list(clip))) / 255.0, rtol=0, atol=1e-6)


# VBench's consistency rule, transcribed from vbench/subject_consistency.py (the loop over frames, features
# given): video_sim / (len(images) - 1).

def _vbench_consistency(features):
    import torch
    import torch.nn.functional as F

    video_sim = 0.0
    for i in range(len(features)):
        image_features = F.normalize(features[i].unsqueeze(0), dim=-1, p=2)
        if i == 0:
            first_image_features = image_features
        else:
            sim_pre = max(0.0, F.cosine_similarity(former_image_features, image_features).item())
            sim_fir = max(0.0, F.cosine_similarity(first_image_features, image_features).item())
            video_sim += (sim_pre + sim_fir) / 2
        former_image_features = image_features
    return video_sim / (len(features) - 1)


def test_consistency_rule_equals_the_transcription(rng):
    import torch

    from metrics.vbench import consistency

    for n in (2, 5, 9):
        f = torch.from_numpy(rng.normal(size=(n, 16))).float()
        f[n // 2] = -f[0]  # a negative cosine: clipped at 0 as VBench does
        assert float(consistency(f).mean()) == pytest.approx(_vbench_consistency(f), abs=1e-6)
