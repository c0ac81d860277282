"""Summaries over items: bootstrap confidence intervals and per-metric aggregates."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .psnr_db import PSNR_CAP_DB

__all__ = ["bootstrap_ci", "aggregate", "CI_METHOD"]

#: scipy.stats.bootstrap method. Percentile is used rather than BCa because BCa's
#: jackknife acceleration is unstable for the small n (a handful of prompts) typical here.
CI_METHOD = "percentile"


def bootstrap_ci(
    values: Iterable[float], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean (``scipy.stats.bootstrap``).

    Deterministic for a given ``seed``. One value, or all values equal, gives
    ``(v, v)`` without warnings. Values must be finite (cap PSNR first, see :func:`aggregate`).

    >>> lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    >>> lo <= 2.5 <= hi
    True
    >>> bootstrap_ci([7.0])
    (7.0, 7.0)
    """
    from scipy import stats

    x = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError("bootstrap_ci needs finite values (cap inf PSNR first)")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if x.size == 1 or np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    res = stats.bootstrap(
        (x,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method=CI_METHOD,
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def aggregate(values: Iterable[float], metric: str, confidence: float = 0.95) -> dict:
    """Mean, bootstrap CI, count and notes for one metric's per-item values.

    For the PSNRs (``psnr``, ``psnr_tdiff``, any "psnr..." key: metrics.registry.capped) inf values
    (identical items) are replaced by ``PSNR_CAP_DB`` = 100 dB before averaging; ``n_inf`` counts
    them and ``note`` says so. Other metrics must be finite. A set-level metric averaged over fewer
    samples than its source asks for (VBench's dimensions) gets a ``warning`` saying so
    (metrics.registry.sample_size_warning); ``n`` is always the number of samples.

    >>> r = aggregate([30.0, float("inf")], "psnr")
    >>> r["mean"], r["n_inf"]
    (65.0, 1)
    """
    x = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError(f"aggregate({metric!r}) needs at least one value")
    if np.isnan(x).any():
        raise ValueError(f"aggregate({metric!r}): NaN among the values")
    from .registry import capped, sample_size_warning

    is_psnr = capped(metric) or metric.lower().startswith("psnr")
    n_inf = int(np.isposinf(x).sum()) if is_psnr else 0
    if is_psnr:
        x = np.minimum(x, PSNR_CAP_DB)
    elif not np.all(np.isfinite(x)):
        raise ValueError(f"aggregate({metric!r}): non-finite values")
    lo, hi = bootstrap_ci(x, confidence=confidence)
    note = f"{confidence:.0%} {CI_METHOD} bootstrap CI of the mean"
    if n_inf:
        note += f"; {n_inf} of {x.size} values were inf (identical) and count as {PSNR_CAP_DB:g} dB"
    out = {
        "mean": float(x.mean()),
        "ci_low": lo,
        "ci_high": hi,
        "n": int(x.size),
        "n_inf": n_inf,
        "note": note,
    }
    warning = sample_size_warning(metric, int(x.size))
    if warning:
        out["warning"] = warning
    return out
