"""Parity where two libraries claim the same algorithm: diffusers' First Block Cache vs cache-dit's DBCache F1B0.

Both run the first block, compare its residual with the one of the last computed step of the same
CFG branch (relative L1) and, under the threshold, skip every other block and add their cached
residual. This module reads a run directory and answers, item by item and branch by branch,
whether the two skipped the same steps at the same threshold, and where they did not, why.

Decisions are read from each generation's decision record (``decisions`` in its summary: the
project's one record for every method, :class:`experiments.instrumentation.Decision` as columns),
filled after each transformer call from diffusers' First Block Cache hook state and from cache-dit's
context; never from either library's end-of-run statistics. A branch that runs one call per step
(CFG batched or distilled) is named ``all`` on both sides. cache-dit's record also holds the signal it
compared (its residual difference), which explains a difference: warm-up (``max_warmup_steps``: no signal), the
threshold test (cache-dit caches when ``diff < threshold``, diffusers when ``diff <= threshold``,
and cache-dit caches unconditionally at a threshold >= 1), its step limits
(``max_cached_steps``, ``max_continuous_cached_steps``), or an earlier divergence (once one
branch decided differently the hidden states differ, so later signals differ too).

Reads only the store and the media (no torch)::

    repro compare runs/parity --parity
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: cache-dit's defaults for the two fields that make DBCache "F1B0" (cache_dit/caching/cache_contexts/
#: cache_config.py BasicCacheConfig: Fn_compute_blocks=8, Bn_compute_blocks=0, max_warmup_steps=8);
#: tests/repro/test_parity.py checks them against the installed cache-dit
CACHE_DIT_DEFAULTS = {"Fn_compute_blocks": 8, "Bn_compute_blocks": 0, "max_warmup_steps": 8,
                      "residual_diff_threshold": 0.08, "max_cached_steps": -1, "max_continuous_cached_steps": -1}


@dataclass
class BranchParity:
    prompt_index: int
    seed: int
    branch: str
    fbc_skipped: list[int]
    dbcache_skipped: list[int]
    first_difference: int | None = None
    why: str = ""

    @property
    def same(self) -> bool:
        return self.fbc_skipped == self.dbcache_skipped


@dataclass
class ThresholdParity:
    threshold: float
    fbc_point: str
    dbcache_point: str
    dbcache_settings: str
    warmup: int = 0
    rows: list[BranchParity] = field(default_factory=list)
    identical_outputs: int = 0
    items: int = 0

    @property
    def agreeing(self) -> int:
        return sum(r.same for r in self.rows)


def _records(summary: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """The generation's decision record per branch and step (one branch only: named "all")."""
    table = summary.get("decisions") or {}
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for row in zip(*(table.get(k, []) for k in ("branch", "step", "computed", "signal"))):
        out.setdefault(row[0], {})[int(row[1])] = {"computed": bool(row[2]), "signal": row[3]}
    return {"all": next(iter(out.values()))} if len(out) == 1 else out


def decisions(summary: dict[str, Any]) -> dict[str, list[bool]]:
    """Per branch, whether the cache computed each step (its decision record; {} for a generation without one)."""
    return {branch: [steps[k]["computed"] for k in sorted(steps)] for branch, steps in _records(summary).items()}


def dbcache_settings(params: dict[str, Any]) -> dict[str, Any]:
    return {**CACHE_DIT_DEFAULTS, **params}


def _f1b0(params: dict[str, Any]) -> bool:
    full = dbcache_settings(params)
    return full["Fn_compute_blocks"] == 1 and full["Bn_compute_blocks"] == 0


def _why(step: int, branch: str, fbc_computed: bool, settings: dict[str, Any], summary: dict[str, Any]) -> str:
    """Why cache-dit (its generation's `summary`) decided otherwise than First Block Cache at its first differing
    step."""
    record = _records(summary).get(branch, {}).get(step)
    signal = record["signal"] if record else None
    threshold = settings["residual_diff_threshold"]
    if fbc_computed:  # cache-dit reused, First Block Cache computed
        if threshold >= 1.0:
            return "cache-dit caches unconditionally at a threshold >= 1 (signal -1.0); diffusers compares"
        return (f"cache-dit's diff {signal:.6g} < {threshold:g} where First Block Cache's was above it "
                f"(the hidden states had already diverged)" if signal is not None else "no cache-dit record")
    if signal is not None and signal == threshold:
        return f"tie: diff {signal:.6g} == threshold (diffusers caches at <=, cache-dit only at <)"
    if signal is None and step < settings["max_warmup_steps"]:
        return f"cache-dit warm-up: the first max_warmup_steps={settings['max_warmup_steps']} steps always compute"
    if signal is None:
        return "cache-dit computed without comparing (no signal recorded)"
    if signal >= threshold:
        return (f"cache-dit's diff {signal:.6g} >= {threshold:g}: the residuals differ from First Block Cache's "
                f"here (the hidden states had already diverged)")
    limits = {k: settings[k] for k in ("max_cached_steps", "max_continuous_cached_steps") if settings[k] >= 0}
    return f"cache-dit's step limits ({', '.join(f'{k}={v}' for k, v in limits.items())})" if limits else \
        f"cache-dit's diff {signal:.6g} < {threshold:g} yet computed"


def parity(run_dir: str | Path) -> list[ThresholdParity]:
    """Every (First Block Cache, DBCache F1B0) pair of points at the same threshold in the run, item by item."""
    from experiments.errors import NoResults
    from repro.store import Store

    store = Store.open_existing(run_dir, read_only=True)
    points = {p["point_id"]: p for p in store.points()}
    generations = [g for g in store.generations(status="ok") if g["role"] == "cached"]
    method = {g["point_id"]: g["method"] for g in generations}  # the registry's name (a point keeps its label)
    # paired at the same threshold and the same optimizations (attention backend, compile, ...)
    fbc = {(float(p["params"].get("threshold", 0.1)), _key(p["optimization"])): p for p in points.values()
           if method.get(p["point_id"]) == "first_block_cache"}
    dbcache = [p for p in points.values() if method.get(p["point_id"]) == "dbcache" and _f1b0(p["params"])]
    by_point: dict[str, dict[tuple[int, int], dict]] = {}
    for g in generations:
        by_point.setdefault(g["point_id"], {})[(g["prompt_index"], g["seed"])] = g
    out = []
    for d in dbcache:
        settings = dbcache_settings(d["params"])
        threshold = float(settings["residual_diff_threshold"])
        f = fbc.get((threshold, _key(d["optimization"])))
        if f is None:
            continue
        shown = {k: settings[k] for k in ("max_warmup_steps", "max_cached_steps", "max_continuous_cached_steps")}
        result = ThresholdParity(threshold, f["point_id"], d["point_id"],
                                 "F1B0 " + " ".join(f"{k}={v}" for k, v in shown.items()), settings["max_warmup_steps"])
        for item, gd in sorted(by_point.get(d["point_id"], {}).items()):
            gf = by_point.get(f["point_id"], {}).get(item)
            if gf is None:
                continue
            result.items += 1
            result.identical_outputs += _same_frames(Path(run_dir), gf, gd)
            mine, theirs = decisions(gf["summary"]), decisions(gd["summary"])
            for branch in mine:
                a, b = mine[branch], theirs.get(branch, [])
                row = BranchParity(item[0], item[1], branch, [s for s, c in enumerate(a) if not c],
                                   [s for s, c in enumerate(b) if not c])
                diff = next((s for s, (x, y) in enumerate(zip(a, b)) if x != y), None)
                if diff is not None:
                    row.first_difference = diff
                    row.why = _why(diff, branch, a[diff], settings, gd["summary"])
                result.rows.append(row)
        out.append(result)
    if not out:
        raise NoResults(f"{run_dir}: no pair of finished first_block_cache and dbcache points with Fn_compute_blocks=1, "
                        f"Bn_compute_blocks=0 and the same threshold (threshold == residual_diff_threshold)")
    return out


def _key(optimization: dict[str, Any]) -> str:
    import json

    return json.dumps(optimization, sort_keys=True, default=str)


def _same_frames(run_dir: Path, a: dict, b: dict) -> bool:
    from experiments.media import read_frames

    import numpy as np

    if not a.get("media_dir") or not b.get("media_dir"):
        return False
    return bool(np.array_equal(read_frames(run_dir / a["media_dir"]), read_frames(run_dir / b["media_dir"])))


def format_parity(results: list[ThresholdParity], markdown: bool = False) -> str:
    """The parity table: per threshold and item, the steps each library skipped per branch."""
    lines = []
    head = ["threshold", "DBCache warm-up", "item (prompt, seed)", "branch", "First Block Cache skipped", "DBCache F1B0 skipped",
            "same", "first difference: why"]
    rows = []
    for r in results:
        for b in r.rows:
            why = "" if b.same else f"step {b.first_difference}: {b.why}"
            rows.append([f"{r.threshold:g}", str(r.warmup), f"({b.prompt_index}, {b.seed})", b.branch,
                         _steps(b.fbc_skipped), _steps(b.dbcache_skipped), "yes" if b.same else "NO", why])
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max(len(x) for x in col) for col in zip(head, *rows)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.append("")
    for r in results:
        lines.append(f"threshold {r.threshold:g}: {r.fbc_point} vs {r.dbcache_point} ({r.dbcache_settings}): "
                     f"{r.agreeing} of {len(r.rows)} branch schedules identical; outputs bit-identical on "
                     f"{r.identical_outputs} of {r.items} items")
    return "\n".join(lines)


def _steps(steps: list[int]) -> str:
    return "[" + ", ".join(map(str, steps)) + "]"
