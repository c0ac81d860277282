"""``repro profile SPEC``: where each point's denoise loop spends its host time.

For every selected point (the baselines of the sweep included) one request - the spec's first
prompt and first seed, the point's cache and optimizations - is profiled by
:func:`experiments.profiling.profile_generation` on one loaded pipeline. Into ``RUN_DIR/profile/``
it writes a Chrome trace per point (``<point>.trace.json``: open in Perfetto or ``chrome://tracing``),
``profile.json`` (everything measured) and ``profile.md`` (the table and the details), and prints
the same. The table follows the per-pipeline profile of diffusers' dtype-caching pull request:
calls and total ms of a chosen function (``--function``), inter-step gap, pipeline call.

Times in the table (host ms per step, inter-step gap, pipeline call) come from a call made
without the profiler; counts, frames and hook costs come from the profiled call, whose times
are inflated by the profiler's Python tracing (use them as shares, not as durations).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

from experiments.errors import SpecError


def profile_spec(spec: Any, points: tuple[str, ...] = (), function: str | None = None,
                 echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Profile the selected points of `spec` (all when `points` is empty); returns one row per point."""
    from experiments.media import write_text
    from experiments.profiling import profile_generation
    from experiments.runner import Engine, GenerationRequest
    from repro.plan import branch_ratios, build_plan, versions

    plan = build_plan(spec)
    targets = _targets(plan, points)
    out_dir = _profile_dir(Path(spec.run_dir))
    engine = Engine(spec)
    engine.pipe  # a missing model stops here, before anything is written
    if engine.pipe.device.type == "cpu":  # kineto logs "ERROR ... gpuGetDeviceCount failed" on a machine without GPU
        os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    prompt, seed = spec.prompts[0], spec.seeds[0]
    ratios: dict[str, dict[str, Any]] = {}  # one calibration per key; each point takes its own branch
    rows = []
    for point_id, label, method, params, optimization, calibration in targets:
        row: dict[str, Any] = {"point_id": point_id, "label": label}
        try:
            if calibration and calibration[0] not in ratios:
                cal = next(c for c in plan.calibrations if c.key == calibration[0])
                if cal.published is not None:
                    found = {"published": list(cal.published[0])}
                else:
                    echo(f"calibrating {cal.method} for {point_id} ({len(cal.items)} uncached generation(s))")
                    found = engine.calibrate(cal.method, list(cal.items), dict(cal.params))
                ratios[calibration[0]] = {"ratios": found}
            values = tuple(branch_ratios(ratios[calibration[0]], calibration[1])[1]) if calibration else None
            request = GenerationRequest(prompt=prompt, seed=seed, method=method, params=params,
                                        optimization=optimization, calibration=values)
            trace = out_dir / f"{_file_name(point_id)}.trace.json"
            prof = profile_generation(engine, request, warmup=spec.timing.warmup, trace_path=trace,
                                      function=function)
            row.update(prof.summary())
            row["trace"] = trace.name
        except Exception as exc:  # one point's failure is recorded; the others are still profiled
            row["error"] = f"{type(exc).__name__}: {exc}"
        echo(_one_line(row))
        rows.append(row)
    meta = {"spec": spec.name, "spec_hash": spec.spec_hash(), "versions": versions(), "prompt": prompt, "seed": seed,
            "steps": spec.generation.num_inference_steps, "function": function}
    write_text(out_dir / "profile.json", json.dumps({**meta, "points": rows}, indent=1, default=str))
    report = format_report(rows, function)
    write_text(out_dir / "profile.md", report)
    echo("")
    echo(report)
    echo(f"wrote {len(rows)} trace(s), profile.json and profile.md to {out_dir}")
    return rows


def _targets(plan: Any, wanted: tuple[str, ...]) -> list[tuple]:
    """(id, label, method, params, optimization, (calibration key, cfg branch) | None) per profiled point."""
    targets, seen = [], set()
    for job in plan.baselines:
        if job.point_id not in seen:
            seen.add(job.point_id)
            targets.append((job.point_id, "uncached", None, {}, dict(job.optimization), None))
    for p in plan.points:
        calibration = (p.calibration_key, p.cfg_branch) if p.calibration_key else None
        targets.append((p.point_id, f"{p.method_label} {p.label}", p.method, dict(p.params), dict(p.optimization),
                        calibration))
    if not wanted:
        return targets
    known = [t[0] for t in targets]
    missing = [w for w in wanted if w not in known]
    if missing:
        shown = ", ".join(known[:12]) + (f", ... ({len(known)} in all)" if len(known) > 12 else "")
        raise SpecError(f"--point {missing[0]!r}: no such point in this spec; known points: {shown} "
                        "(`repro validate SPEC` lists them)")
    return [t for t in targets if t[0] in wanted]


def _profile_dir(run_dir: Path) -> Path:
    out = run_dir / "profile"
    for path in (run_dir, out):
        if path.is_symlink():
            raise SpecError(f"{path} is a symbolic link; repro profile writes only into a real run directory")
        if path.exists() and not path.is_dir():
            raise SpecError(f"{path} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _file_name(point_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", point_id).strip("._") or "point"


def _ms(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _one_line(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"profiled {row['point_id']}: FAILED {row['error']}"
    return (f"profiled {row['point_id']}: {row['steps']} steps, {row['syncs_in_loop']} syncs in the loop, "
            f"pipeline call {_ms(row['pipeline_call_ms'])} ms, trace {row['trace']}")


def format_report(rows: list[dict[str, Any]], function: str | None = None, frames: int = 5) -> str:
    """The Markdown table (one row per point) and, per point, its syncs, top frames and hook files."""
    head = ["point", "label"]
    if function:
        head += [f"{function} calls", f"{function} total ms"]
    head += ["syncs in loop", "hook ms/step", "host ms/step", "inter-step gap ms", "pipeline call ms", "top frame"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if "error" in row:
            cells = (row["point_id"], row["label"], f"failed: {row['error']}")
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
            continue
        cells = [row["point_id"], row["label"]]
        if function:
            fn = row.get("function") or {}
            cells += [str(fn.get("calls", "-")), _ms(fn.get("total_ms"))]
        top = row["top_frames"][0] if row["top_frames"] else None
        cells += [str(row["syncs_in_loop"]), _ms(row["hook_ms_per_step"], 3), _ms(row["host_step_ms_mean"]),
                  _ms(row["inter_step_gap_ms_mean"], 3), _ms(row["pipeline_call_ms"]),
                  f"`{top['frame']}` ({top['calls']} calls, {top['python_ms']:.1f} ms Python)" if top else "-"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    device = next((r["device"] for r in rows if "device" in r), None)
    lines += ["", "host ms/step, inter-step gap (mean per gap) and pipeline call: a call without the profiler. "
              "Counts, frames, hook ms and sync ms: the profiled call (its times are inflated by Python tracing; "
              "read them as shares)."]
    if device == "cpu":
        lines.append("device cpu: these ops do not wait for anything here; they are where a GPU run blocks the host.")
    for row in rows:
        if "error" in row:
            continue
        lines += ["", f"## {row['point_id']} ({row['label']})", "",
                  "host ms per step: " + ", ".join(_ms(v) for v in row["host_step_ms"])]
        if row["syncs"]:
            lines.append(f"syncs in the denoise loop ({row['syncs_in_loop']}; {row['syncs_outside_loop']} more "
                         "before or after it):")
            for s in row["syncs"]:
                steps = ",".join(str(i) for i in s["steps"])
                lines.append(f"- {s['count']} x {s['kind']} at {s['site']}, op {s['op']}, in steps {steps}")
        else:
            lines.append(f"no syncs in the denoise loop ({row['syncs_outside_loop']} before or after it)")
        if row["hook_ms_per_step"] is None:
            lines.append("no diffusers hooks on the transformer")
        else:
            files = ", ".join(f"{f} {ms / max(1, row['steps']):.3f}" for f, ms in row["hook_ms_by_file"].items())
            lines.append(f"hook cost per step: {row['hook_ms_per_step']:.3f} ms ({files or 'no time recorded'})")
        lines.append("top host-side Python frames (Python ms, op ms, calls, inclusive ms):")
        for f in row["top_frames"][:frames]:
            lines.append(f"- `{f['frame']}`: {f['python_ms']:.2f} ms Python, {f['op_ms']:.2f} ms in ops, "
                         f"{f['calls']} calls, {f['total_ms']:.2f} ms inclusive")
    return "\n".join(lines) + "\n"
