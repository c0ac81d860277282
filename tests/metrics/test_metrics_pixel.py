"""PSNR and SSIM against scikit-image, plus the properties the definitions promise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import metrics
from metrics.psnr_db import psnr_frames
from metrics.ssim_index import ssim_frames


def sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1
    )


def varied_pairs(rng: np.random.Generator, smooth) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, a, b) float64 HWC pairs on [0, 1]; uint8-derived ones are exact k/255 values."""
    out = []
    a = rng.random((40, 56, 3))
    out.append(("random-vs-noisy", a, np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)))
    out.append(("random-vs-random", a, rng.random(a.shape)))
    g = smooth(48, 80, rng)
    out.append(("smooth-vs-shift", g, np.roll(g, 2, axis=1)))
    out.append(("smooth-vs-contrast", g, 0.9 * g + 0.05))
    u = rng.integers(0, 256, (33, 71, 3), dtype=np.uint8)
    v = np.clip(u.astype(int) + rng.integers(-30, 31, u.shape), 0, 255).astype(np.uint8)
    out.append(("uint8-nonsquare", u / 255.0, v / 255.0))
    t = smooth(97, 23, rng)
    out.append(("tall-dark", t * 0.1, np.clip(t * 0.1 + rng.normal(0, 0.01, t.shape), 0, 1)))
    out.append(("minimum-11x11", rng.random((11, 11, 3)), rng.random((11, 11, 3))))
    return out


def test_psnr_and_ssim_match_skimage_on_varied_pairs(rng, smooth):
    for name, a, b in varied_pairs(rng, smooth):
        want_p = peak_signal_noise_ratio(a, b, data_range=1.0)
        want_s = sk_ssim(a, b)
        assert metrics.psnr(a, b)[0] == pytest.approx(want_p, abs=1e-6), name
        assert metrics.ssim(a, b)[0] == pytest.approx(want_s, abs=1e-6), name
        # The float64-filter path is the tight reference.
        x = torch.from_numpy(a).permute(2, 0, 1)[None]
        y = torch.from_numpy(b).permute(2, 0, 1)[None]
        assert ssim_frames(x, y, torch.float64).item() == pytest.approx(want_s, abs=1e-12), name
        # uint8 pairs take the integer path (data range 255): the same definitions.
        ua, ub = (np.round(a * 255).astype(np.uint8), np.round(b * 255).astype(np.uint8))
        want8_s = sk_ssim(ua / 255.0, ub / 255.0)
        assert metrics.ssim(ua, ub)[0] == pytest.approx(want8_s, abs=1e-6), name
        assert metrics.psnr(ua, ub)[0] == pytest.approx(peak_signal_noise_ratio(ua / 255.0, ub / 255.0), abs=1e-9), name
        x8, y8 = (torch.from_numpy(v).permute(2, 0, 1)[None] for v in (ua, ub))
        assert ssim_frames(x8, y8, torch.float64).item() == pytest.approx(want8_s, abs=1e-12), name


def test_uint8_and_float_inputs_and_layouts_agree(rng):
    u = rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
    v = rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
    f32u, f32v = (u / 255).astype(np.float32), (v / 255).astype(np.float32)
    # uint8 pairs take the exact integer path, float pairs the float64 one; PSNR agrees to
    # rounding, SSIM (float32 filtering either way) to its ~1e-8 float32 precision.
    for fn, tol in ((metrics.psnr, 1e-12), (metrics.ssim, 1e-7)):
        ref = fn(u, v)
        np.testing.assert_allclose(fn(u / 255.0, v / 255.0), ref, atol=tol)
        np.testing.assert_allclose(fn(f32u, f32v), ref, atol=1e-6)  # float32 input rounding only
        np.testing.assert_allclose(fn(torch.from_numpy(u).permute(0, 3, 1, 2), v.transpose(0, 3, 1, 2)), ref, atol=1e-12)
        # a single image gives the same as its slot in the batch
        np.testing.assert_allclose(fn(u[1], v[1]), ref[1:], atol=1e-12)
    want = [peak_signal_noise_ratio(u[i] / 255.0, v[i] / 255.0, data_range=1.0) for i in range(2)]
    np.testing.assert_allclose(metrics.psnr(u, v), want, atol=1e-6)
    # one side channel-last, the other channel-first in memory: pixels still pair up
    x_cl = torch.from_numpy(u).permute(0, 3, 1, 2)
    y_cf = torch.from_numpy(v).permute(0, 3, 1, 2).contiguous()
    for fn in (psnr_frames, ssim_frames):
        np.testing.assert_allclose(fn(x_cl, y_cf).numpy(), fn(x_cl, y_cf.contiguous(memory_format=torch.channels_last)).numpy(), atol=1e-12)
    np.testing.assert_allclose(psnr_frames(x_cl, y_cf).numpy(), want, atol=1e-9)


def test_psnr_uint8_noise_sigma20_is_about_22_5_db_not_the_wraparound_value(rng):
    a = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    b = np.clip(np.rint(a + rng.normal(0, 20, a.shape)), 0, 255).astype(np.uint8)
    got = float(metrics.psnr(a, b)[0])
    assert got == pytest.approx(22.5, abs=0.5)
    # The classic bug: subtracting and squaring in uint8 wraps around modulo 256.
    buggy = 10 * np.log10(255.0**2 / np.mean((a - b) ** 2))
    assert buggy == pytest.approx(28.8, abs=0.5)
    assert abs(got - buggy) > 5


def test_psnr_identical_is_inf_and_aggregate_caps_at_100():
    a = np.full((2, 16, 16, 3), 0.25)
    b = a.copy()
    b[1] += 0.01
    p = metrics.psnr(a, b)
    assert np.isposinf(p[0]) and np.isfinite(p[1])
    agg = metrics.aggregate(p, "psnr")
    assert agg["n_inf"] == 1 and agg["n"] == 2
    assert agg["mean"] == pytest.approx((100.0 + p[1]) / 2)
    assert "inf" in agg["note"] and "100" in agg["note"]
    s = metrics.Scorer(names=("psnr",), device="cpu").score_pair(a, b)["psnr"]  # a 2-frame video
    assert np.isposinf(s["per_frame"][0])
    assert s["value"] == pytest.approx((100.0 + p[1]) / 2)
    assert s["n_inf"] == 1 and "100" in s["note"]


def test_ssim_data_range_is_not_estimated_from_the_batch(rng, smooth):
    dark = smooth(32, 40, rng) * 0.05
    dark_b = np.clip(dark + rng.normal(0, 0.005, dark.shape), 0, 1)
    bright = np.clip(0.5 + smooth(32, 40, rng) * 0.5, 0, 1)
    bright_b = np.clip(bright + rng.normal(0, 0.05, bright.shape), 0, 1)
    alone = metrics.ssim(dark, dark_b)[0]
    batched = metrics.ssim(np.stack([dark, bright]), np.stack([dark_b, bright_b]))[0]
    assert alone == pytest.approx(batched, abs=1e-12)
    assert alone == pytest.approx(sk_ssim(dark, dark_b), abs=1e-6)
    # data_range estimated from the dark pair alone would give a very different value
    est = structural_similarity(dark, dark_b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=dark.max() - dark.min(), channel_axis=-1)
    assert abs(est - alone) > 0.01


def test_ssim_large_frames_use_row_tiles_and_match_skimage(rng, smooth):
    # 300 x 420 exceeds one CPU tile, so rows are split with the 10-row overlap.
    a = smooth(300, 420, rng)
    b = np.clip(a + rng.normal(0, 0.03, a.shape), 0, 1)
    assert metrics.ssim(a, b)[0] == pytest.approx(sk_ssim(a, b), abs=1e-6)


def test_ssim_rejects_frames_smaller_than_the_window():
    with pytest.raises(metrics.InputError, match="11x11"):
        metrics.ssim(np.zeros((10, 20, 3)), np.zeros((10, 20, 3)))
