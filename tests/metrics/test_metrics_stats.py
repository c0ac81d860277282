"""bootstrap_ci and aggregate."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import metrics


def test_ci_contains_mean_and_is_deterministic():
    x = np.random.default_rng(0).normal(10, 2, 30)
    lo, hi = metrics.bootstrap_ci(x)
    assert lo < x.mean() < hi
    assert metrics.bootstrap_ci(x) == (lo, hi)
    assert metrics.bootstrap_ci(x, seed=1) != (lo, hi)


def test_ci_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small = metrics.bootstrap_ci(rng.normal(0, 1, 10))
    large = metrics.bootstrap_ci(rng.normal(0, 1, 1000))
    assert (large[1] - large[0]) < 0.5 * (small[1] - small[0])
    # roughly the normal-theory width 2 * 1.96 / sqrt(n)
    assert large[1] - large[0] == pytest.approx(2 * 1.96 / np.sqrt(1000), rel=0.2)


def test_ci_confidence_level_widens_interval():
    x = np.random.default_rng(2).normal(0, 1, 50)
    lo90, hi90 = metrics.bootstrap_ci(x, confidence=0.90)
    lo99, hi99 = metrics.bootstrap_ci(x, confidence=0.99)
    assert lo99 < lo90 and hi99 > hi90


def test_degenerate_cases_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.bootstrap_ci([3.5]) == (3.5, 3.5)
        assert metrics.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
        agg = metrics.aggregate([0.9], "ssim")
    assert agg == {"mean": 0.9, "ci_low": 0.9, "ci_high": 0.9, "n": 1, "n_inf": 0, "note": agg["note"]}
    with pytest.raises(ValueError):
        metrics.bootstrap_ci([])
    with pytest.raises(ValueError, match="finite"):
        metrics.bootstrap_ci([1.0, np.inf])


def test_aggregate_psnr_caps_inf_and_other_metrics_reject_it():
    agg = metrics.aggregate([20.0, np.inf, np.inf, 40.0], "psnr")
    assert agg["n"] == 4 and agg["n_inf"] == 2
    assert agg["mean"] == pytest.approx(65.0)
    assert agg["ci_low"] <= agg["mean"] <= agg["ci_high"] <= 100.0
    assert "2 of 4" in agg["note"] and "100 dB" in agg["note"]
    with pytest.raises(ValueError, match="non-finite"):
        metrics.aggregate([0.1, np.inf], "lpips")
    with pytest.raises(ValueError, match="NaN"):
        metrics.aggregate([0.1, np.nan], "ssim")
