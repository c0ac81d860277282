"""Scorer batching: across frames and items it must give exactly the per-item values."""

from __future__ import annotations

import numpy as np
import pytest

import metrics

KEYS = ("psnr", "ssim", "lpips", "clip_cached", "clip_baseline", "clip_delta")

# Tolerances from the arithmetic. PSNR is exact integer/float64 arithmetic; SSIM filters in float32 but
# per frame, so a frame's value does not depend on its batch. LPIPS and CLIP run float32 networks whose
# batched and single-image calls block their GEMMs/convolutions differently: every layer rounds
# differently, by a few float32 ulp of its output. LPIPS values are O(1): 16 ulp. A CLIP score is
# 100 x a cosine of unit vectors: 16 ulp of the cosine, times the 100 (measured: up to ~2e-6, i.e. ~0.2 ulp x 100).
F32 = float(np.finfo(np.float32).eps)
TOL = {"psnr": 1e-9, "ssim": 1e-6, "lpips": 16 * F32, "clip_cached": 100 * 16 * F32,
       "clip_baseline": 100 * 16 * F32, "clip_delta": 2 * 100 * 16 * F32}


def make_items(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, str | None]]:
    """Videos and images of two sizes, frame counts that straddle batch_size=4 chunks."""
    items = []
    for n, (h, w), prompt in [(3, (48, 64), "a photo of a cat"), (1, (48, 64), None), (5, (40, 40), None),
                              (2, (48, 64), "red")]:
        a = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
        items.append((a if n > 1 else a[0], b if n > 1 else b[0], prompt))
    return items


def test_score_pairs_equals_score_pair_on_each_item(net_scorer, rng):
    items = make_items(rng)
    batched = net_scorer.score_pairs(items)
    assert len(batched) == len(items)
    for (a, b, p), got in zip(items, batched):
        one = net_scorer.score_pair(a, b, p)
        assert set(got) == set(one)
        assert ("clip_delta" in got) == (p is not None)
        for k in got:
            np.testing.assert_allclose(got[k]["per_frame"], one[k]["per_frame"], rtol=0, atol=TOL[k], err_msg=k)
            assert got[k]["value"] == pytest.approx(one[k]["value"], rel=0, abs=TOL[k]), k
            assert got[k]["label"] == one[k]["label"]


def test_video_value_is_mean_of_its_frames_scored_one_by_one(net_scorer, rng):
    a, b, prompt = make_items(rng)[0]  # 3 frames, with a prompt
    video = net_scorer.score_pair(a, b, prompt)
    frames = [net_scorer.score_pair(a[i], b[i], prompt) for i in range(len(a))]
    for k in KEYS:
        per = [f[k]["value"] for f in frames]
        np.testing.assert_allclose(video[k]["per_frame"], per, rtol=0, atol=TOL[k], err_msg=k)
        assert video[k]["value"] == pytest.approx(np.mean(per), rel=0, abs=TOL[k]), k
    # and the free functions agree with the scorer frame by frame
    np.testing.assert_allclose(video["psnr"]["per_frame"], metrics.psnr(a, b), atol=1e-9)
    np.testing.assert_allclose(video["ssim"]["per_frame"], metrics.ssim(a, b), atol=1e-9)


def test_batch_size_does_not_change_values(net_scorer, rng, empty_caches):
    items = make_items(rng)
    mp = empty_caches()
    try:
        big = metrics.Scorer(names=("psnr", "ssim", "lpips"), device="cpu", batch_size=64, allow_random_weights=True)
        one = metrics.Scorer(names=("psnr", "ssim", "lpips"), device="cpu", batch_size=1, allow_random_weights=True)
    finally:
        mp.undo()
    r_big, r_one, r_ref = big.score_pairs(items), one.score_pairs(items), net_scorer.score_pairs(items)
    for x, y, z in zip(r_big, r_one, r_ref):
        for k in ("psnr", "ssim", "lpips"):
            np.testing.assert_allclose(x[k]["per_frame"], y[k]["per_frame"], rtol=0, atol=TOL[k], err_msg=k)
            np.testing.assert_allclose(x[k]["per_frame"], z[k]["per_frame"], rtol=0, atol=TOL[k], err_msg=k)


def test_result_shape_and_labels(net_scorer, rng):
    a, b, _ = make_items(rng)[1]
    r = net_scorer.score_pair(a, b)  # single image, no prompt
    assert set(r) == {"psnr", "ssim", "lpips"}
    for k, v in r.items():
        assert set(v) >= {"value", "per_frame", "label"} and len(v["per_frame"]) == 1
        assert isinstance(v["value"], float)
    assert r["lpips"]["label"] == net_scorer.labels["lpips"]


def test_scorer_rejects_unknown_metrics_and_bad_prompts(net_scorer):
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.Scorer(names=("psnr", "fid"))
    x = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(metrics.InputError, match="prompt must be a string"):
        net_scorer.score_pair(x, x, prompt=3)


def test_score_prompt_matches_the_clip_entries_of_score_pair():
    import metrics as m

    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    s = m.Scorer(names=("clip",), device="cpu", allow_random_weights=True)
    pair = s.score_pair(a, b, prompt="a red fox")
    alone = s.score_prompt(a, "a red fox")
    assert alone["per_frame"] == pytest.approx(pair["clip_cached"]["per_frame"], abs=1e-6)
    assert alone["value"] == pytest.approx(np.mean(alone["per_frame"]), abs=1e-12)
    assert alone["label"].endswith("[random weights]")


def test_item_identical_in_every_frame_is_inf_partly_identical_is_capped():
    import metrics as m

    a = np.zeros((2, 16, 16, 3), np.uint8)
    b = a.copy()
    s = m.Scorer(names=("psnr",), device="cpu")
    assert s.score_pair(a, b)["psnr"]["value"] == float("inf")
    b[1] += 1
    r = s.score_pair(a, b)["psnr"]
    assert r["per_frame"][0] == float("inf") and r["value"] == pytest.approx((100.0 + 48.1308036) / 2, abs=1e-6)


def test_mixed_uint8_and_float_items_score_like_each_alone(net_scorer, rng):
    """A chunk mixing uint8 and float items takes the float path for all; values do not change."""
    a = rng.integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    items = [(a, b, None), (a / 255.0, b, None), (a, (b / 255.0).astype(np.float32), None)]
    together = net_scorer.score_pairs(items)
    for item, got in zip(items, together):
        alone = net_scorer.score_pair(*item)
        for k in ("psnr", "ssim", "lpips"):
            np.testing.assert_allclose(got[k]["per_frame"], alone[k]["per_frame"], atol=1e-6, err_msg=k)
    for k, tol in (("psnr", 1e-5), ("ssim", 1e-6), ("lpips", 1e-6)):  # float32 rounding of b/255 at most
        for got in together[1:]:
            np.testing.assert_allclose(got[k]["per_frame"], together[0][k]["per_frame"], atol=tol, err_msg=k)
