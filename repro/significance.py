"""Paired significance over items: is one point really faster or better than another?

Two points of one run share their items (prompt x seed), so every comparison is paired:
the per-item differences ``d = a - b`` are tested, never the two means apart. Three tests
are reported together because they answer slightly different questions on few items:

* **paired bootstrap** (:func:`paired_bootstrap`): resample items with replacement, keep
  each item's pair together; the 95% percentile interval of the mean difference, and the
  two-sided p-value ``2 * min(P*(mean <= 0), P*(mean >= 0))`` (the interval excludes 0
  exactly when p < 0.05, up to resampling noise);
* **Wilcoxon signed-rank** (:func:`wilcoxon_signed_rank`): exact null distribution of the
  rank sum, counted by dynamic programming, when there are no ties and no zero
  differences; otherwise scipy's normal approximation with tie correction;
* **sign test** (:func:`sign_test`): exact two-sided binomial test on the number of
  positive differences (zeros dropped).

With 2-4 items no test can reach p < 0.05 (the smallest Wilcoxon p with 4 items is
0.125): a "not significant" then means "too few items to tell", and the tables say n.

Speedup is compared on the log of each item's speedup (a ratio: 2x faster and 2x slower
are symmetric around 0), so "cached vs its baseline" tests ``log(speedup) = 0``.

>>> r = paired_test([1.2, 1.4, 1.3, 1.5, 1.6], [1.0, 1.1, 1.0, 1.2, 1.1])
>>> r["n"], round(r["mean_diff"], 2), r["p_sign"]
(5, 0.32, 0.0625)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

#: The level at which tables and ``repro best`` call a difference significant.
ALPHA = 0.05
N_RESAMPLES = 10_000


def _diffs(a: Sequence[float], b: Sequence[float] | None) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    if b is not None:
        y = np.asarray(b, dtype=np.float64).reshape(-1)
        if x.shape != y.shape:
            raise ValueError(f"paired values need the same length, got {x.size} and {y.size}")
        x = x - y
    if not np.all(np.isfinite(x)):
        raise ValueError("paired differences must be finite (cap inf PSNR first)")
    return x


def paired_bootstrap(a: Sequence[float], b: Sequence[float] | None = None, *, confidence: float = 0.95,
                     n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, float]:
    """Mean of the paired differences, its percentile bootstrap interval and two-sided p-value.

    ``b=None`` tests ``a`` itself against 0 (values that already are differences).

    >>> r = paired_bootstrap([0.5, 0.7, 0.6, 0.8], [0.1, 0.2, 0.1, 0.3])
    >>> r["ci_low"] > 0, r["p"] < 0.05
    (True, True)
    """
    d = _diffs(a, b)
    if d.size == 0:
        raise ValueError("paired_bootstrap needs at least one pair")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_resamples, d.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    p = 2.0 * min(float(np.mean(means <= 0.0)), float(np.mean(means >= 0.0)))
    return {"mean_diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi), "p": min(1.0, p)}


def sign_test(a: Sequence[float], b: Sequence[float] | None = None) -> float:
    """Exact two-sided sign test p-value (zero differences dropped; 1.0 when none are left).

    >>> sign_test([1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0])
    0.03125
    """
    d = _diffs(a, b)
    d = d[d != 0.0]
    n, k = d.size, int((d > 0).sum())
    if n == 0:
        return 1.0
    tail = min(k, n - k)
    p = 2.0 * sum(math.comb(n, i) for i in range(tail + 1)) / 2.0**n
    return min(1.0, p)


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float] | None = None) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences.

    Exact (the null distribution of the positive rank sum, counted) when no difference is
    zero and no two absolute differences tie; otherwise scipy's normal approximation with
    zeros dropped and a tie correction. 1.0 when every difference is zero.

    >>> wilcoxon_signed_rank([1.0, 2.0, 3.0, 4.0, 5.0])
    0.0625
    """
    d = _diffs(a, b)
    nonzero = d[d != 0.0]
    if nonzero.size == 0:
        return 1.0
    absd = np.abs(nonzero)
    if nonzero.size == d.size and np.unique(absd).size == absd.size:
        n = d.size
        ranks = np.empty(n, dtype=np.int64)
        ranks[np.argsort(absd)] = np.arange(1, n + 1)
        w_plus = int(ranks[nonzero > 0].sum())
        counts = _rank_sum_counts(n)
        total = 2.0**n
        lower = counts[: min(w_plus, n * (n + 1) // 2 - w_plus) + 1].sum() / total
        return float(min(1.0, 2.0 * lower))
    from scipy import stats

    return float(stats.wilcoxon(d, zero_method="wilcox", correction=False, method="approx").pvalue)


def _rank_sum_counts(n: int) -> np.ndarray:
    """How many of the 2^n sign patterns give each positive rank sum 0..n(n+1)/2."""
    top = n * (n + 1) // 2
    counts = np.zeros(top + 1, dtype=np.float64)
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return counts


def paired_test(a: Sequence[float], b: Sequence[float] | None = None, *, seed: int = 0) -> dict[str, Any]:
    """All three tests on one pair of aligned per-item value lists (or on differences, b=None)."""
    d = _diffs(a, b)
    boot = paired_bootstrap(d, seed=seed)
    return {"n": int(d.size), **boot, "p_wilcoxon": wilcoxon_signed_rank(d), "p_sign": sign_test(d)}


# ---------------------------------------------------------------------------------------------
# Points of a run


def _paired_items(items, point_a: str, point_b: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-item values of `column` for two points, aligned on (prompt_index, seed); both ok and finite."""
    from metrics import PSNR_CAP_DB

    def values(pid):
        rows = items[(items["point_id"] == pid) & (items["status"] == "ok")]
        return {(int(r.prompt_index), int(r.seed)): float(getattr(r, column)) for r in rows.itertuples()}

    va, vb = values(point_a), values(point_b)
    keys = sorted(k for k in set(va) & set(vb) if not (math.isnan(va[k]) or math.isnan(vb[k])))
    a = np.array([va[k] for k in keys])
    b = np.array([vb[k] for k in keys])
    if column.startswith("psnr"):  # identical items are inf; capped as every mean caps them
        a, b = np.minimum(a, PSNR_CAP_DB), np.minimum(b, PSNR_CAP_DB)
    return a, b


#: Per-item columns compared between two points, and how (speedup on its log).
COMPARED = ("speedup", "lpips", "psnr", "ssim", "clip", "clip_delta")


def compare_points(items, point_a: str, point_b: str, columns: Sequence[str] = COMPARED) -> list[dict[str, Any]]:
    """Point A vs point B on every column both have, paired over their shared items.

    Speedup rows test ``log(speedup_a / speedup_b)`` (reported back as the ratio of
    geometric means); other rows test ``a - b``. Rows with fewer than 2 shared items
    carry ``n`` and NaN p-values.
    """
    out = []
    for col in columns:
        if col not in items.columns:
            continue
        a, b = _paired_items(items, point_a, point_b, col)
        if col == "speedup":
            a, b = np.log(a), np.log(b)
        row: dict[str, Any] = {"metric": col, "n": int(a.size), "a": _mean(a, col), "b": _mean(b, col)}
        if a.size >= 2:
            t = paired_test(a, b)
            row.update({k: t[k] for k in ("p", "p_wilcoxon", "p_sign")})
            row["diff"], row["ci_low"], row["ci_high"] = (
                (math.exp(t["mean_diff"]), math.exp(t["ci_low"]), math.exp(t["ci_high"])) if col == "speedup"
                else (t["mean_diff"], t["ci_low"], t["ci_high"]))
        else:
            row.update({"diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                        "p": float("nan"), "p_wilcoxon": float("nan"), "p_sign": float("nan")})
        if a.size or b.size:
            out.append(row)
    return out


def _mean(x: np.ndarray, col: str) -> float:
    if not x.size:
        return float("nan")
    return float(math.exp(x.mean())) if col == "speedup" else float(x.mean())


def against_baseline(items) -> dict[str, dict[str, float]]:
    """Per cached point: p-values of its speedup (log speedup vs 0, paired timing) and of its ΔCLIP vs 0.

    Returns ``{point_id: {"speedup_p": ..., "clip_delta_p": ...}}`` (bootstrap p; NaN with < 2 items).
    """
    out: dict[str, dict[str, float]] = {}
    ok = items[(items["status"] == "ok") & (items["role"] == "cached")]
    for pid, rows in ok.groupby("point_id", sort=False):
        res = {}
        for col in ("speedup", "clip_delta"):
            v = rows[col].to_numpy(dtype=np.float64) if col in rows else np.array([])
            v = v[np.isfinite(v)]
            if col == "speedup":
                v = np.log(v[v > 0])
            res[f"{col}_p"] = paired_bootstrap(v)["p"] if v.size >= 2 else float("nan")
        out[str(pid)] = res
    return out


def format_p(p: float) -> str:
    """p-value text for tables: '<0.001', '0.032', or '-' when not computed."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
