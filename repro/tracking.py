"""Weights & Biases: one run per point, grouped by sweep, plus a summary run.

Per point: config (method, params, model, generation settings, spec hash) and summary (the
aggregates), so W&B's own run table, parallel coordinates and scatter plots compare points
without custom code. The summary run logs the Pareto table, a speedup-vs-LPIPS chart with
one line per method, and a media table of baseline and cached outputs side by side.

Mode: `online` when credentials are present, `offline` otherwise (a real run directory
under RUN_DIR/wandb that `wandb sync` uploads later), `disabled` on request. Tracking never
blocks or loses local results: every failure here is a warning. The API key is never read
into our logs, specs or store; we only check whether one exists.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, TextIO

from experiments.spec import stable_hash


def resolve_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    return "online" if has_credentials() else "offline"


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def log_sweep(spec: Any, store: Any, points, items, mode: str, stream: TextIO) -> None:
    mode = resolve_mode(mode)
    if mode == "disabled":
        return
    fingerprint = stable_hash({"points": points.to_json(), "mode": mode})
    if store.meta().get("wandb_logged") == fingerprint:
        print("wandb: results unchanged since the last logging; nothing new to log", file=stream)
        return
    try:
        _log(spec, store, points, items, mode)
    except Exception as exc:  # never lose or block local results because of tracking
        print(f"wandb: logging failed ({type(exc).__name__}: {exc}); local results are complete in "
              f"{store.run_dir}", file=stream)
        return
    store.set_meta(wandb_logged=fingerprint, wandb_mode=mode)
    where = f"{store.run_dir / 'wandb'}" + (" (upload later with `wandb sync " + str(store.run_dir / "wandb") +
                                            "/offline-run-*`)" if mode == "offline" else "")
    print(f"wandb: logged {len(points)} runs in group {spec.name!r}, mode {mode}: {where}", file=stream)


def _log(spec: Any, store: Any, points, items, mode: str) -> None:
    import wandb

    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True)
    common = {
        "project": spec.wandb.project, "entity": spec.wandb.entity, "group": spec.name, "mode": mode,
        "dir": str(store.run_dir), "tags": list(spec.wandb.tags), "settings": settings, "reinit": "create_new",
    }
    base_config = {
        "spec_name": spec.name, "spec_hash": spec.spec_hash(), "model": spec.model.model_dump(mode="json"),
        "generation": spec.generation.pipeline_kwargs(), "versions": store.meta().get("versions"),
        "metric_labels": points.attrs.get("metric_labels", {}),
    }
    for row in points.to_dict("records"):
        job_type = "baseline" if row["method"] == "baseline" else "cached"
        run = wandb.init(
            id=_run_id(spec.name, row["point_id"], store.run_dir), name=f"{row['method']} {row['label']}",
            job_type=job_type, resume="allow",
            config={**base_config, "method": row["method"], "params": json.loads(row["params"]),
                    "optimization": row["optimization"], "point_id": row["point_id"]},
            **common,
        )
        run.summary.update({k: _clean(v) for k, v in row.items() if k not in ("params", "python_call", "spec_snippet")})
        run.finish()

    run = wandb.init(id=_run_id(spec.name, "summary", store.run_dir), name=f"{spec.name} summary",
                     job_type="summary", resume="allow", config=base_config, **common)
    table_cols = [c for c in points.columns if c not in ("python_call", "spec_snippet")]
    pareto = wandb.Table(columns=table_cols, data=[[_clean(v) for v in r] for r in points[table_cols].itertuples(index=False)])
    run.log({"points": pareto})
    ok = points[(points["status"] == "ok") & (points["method"] != "baseline")]
    if len(ok) and ok["lpips"].notna().any():
        series_x, series_y, keys = [], [], []
        for method, group in ok.sort_values("speedup").groupby("method", sort=True):
            series_x.append([float(v) for v in group["speedup"]])
            series_y.append([_clean(v) for v in group["lpips"]])
            keys.append(method)
        run.log({"speedup_vs_lpips": wandb.plot.line_series(
            xs=series_x, ys=series_y, keys=keys, title="speedup vs LPIPS", xname="speedup")})
    run.log({"media": _media_table(wandb, items)})
    run.summary.update({"n_points": int(len(ok)), "spec_hash": spec.spec_hash()})
    run.finish()


def _media_table(wandb, items):
    cols = ["point_id", "label", "prompt", "seed", "speedup", "lpips", "baseline", "cached"]
    table = wandb.Table(columns=cols)
    ok = items[items["status"] == "ok"]
    base = {r["key"]: r for r in ok.to_dict("records")}
    from experiments.media import FRAME_PATTERN

    for r in ok[ok["role"] == "cached"].to_dict("records"):
        ref = base.get(r["quality_baseline_key"])
        if ref is None:
            continue
        table.add_data(r["point_id"], r["label"], r["prompt"], r["seed"], _clean(r["speedup"]), _clean(r["lpips"]),
                       _medium(wandb, ref, FRAME_PATTERN), _medium(wandb, r, FRAME_PATTERN))
    return table


def _medium(wandb, row: dict[str, Any], pattern: str):
    if row.get("mp4"):
        return wandb.Video(row["mp4"], format="mp4")
    return wandb.Image(str(Path(row["frames_dir"]) / pattern.format(0)))


def _run_id(name: str, point_id: str, run_dir: Path) -> str:
    return stable_hash({"name": name, "point": point_id, "dir": str(Path(run_dir).resolve())})


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None  # JSON has no NaN/inf; PSNR of identical outputs shows as empty
    if hasattr(v, "item"):
        return _clean(v.item())
    return v
