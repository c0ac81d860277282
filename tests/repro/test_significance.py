"""Significance numbers against scipy on known data (scipy is the independent reference here:
our sign test, exact Wilcoxon and bootstrap are written without it)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from repro import significance as sig

KNOWN = [  # (a, b) pairs with distinct non-zero |differences|
    ([0.31, 0.42, 0.25, 0.51, 0.38, 0.44, 0.29, 0.47], [0.30, 0.35, 0.28, 0.41, 0.32, 0.46, 0.21, 0.33]),
    (list(np.random.default_rng(3).normal(0.2, 1.0, 14)), [0.0] * 14),
    (list(np.random.default_rng(4).normal(0.0, 1.0, 20)), list(np.random.default_rng(5).normal(0.0, 1.0, 20))),
]


@pytest.mark.parametrize("a,b", KNOWN)
def test_exact_wilcoxon_matches_scipy(a, b):
    ours = sig.wilcoxon_signed_rank(a, b)
    ref = stats.wilcoxon(a, b, method="exact").pvalue
    assert ours == pytest.approx(ref, rel=1e-12, abs=1e-15)


def test_wilcoxon_with_ties_and_zeros_uses_tie_corrected_approximation():
    a, b = [1.0, 2.0, 2.0, 3.0, 0.5, 4.0], [0.0, 1.0, 1.0, 3.0, 0.0, 1.0]  # one zero, tied |d|
    ref = stats.wilcoxon(a, b, zero_method="wilcox", correction=False, method="approx").pvalue
    assert sig.wilcoxon_signed_rank(a, b) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("a,b", KNOWN + [([1, 2, 3, 3, 0], [0, 0, 4, 3, 1])])
def test_sign_test_matches_scipy_binomtest(a, b):
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[d != 0]
    ref = stats.binomtest(int((d > 0).sum()), d.size, 0.5).pvalue
    assert sig.sign_test(a, b) == pytest.approx(ref, rel=1e-12)


def test_sign_test_all_zero_is_one():
    assert sig.sign_test([1.0, 2.0], [1.0, 2.0]) == 1.0
    assert sig.wilcoxon_signed_rank([1.0, 2.0], [1.0, 2.0]) == 1.0


def test_paired_bootstrap_interval_matches_scipy_bootstrap():
    a, b = KNOWN[1]
    d = np.asarray(a) - np.asarray(b)
    ours = sig.paired_bootstrap(a, b, n_resamples=20000, seed=1)
    ref = stats.bootstrap((d,), np.mean, method="percentile", n_resamples=20000,
                          rng=np.random.default_rng(2)).confidence_interval
    width = ref.high - ref.low
    assert ours["mean_diff"] == pytest.approx(d.mean(), rel=1e-12)
    assert ours["ci_low"] == pytest.approx(ref.low, abs=0.03 * width)
    assert ours["ci_high"] == pytest.approx(ref.high, abs=0.03 * width)


def test_paired_bootstrap_p_agrees_with_interval():
    clear = sig.paired_bootstrap([1.0, 1.2, 1.1, 1.3, 1.25, 1.15], [0.0] * 6)
    assert clear["ci_low"] > 0 and clear["p"] < 0.05
    noise = sig.paired_bootstrap([0.1, -0.2, 0.15, -0.1, 0.05, -0.05])
    assert noise["ci_low"] < 0 < noise["ci_high"] and noise["p"] > 0.3


def test_pairing_matters_a_shift_hidden_by_item_spread_is_found():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 10, 12)  # huge spread between items
    a, b = base + 0.5 + rng.normal(0, 0.05, 12), base
    assert sig.paired_test(a, b)["p"] < 0.01  # paired: obvious
    assert stats.ttest_ind(a, b).pvalue > 0.5  # unpaired: invisible


def _items(rows):
    return pd.DataFrame([{"status": "ok", "role": "cached", **r} for r in rows])


def test_compare_points_pairs_on_prompt_and_seed_and_tests_log_speedup():
    rows = []
    for i, (sa, sb) in enumerate([(2.0, 1.5), (2.2, 1.6), (1.9, 1.5), (2.1, 1.4), (2.3, 1.7)]):
        rows.append({"point_id": "A", "prompt_index": i, "seed": 0, "speedup": sa, "lpips": 0.1 + i / 100})
        rows.append({"point_id": "B", "prompt_index": i, "seed": 0, "speedup": sb, "lpips": 0.05 + i / 100})
    rows.append({"point_id": "A", "prompt_index": 9, "seed": 0, "speedup": 9.0, "lpips": 0.9})  # unpaired: ignored
    out = {r["metric"]: r for r in sig.compare_points(_items(rows), "A", "B")}
    ratios = np.log([2.0 / 1.5, 2.2 / 1.6, 1.9 / 1.5, 2.1 / 1.4, 2.3 / 1.7])
    assert out["speedup"]["n"] == 5
    assert out["speedup"]["diff"] == pytest.approx(math.exp(ratios.mean()))
    assert out["speedup"]["p_wilcoxon"] == pytest.approx(stats.wilcoxon(ratios).pvalue)
    assert out["lpips"]["diff"] == pytest.approx(0.05)
    assert "psnr" not in out


def test_against_baseline_gives_nan_with_one_item_and_a_p_with_several():
    one = sig.against_baseline(_items([{"point_id": "A", "speedup": 2.0, "clip_delta": 0.1}]))
    assert math.isnan(one["A"]["speedup_p"])
    many = sig.against_baseline(_items([{"point_id": "A", "speedup": s, "clip_delta": 0.0}
                                        for s in (1.9, 2.0, 2.1, 2.05, 1.95, 2.2)]))
    assert many["A"]["speedup_p"] < 0.05 and many["A"]["clip_delta_p"] == 1.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same length"):
        sig.paired_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        sig.paired_test([1.0, math.inf], [1.0, 2.0])


def test_significant_needs_both_bootstrap_and_wilcoxon():
    five = sig.paired_test([1.1, 1.2, 1.3, 1.4, 1.5], [0.0] * 5)
    assert five["p"] < 0.05 and five["p_wilcoxon"] == pytest.approx(0.0625)
    assert not sig.significant(five)  # 5 items: the exact test cannot reject
    eight = sig.paired_test([1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8], [0.0] * 8)
    assert sig.significant(eight)
    assert not sig.significant({"p": float("nan"), "p_wilcoxon": 0.01})
