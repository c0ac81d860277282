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

A difference is called **significant** (:func:`significant`) only when the paired bootstrap
*and* the Wilcoxon test both give p < 0.05: on a handful of items the bootstrap alone is
anti-conservative (its resamples cannot be more extreme than the few items), while the
exact Wilcoxon test is not. With 5 or fewer items the smallest two-sided Wilcoxon p is
0.0625, so nothing is significant: "not significant" then means "too few items to tell",
and the tables say n.

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

from metrics.registry import QUALITY

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
COMPARED = ("speedup", *QUALITY)


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


def significant(row: dict[str, Any]) -> bool:
    """Both the paired bootstrap and the Wilcoxon signed-rank test reject at ALPHA (see the module docstring)."""
    p, pw = row.get("p"), row.get("p_wilcoxon")
    return not (_nan(p) or _nan(pw)) and p < ALPHA and pw < ALPHA


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


# ---------------------------------------------------------------------------------------------
# `repro compare RUN_DIR --points A B`


def find_point(points, name: str) -> str:
    """The point id for a point id or a unique point label; SpecError lists the points otherwise."""
    from experiments.errors import SpecError

    ids = list(points["point_id"])
    if name in ids:
        return name
    hits = [r.point_id for r in points.itertuples() if name in (r.label, f"{r.method} {r.label}")]
    if len(hits) == 1:
        return hits[0]
    what = "is ambiguous (several points have that label)" if hits else "is not a point of this run"
    raise SpecError(f"--points: {name!r} {what}; give a point id: {', '.join(ids)}")


def format_point_comparison(rows: list[dict[str, Any]], points, a: str, b: str, fmt: str = "text") -> str:
    """The rows of :func:`compare_points` as a terminal, Markdown or LaTeX table."""
    names = {r.point_id: f"{r.method} {r.label}" if r.method != "baseline" else "baseline" for r in points.itertuples()}
    head = ["metric", "n", "A", "B", "A vs B [95% CI]", "p (bootstrap)", "p (Wilcoxon)", "p (sign)", "significant"]
    body = []
    for r in rows:
        speed = r["metric"] == "speedup"
        f = (lambda v: "-" if _nan(v) else f"{v:.3f}x") if speed else (lambda v: "-" if _nan(v) else f"{v:.4g}")
        diff = "-" if _nan(r["diff"]) else (f"{r['diff']:.3f}x" if speed else f"{r['diff']:+.4g}")
        if not _nan(r["ci_low"]):
            diff += f" [{f(r['ci_low']) if speed else format(r['ci_low'], '+.4g')}, " \
                    f"{f(r['ci_high']) if speed else format(r['ci_high'], '+.4g')}]"
        sig_text = "-" if _nan(r["p"]) else ("yes" if significant(r) else "no")
        body.append([r["metric"], str(r["n"]), f(r["a"]), f(r["b"]), diff, format_p(r["p"]),
                     format_p(r["p_wilcoxon"]), format_p(r["p_sign"]), sig_text])
    title = f"A = {names.get(a, a)}, B = {names.get(b, b)}: paired over items (prompt x seed)"
    notes = ["speedup: ratio of geometric means (A / B), tested on log speedup; others: mean of A - B",
             f"significant: paired bootstrap and Wilcoxon both p < {ALPHA} (with 5 items or fewer Wilcoxon cannot be)"]
    if fmt == "markdown":
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join(lines + [""] + [f"_{n}_  " for n in notes]) + "\n"
    if fmt == "latex":
        from repro.papers.compare import latex_text

        lines = [r"\begin{tabular}{l r rr l rrr c}", r"\toprule", " & ".join(latex_text(h) for h in head) + r" \\",
                 r"\midrule", *[" & ".join(latex_text(c) for c in row) + r" \\" for row in body], r"\bottomrule",
                 r"\end{tabular}", "% " + latex_text(title), *["% " + latex_text(n) for n in notes]]
        return "\n".join(lines) + "\n"
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines + [f"note: {n}" for n in notes])


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def runner_up_note(items, winner: dict[str, Any], runner_up: dict[str, Any]) -> str:
    """`repro best`: whether the winner is significantly faster than the runner-up (paired over items)."""
    row = next((r for r in compare_points(items, winner["point_id"], runner_up["point_id"], ("speedup",))), None)
    name = f"{runner_up['method']} {runner_up['label']}"
    if row is None or _nan(row["p"]):
        return f"\nnote: runner-up {name}; too few shared items to test whether the winner is faster"
    verdict = "significantly faster than" if significant(row) and row["diff"] > 1 else "NOT significantly faster than"
    return (f"\nnote: the winner is {verdict} the runner-up {name}: speedup ratio {row['diff']:.3f}x "
            f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}], paired bootstrap p={format_p(row['p'])}, "
            f"Wilcoxon p={format_p(row['p_wilcoxon'])}, sign p={format_p(row['p_sign'])}, n={row['n']} items")
