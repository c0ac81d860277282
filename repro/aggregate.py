"""Tidy tables from the store: one row per item (point x prompt x seed) and one per point.

Per item: speedup = the median over its paired timings of baseline time / cached time, each
pair measured side by side on one worker (``repro.executors.item``; one pair by default, more
with targeted timing repeats), for end-to-end and denoise-loop time; the speed baseline is
uncached with the same optimizations. Rows stored before paired timing (no ``pairs`` in
their summary) fall back to the stored baseline time / cached time. Also per item: the
Amdahl bound 1 / ((1 - p) + p * f), with p the baseline's share of time inside the
transformer and f the compute fraction: no cache that skips transformer work can beat it.
speedup_vs_unoptimized = the unoptimized uncached run's median end-to-end time / this one's,
compute fraction = transformer blocks executed / blocks the speed baseline executed, the
reference metrics against the quality baseline, and the CLIP change vs the baseline. Per
point: the mean over items with a 95% bootstrap interval (PSNR: infinite values capped as
`metrics.aggregate` states), and the mean bound. A point is flagged ``timing_suspect``, with
the reason in ``timing_suspect_reason``, when even its speedup interval's lower end lies more
than ``BOUND_MARGIN`` beyond its bound (a measurement fault, e.g. a baseline timed while the
machine was slower), or when its per-item speedups spread more than ``SPREAD_LIMIT`` x the
median (drift or interference during some items). When `repro tune` wrote into the run, a `tune`
column marks the points its search explored and the ones it chose (from its meta entry). These
tables feed the Pareto front, `repro best`, W&B, exports and `paper_figures`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from experiments.optimizations.axis import optimization_label
from metrics import registry
from metrics.registry import ALONE, FRONT, QUALITY, REFERENCE
from repro.pareto import pareto_mask
from repro.store import Store

NAN = float("nan")
BOUND_MARGIN = 0.05  # a speedup interval lying more than 5% beyond the Amdahl bound is not noise
SPREAD_LIMIT = 0.5  # per-item speedups spanning more than half the median: timing is not stable
#: where a generation's time went (experiments.instrumentation), per item and averaged per point
TIME_PARTS = ("text_encode_s", "vae_decode_s", "inter_step_gap_s", "other_s", "transformer_s", "loop_overhead_s",
              "compile_s", "recompiles")


def quality_columns(store: Store) -> tuple[str, ...]:
    """The quality columns of this run: the metrics its spec requests (clip also gives clip_delta), nothing else."""
    names = ((store.meta().get("spec") or {}).get("metrics") or {}).get("names", registry.DEFAULT_NAMES)
    return registry.requested_columns(names)


def item_rows(store: Store, keys: list[str] | None = None, with_baselines: bool = False) -> list[dict[str, Any]]:
    """One row per generation of the current plan (the keys the last sweep planned; older keys stay stored
    but are not aggregated, so a point never mixes items of two specs); only those of `keys` when given
    (reading just them and their baselines: the cost does not grow with the run), and the rows of their
    baselines too with `with_baselines`.

    Quality columns are only those requested. The unoptimized baseline is the quality reference: its
    reference metrics (and clip_delta) are NaN with ``reference`` True, never its identity value shown
    as a score. ``identical`` marks items whose PSNR is inf (every frame equal to the baseline's).
    """
    meta = store.meta()
    planned = set(meta["plan_keys"]) if meta.get("plan_keys") is not None else None
    from repro.run_dir import holds_media, media_lost

    if keys is None:
        gens = {g["key"]: g for g in store.generations() if planned is None or g["key"] in planned}
    else:
        gens = {g["key"]: g for g in store.generations(keys=keys)}
        refs = {g.get(k) for g in gens.values() for k in ("speed_baseline_key", "quality_baseline_key")} - {None}
        gens.update({g["key"]: g for g in store.generations(keys=refs - set(gens))})
    # a row is trusted only while its media exist; a copy without media/ (a pulled artifact, a store
    # built in a test) is a results-only copy, shown as recorded
    check = holds_media(store.run_dir)
    for g in gens.values():
        if check and media_lost(store.run_dir, g):
            gens[g["key"]] = {**g, "status": "missing",
                              "error": f"media missing ({g.get('media_dir')}); re-run the sweep to regenerate it"}
    columns = quality_columns(store)
    scores = store.scores() if keys is None else store.scores(keys=list(gens))
    protocol = run_protocol(meta.get("spec") or {})
    points = {p["point_id"]: p for p in store.points()}
    rows = []
    wanted = None if keys is None or with_baselines else set(keys)
    for g in gens.values():
        if wanted is not None and g["key"] not in wanted:
            continue  # a baseline read for its variants' speedups and references
        s = g.get("summary") or {}
        speed_ref = gens.get(g.get("speed_baseline_key") or g["key"])
        quality_ref_key = g.get("quality_baseline_key")
        sc = scores.get(g["key"], {})
        ref_sc = scores.get(quality_ref_key, {}) if quality_ref_key else sc
        quality_ref = gens.get(quality_ref_key) if quality_ref_key else g  # the unoptimized, uncached run
        point = points.get(g["point_id"], {"method": g["method"], "label": g["point_id"]})
        ok = g["status"] == "ok"
        ref_ok = speed_ref is not None and speed_ref["status"] == "ok"
        row = {
            "key": g["key"], "role": g["role"], "point_id": g["point_id"], "quality_baseline_key": quality_ref_key,
            "method": "baseline" if g["role"] == "baseline" else point["method"],
            # a baseline's point id is "baseline" or "baseline | <its optimization>": its name in every table
            "label": g["point_id"] if g["role"] == "baseline" else point["label"],
            "prompt_index": g["prompt_index"], "prompt": g["prompt"], "seed": g["seed"],
            "status": g["status"], "error": g["error"], "kind": g["kind"],
            "frames_dir": str(store.run_dir / g["media_dir"]) if g.get("media_dir") else None,
            "mp4": str(store.run_dir / g["mp4"]) if g.get("mp4") else None,
            "e2e_s": g["e2e_s"] if ok else NAN, "denoise_s": g["denoise_s"] if ok else NAN,
            "speedup": _speedup(s, speed_ref, g, "e2e_s") if ok and ref_ok else NAN,
            "speedup_vs_unoptimized": _ratio(quality_ref, g, "e2e_s")
            if ok and quality_ref is not None and quality_ref["status"] == "ok" else NAN,
            "speedup_denoise": _speedup(s, speed_ref, g, "denoise_s") if ok and ref_ok else NAN,
            "compute_fraction": (g["compute_executed"] / speed_ref["compute_executed"])
            if ok and ref_ok and speed_ref["compute_executed"] else NAN,
            "peak_memory_mb": (g["peak_memory_bytes"] / 2**20) if ok and g["peak_memory_bytes"] else NAN,
            "device": g["device"], "num_frames": g.get("num_frames"),
        }
        for part in TIME_PARTS:
            v = s.get(part)
            row[part] = NAN if v is None or not ok else float(v)
        row["speedup_bound"] = amdahl_bound(_transformer_share(s, speed_ref), row["compute_fraction"]) \
            if ok and ref_ok else NAN
        row["timing_pairs"] = len(s.get("pairs") or []) if ok else 0
        row["step_computed"] = json.dumps(s.get("step_computed", []))
        # per CFG branch and step: computed or reused, and the signal the cache's rule used
        # (experiments.instrumentation.Decision as columns; "" for a baseline or a row stored before decisions)
        row["decisions"] = json.dumps(s["decisions"]) if s.get("decisions") else ""
        row["reference"] = g["role"] == "baseline" and not quality_ref_key
        for m in REFERENCE:
            if m in columns:
                k = protocol.key(m)  # the run's protocol; scores under other protocols become extra columns
                value = sc.get(k, {}).get("value")
                row[m] = NAN if value is None or row["reference"] else float(value)
        for k, sk in sc.items():
            base, _, variant = k.partition("@")
            if base in REFERENCE and base in columns and k != protocol.key(base):
                row[f"{base}@{variant or 'default'}"] = NAN if sk["value"] is None or row["reference"] \
                    else sk["value"]
        for m in ALONE:  # each output's own value, the baseline's too (measured, not an identity)
            if m in columns and m != "clip":
                value = sc.get(m, {}).get("value")
                row[m] = NAN if value is None else float(value)
        if "clip" in columns:
            row["clip"] = sc["clip"]["value"] if sc.get("clip", {}).get("value") is not None else NAN
            base_clip = ref_sc.get("clip", {}).get("value") if quality_ref_key else None
            row["clip_delta"] = (row["clip"] - base_clip) if base_clip is not None and not math.isnan(row["clip"]) \
                else NAN
        if "psnr" in columns:
            row["identical"] = bool(row["psnr"] == math.inf)
        rows.append(row)
    return rows


def metric_labels(store: Store) -> dict[str, str]:
    """Human labels for the quality columns; random-weight networks are named as such."""
    labels = registry.default_labels()
    seen: dict[str, dict[str, Any]] = {}
    for per_gen in store.scores().values():
        for metric, s in per_gen.items():
            first = seen.setdefault(metric.partition("@")[0], dict(s))  # "psnr@pooled_video": another protocol's
            first["random_weights"] = bool(first["random_weights"] or s["random_weights"])  # any score: tagged
    net = {m: s["label"].replace(registry.RANDOM_WEIGHTS_TAG, "").strip().removeprefix(f"{m}_")
           for m, s in seen.items()}
    if "lpips" in seen:
        labels["lpips"] = registry.with_random_tag(f"{labels['lpips']} ({net['lpips']})", seen["lpips"]["random_weights"])
    if "clip" in seen:
        for m in ("clip", "clip_delta"):
            labels[m] = registry.with_random_tag(f"{labels[m]} ({net['clip']})", seen["clip"]["random_weights"])
    for m, s in seen.items():  # every other network metric (VBench's, ImageReward): its weights said
        if m in labels and m not in ("lpips", "clip") and registry.METRICS[m].needs_weights:
            labels[m] = registry.with_random_tag(labels[m], s["random_weights"])
    return {k: v for k, v in labels.items() if k in quality_columns(store)}


def point_rows(store: Store, items: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    import metrics

    items = items if items is not None else item_rows(store)
    protocol = run_protocol(store.meta().get("spec") or {})
    points = {p["point_id"]: p for p in store.points()}
    order = ["baseline"] + list(points)
    groups: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        groups.setdefault(it["point_id"], []).append(it)
    rows = []
    for pid in order + sorted(set(groups) - set(order)):
        its = groups.get(pid)
        if not its:
            continue
        p = points.get(pid, {})
        ok = [i for i in its if i["status"] == "ok"]
        failed = [i for i in its if i["status"] != "ok"]
        status = "ok" if not failed else ("failed" if not ok else "partial")
        first = its[0]
        row = {
            "point_id": pid, "method": first["method"], "label": first["label"],
            "params": json.dumps(p.get("params", {}), sort_keys=True),
            "key_param": p.get("key_param"), "key_value": p.get("key_value"),
            "optimization": optimization_label(p.get("optimization", {})) if p else pid.partition(" | ")[2] or "none",
            "status": status, "error": failed[0]["error"] if failed else None, "n_items": len(ok),
            "n_failed": len(failed), "python_call": p.get("python_call"), "spec_snippet": p.get("spec_snippet"),
        }
        lat = sorted(i["e2e_s"] for i in ok)
        row["latency_s"] = _mean([i["e2e_s"] for i in ok])
        row["latency_q25_s"] = _quantile(lat, 0.25)
        row["latency_q75_s"] = _quantile(lat, 0.75)
        for col in ("speedup_vs_unoptimized", "denoise_s", "speedup_denoise", "compute_fraction", "speedup_bound",
                    "peak_memory_mb", *TIME_PARTS):
            row[col] = _mean([i[col] for i in ok])
        row["reference"] = bool(its[0].get("reference"))
        quality = [q for q in QUALITY if q in its[0]]
        if "identical" in its[0]:
            row["n_identical"] = sum(1 for i in ok if i["identical"])
        variants = sorted({k for i in its for k in i if "@" in k})  # the same metric under other protocols
        for col in ("speedup", *quality, *variants):
            values = [i[col] for i in ok if not _isnan(i.get(col))]
            agg = metrics.aggregate(values, col) if values else None
            if agg and protocol.averaging == "per_frame" and col != "speedup":
                agg = _per_frame_mean(agg, ok, col, protocol)
            if values and all(math.isinf(v) for v in values):  # every item identical to its baseline
                mean = low = high = values[0]
            elif not agg or not agg.get("n"):
                mean = low = high = NAN
            else:
                mean, low, high = agg["mean"], agg["ci_low"], agg["ci_high"]
            row[col], row[f"{col}_ci_low"], row[f"{col}_ci_high"] = mean, low, high
            if col in registry.METRICS and registry.METRICS[col].recommended_samples:  # a set-level score
                row[f"{col}_n"] = len(values)
                row[f"{col}_sample_warning"] = registry.sample_size_warning(col, len(values)) or ""
        row["step_computed"] = json.dumps(_mean_lists([json.loads(i["step_computed"]) for i in ok]))
        row["computed_by_branch"] = json.dumps(computed_by_branch([i.get("decisions") for i in ok]))
        reasons = timing_suspect_reasons(row, [i["speedup"] for i in ok]) if first["role"] == "cached" else []
        row["timing_suspect"] = bool(reasons)
        row["timing_suspect_reason"] = "; ".join(reasons)
        if status == "failed":
            for col in ("speedup", *quality):
                row[col] = NAN
        rows.append(row)
    _mark_fronts(rows)
    _mark_significance(rows, items)
    _mark_tune(rows, store.meta().get("tune"))
    return rows


def computed_by_branch(decisions: list[str | None]) -> dict[str, list[float]]:
    """Per CFG branch, the fraction of items whose cache computed each step (from the items' decision records)."""
    counts: dict[str, dict[int, list[int]]] = {}
    for text in decisions:
        table = json.loads(text) if text else None
        if not table:
            continue
        for branch, step, computed in zip(table["branch"], table["step"], table["computed"]):
            cell = counts.setdefault(branch, {}).setdefault(int(step), [0, 0])
            cell[0] += bool(computed)
            cell[1] += 1
    return {branch: [steps[k][0] / steps[k][1] if k in steps else NAN for k in range(max(steps) + 1)]
            for branch, steps in counts.items()}


def _mark_tune(rows: list[dict[str, Any]], tune: dict[str, Any] | None) -> None:
    """`repro tune`'s marks (its meta entry): the `tune` column is "chosen", "explored" or "" (no tune: no column)."""
    if not tune:
        return
    methods = (tune.get("methods") or {}).values()
    chosen = {m.get("chosen") for m in methods} - {None}
    explored = {p for m in methods for p in m.get("explored") or []}
    for r in rows:
        r["tune"] = "chosen" if r["point_id"] in chosen else ("explored" if r["point_id"] in explored else "")


def _mark_significance(rows: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    """p-values of each cached point against its baseline: speedup != 1 and ΔCLIP != 0 (paired over items)."""
    import pandas as pd

    from repro.significance import against_baseline

    tests = against_baseline(pd.DataFrame(items)) if items else {}
    for r in rows:
        for col in ("speedup_p", "clip_delta_p"):
            if col.removesuffix("_p") in r:  # no p-value for a metric that was not requested
                r[col] = tests.get(r["point_id"], {}).get(col, NAN)


def run_protocol(spec: dict[str, Any]):
    """The metrics.protocol.Protocol a run is scored and averaged with (its spec's metrics.protocol)."""
    from metrics.protocol import Protocol

    return Protocol(**((spec.get("metrics") or {}).get("protocol") or {}))


def _per_frame_mean(agg: dict[str, Any], ok: list[dict[str, Any]], col: str, protocol) -> dict[str, Any]:
    """`averaging: per_frame`: the point mean weighted by each item's frame count (equal counts: the same).

    The interval stays the per-item bootstrap one, shifted by the difference of the two means.
    """
    from metrics import PSNR_CAP_DB
    from metrics.protocol import weighted_mean

    pairs = [(min(i[col], PSNR_CAP_DB) if col.startswith("psnr") else i[col], i.get("num_frames") or 1)
             for i in ok if not _isnan(i.get(col))]
    mean = weighted_mean([v for v, _ in pairs], [w for _, w in pairs], protocol)
    shift = mean - agg["mean"]
    return {**agg, "mean": mean, "ci_low": agg["ci_low"] + shift, "ci_high": agg["ci_high"] + shift}


def _mark_fronts(rows: list[dict[str, Any]]) -> None:
    for m in [m for m in FRONT if rows and m in rows[0]]:
        eligible = [r for r in rows if r["method"] != "baseline" and r["status"] == "ok"]
        mask = pareto_mask([r["speedup"] for r in eligible], [r[m] for r in eligible], registry.better(m))
        on_front = {id(r): on for r, on in zip(eligible, mask)}
        for r in rows:
            r[f"on_front_{m}"] = on_front.get(id(r), False)


def tables(store: Store):
    """(points, items) as pandas DataFrames with the attrs paper_figures reads."""
    import pandas as pd

    items = item_rows(store)
    points = pd.DataFrame(point_rows(store, items))
    meta = store.meta()
    spec = meta.get("spec", {})
    points.attrs["metric_labels"] = metric_labels(store)
    points.attrs["metrics"] = {n: registry.get(n).record() for n in quality_columns(store)}  # what each column is
    points.attrs["title"] = f"{spec.get('name', store.run_dir.name)} ({spec.get('model', {}).get('tiny') and 'tiny ' or ''}{_model_name(spec)})"
    if meta.get("tune"):  # the gates `repro tune` chose its settings with, for the figures' captions
        points.attrs["tune"] = meta["tune"]
    ps = spec.get("prompt_set") or {}
    if ps and not ps.get("reportable", True):  # its numbers must not be reported next to published ones
        points.attrs["not_reportable"] = (f"prompt subset: {ps.get('limit')} of the {ps.get('n_total')} "
                                          f"{ps.get('preset')} prompts (limit={ps.get('limit')}, "
                                          f"sample_seed={ps.get('sample_seed')})")
        points.attrs["title"] += " [NOT REPORTABLE: prompt subset]"
    return points, pd.DataFrame(items)


def _model_name(spec: dict[str, Any]) -> str:
    m = spec.get("model", {})
    if m.get("reference"):
        return f"reference {m['reference']}, trained on a toy world"
    return m.get("id") or (Path(m["path"]).name if m.get("path") else m.get("tiny") or "model")


def amdahl_bound(transformer_share: float, compute_fraction: float) -> float:
    """The best speedup a cache doing `compute_fraction` of the transformer's work can reach.

    >>> round(amdahl_bound(0.8, 0.5), 4)  # 80% of the time in the transformer, half of it skipped
    1.6667
    """
    if _isnan(transformer_share) or _isnan(compute_fraction):
        return NAN
    rest = (1.0 - transformer_share) + transformer_share * compute_fraction
    return 1.0 / rest if rest > 0 else math.inf


def timing_suspect_reasons(point: dict[str, Any], item_speedups: list[float]) -> list[str]:
    """Why a point's speedup should not be trusted as measured (empty: nothing found)."""
    reasons = []
    bound, low, mean = point.get("speedup_bound"), point.get("speedup_ci_low"), point.get("speedup")
    if not any(_isnan(v) for v in (bound, low, mean)) and low > bound * (1 + BOUND_MARGIN):
        reasons.append(f"speedup {mean:.2f}x (95% CI low {low:.2f}x) beyond its Amdahl bound {bound:.2f}x")
    values = sorted(v for v in item_speedups if not _isnan(v))
    if len(values) >= 2:
        median = _quantile(values, 0.5)
        if median > 0 and (values[-1] - values[0]) / median > SPREAD_LIMIT:
            reasons.append(f"per-item speedups spread {values[0]:.2f}x..{values[-1]:.2f}x "
                           f"(more than {SPREAD_LIMIT:.0%} of the median {median:.2f}x)")
    return reasons


def _speedup(summary: dict[str, Any], ref: dict[str, Any], g: dict[str, Any], col: str) -> float:
    """Median of the paired ratios baseline / cached; rows from before paired timing: stored ref / this."""
    if "pairs" not in summary:
        return _ratio(ref, g, col)
    ratios = sorted(p[f"baseline_{col}"] / p[col] for p in summary["pairs"] if p.get(col) and p.get(f"baseline_{col}"))
    return _quantile(ratios, 0.5)


def _transformer_share(summary: dict[str, Any], ref: dict[str, Any]) -> float:
    """The baseline's time inside the transformer / its end-to-end time (from the paired runs when there are)."""
    pairs = summary.get("pairs") or []
    shares = sorted(p["baseline_transformer_s"] / p["baseline_e2e_s"] for p in pairs
                    if p.get("baseline_e2e_s") and p.get("baseline_transformer_s") is not None)
    if shares:
        return _quantile(shares, 0.5)
    ref_summary = (ref or {}).get("summary") or {}
    if ref_summary.get("transformer_s") is not None and ref_summary.get("e2e_s"):
        return ref_summary["transformer_s"] / ref_summary["e2e_s"]
    return NAN


def _ratio(ref: dict[str, Any], g: dict[str, Any], col: str) -> float:
    return ref[col] / g[col] if ref and ref.get(col) and g.get(col) else NAN


def _mean(values: list[float]) -> float:
    vals = [v for v in values if not _isnan(v)]
    return sum(vals) / len(vals) if vals else NAN


def _mean_lists(lists: list[list[float]]) -> list[float]:
    lists = [x for x in lists if x]
    if not lists:
        return []
    n = min(len(x) for x in lists)
    return [sum(x[i] for x in lists) / len(lists) for i in range(n)]


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return NAN
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _isnan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))

