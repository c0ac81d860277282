"""Weights & Biases, live: one run per point (grouped by sweep) plus a summary run, fed while the sweep runs.

Each point's run starts when its first generation starts and gets one history row per finished
item (step = the point's items done: latency, compute fraction, speedup, scores; media for its
first items). The summary run's Pareto table and speedup charts are updated as points complete
(and at most every `SUMMARY_EVERY_S` while items arrive), then once more when the sweep ends,
which also logs the results as an artifact (see `repro.artifacts`).

Nothing here runs on the generating thread: the event methods only put a message on a queue and
one background thread makes every W&B call, and each W&B run it writes takes its turn between
timed calls (`experiments.turns`), so it does not compete with one (a timed call waits for the
run being written, 10 s at most); every failure is a warning, and local results never depend on
it. The API key is never read into our logs, specs or store; we only check whether one exists.

Durability. W&B writes a run's transaction log (`run-ID.wandb`) in 32 KiB blocks and completes it
only when the run finishes, so a run held open for a whole sweep has nothing readable after a
`kill -9`. The thread therefore writes in *segments*: resume the point's run, log what is pending,
finish. A finished segment is a complete offline directory (`wandb sync` uploads the segments of
one run in order, as one run), and only then are its items appended to the ledger
(RUN_DIR/wandb-ledger.jsonl). A resumed sweep logs exactly the items the ledger lacks: nothing
is lost, nothing is logged twice, and the steps continue where they stopped.

Where: command-line flag, then W&B's own environment variables (WANDB_MODE, WANDB_PROJECT,
WANDB_ENTITY, WANDB_DIR), then the spec. `auto` means online with credentials, offline without.
"""

from __future__ import annotations

import functools
import json
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from experiments import turns
from experiments.errors import SpecError
from experiments.spec import stable_hash

#: W&B's own names for its modes ("run" and "dryrun" are its older spellings).
MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}
MEDIA_ITEMS = 2  # items per point whose baseline and cached outputs are logged as media
SUMMARY_EVERY_S = 60.0  # the summary run also refreshes while items arrive, not only when points complete
# Rows per segment: keeps a segment under one 32 KiB block of the transaction log, so a segment cut
# short by kill -9 holds no readable row (which the ledger would not know of and a resume would repeat).
SEGMENT_ROWS = 16
FLUSH_EVERY_S = 3.0  # gather events this long between W&B rounds: each segment costs W&B ~0.2 s of CPU
FINISH_TIMEOUT_S = 600.0
LEDGER = "wandb-ledger.jsonl"


# -- where to log -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    mode: str  # online | offline | disabled
    project: str
    entity: str | None
    root: Path  # W&B writes root/wandb/

    @property
    def wandb_dir(self) -> Path:
        return self.root / "wandb"

    def fingerprint(self) -> str:
        # offline segments are uploaded into the same project later: the mode is not part of it
        return stable_hash({"project": self.project, "entity": self.entity, "root": str(self.root.resolve())})


def resolve_target(spec: Any, run_dir: Path, mode: str | None = None) -> Target:
    """Mode, project, entity and directory: the flag, then W&B's environment variables, then the spec."""
    env = os.environ
    if mode is None and env.get("WANDB_MODE"):
        raw = env["WANDB_MODE"].strip().lower()
        if raw not in MODES:
            raise SpecError(f"environment variable WANDB_MODE={env['WANDB_MODE']!r}: allowed values are "
                            f"online, offline, disabled (or W&B's older run, dryrun)")
        mode = MODES[raw]
    if mode is None and env.get("WANDB_DISABLED", "").strip().lower() in ("true", "1", "yes"):
        mode = "disabled"
    mode = resolve_mode(mode or spec.wandb.mode)
    return Target(mode=mode, project=env.get("WANDB_PROJECT") or spec.wandb.project,
                  entity=env.get("WANDB_ENTITY") or spec.wandb.entity,
                  root=Path(env["WANDB_DIR"]) if env.get("WANDB_DIR") else Path(run_dir))


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


def run_id(name: str, point_id: str, run_dir: Path) -> str:
    return stable_hash({"name": name, "point": point_id, "dir": str(Path(run_dir).resolve())})


# -- the ledger: what reached W&B -------------------------------------------------------------------


class Ledger:
    """Append-only record of finished segments: the items each run holds and its last summary, per target.

    One JSON line per segment, fsynced after the segment finished; a line cut short by a crash is
    ignored (its items are logged again, and its segment, cut short too, holds no readable row).
    """

    def __init__(self, path: Path, target: str):
        self.path = path
        self.target = target
        self.items: dict[str, list[str]] = {}
        self.segments: dict[str, int] = {}
        self.summaries: dict[str, str] = {}
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and entry.get("target") == target and isinstance(entry.get("run"), str):
                self._apply(entry)

    def _apply(self, entry: dict[str, Any]) -> None:
        run = entry["run"]
        self.segments[run] = self.segments.get(run, 0) + 1
        self.items.setdefault(run, []).extend(k for k in entry.get("items") or [] if isinstance(k, str))
        if entry.get("summary"):
            self.summaries[run] = entry["summary"]

    def logged(self) -> set[str]:
        return {k for keys in self.items.values() for k in keys}

    def add(self, run: str, items: list[str] | None = None, summary: str | None = None) -> None:
        entry = {"target": self.target, "run": run, "items": list(items or []), "summary": summary,
                 "at": round(time.time(), 3)}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._apply(entry)


# -- the tracker --------------------------------------------------------------------------------------


def _taking_turns(method):
    """A method that writes a W&B run: only between timed calls (see experiments.turns)."""

    @functools.wraps(method)
    def in_turn(*args, **kwargs):
        with turns.background():
            return method(*args, **kwargs)

    return in_turn


class LiveTracker:
    """A sweep listener (see repro.events in the sweep driver): each method returns at once.

    `generation_finished(event)` (`event.job`) means the generation's row and scores are in the
    store; `sweep_finished(event)` (`event.outcome.interrupted`) logs the final summary and the
    results artifact, then waits (bounded) for the thread.
    """

    def __init__(self, spec: Any, plan: Any, run_dir: Path, target: Target, stream: TextIO):
        self.spec, self.plan, self.run_dir, self.target, self.stream = spec, plan, Path(run_dir), target, stream
        self.enabled = target.mode != "disabled"
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="wandb-tracker", daemon=True)
        self._warned: set[str] = set()
        self._jobs_of: dict[str, set[str]] = {}
        for job in plan.jobs:
            self._jobs_of.setdefault(job.point_id, set()).add(job.key)
        self._points = {p.point_id: p for p in plan.points}
        self._started_runs: set[str] = set()
        self._last_summary = 0.0

    # events (any thread) -------------------------------------------------------------------------

    def sweep_started(self, event: Any = None) -> None:
        if self.enabled and not self._thread.is_alive():
            _forget_inherited_service()
            self._thread.start()
            self._queue.put(("catch_up", None))  # items a killed earlier run stored but never logged

    def generation_started(self, event: Any) -> None:
        if self.enabled:
            self._queue.put(("start", event.job.point_id))

    def generation_finished(self, event: Any) -> None:
        if self.enabled:
            self._queue.put(("item", event.job.key))

    def sweep_finished(self, event: Any, timeout: float | None = None) -> None:
        if not self.enabled or not self._thread.is_alive():
            return
        timeout = FINISH_TIMEOUT_S if timeout is None else timeout
        self._queue.put(("end", bool(event.outcome.interrupted)))
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._warn("timeout", f"wandb: still busy after {timeout:.0f}s; what is not logged yet is logged "
                                  f"when the same command runs again")

    # the thread ----------------------------------------------------------------------------------

    def _work(self) -> None:
        from repro.store import Store

        try:
            with turns.background():  # importing W&B costs a second of CPU
                import wandb
            store = Store(self.run_dir)  # this thread's own connection (SQLite WAL: readers never block the writer)
            self.target.wandb_dir.mkdir(parents=True, exist_ok=True)
            ledger = Ledger(self.run_dir / LEDGER, self.target.fingerprint())
        except Exception as exc:
            self._warn("setup", f"wandb: tracking is off for this sweep ({type(exc).__name__}: {exc}); "
                                f"local results are complete in {self.run_dir}")
            self._drain_until_end()
            return
        while True:
            events = [self._queue.get()]
            deadline = time.monotonic() + FLUSH_EVERY_S
            while events[-1][0] != "end":
                try:
                    events.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            end = next((arg for kind, arg in events if kind == "end"), None)
            ended = any(kind == "end" for kind, _ in events)
            try:
                self._flush(wandb, store, ledger, events)
                if ended:
                    self._finish(wandb, store, ledger, interrupted=bool(end))
            except Exception as exc:  # never lose or block local results because of tracking
                self._warn(type(exc).__name__, f"wandb: logging failed ({type(exc).__name__}: {exc}); local "
                                               f"results are complete in {self.run_dir}; what was not logged "
                                               f"is logged when the same command runs again")
            if ended:
                store.close()
                return

    def _drain_until_end(self) -> None:
        while self._queue.get()[0] != "end":
            pass

    def _flush(self, wandb, store, ledger: Ledger, events) -> None:
        from repro.aggregate import item_rows

        starts = [arg for kind, arg in events if kind == "start"]
        keys = {arg for kind, arg in events if kind == "item"}
        if any(kind == "catch_up" for kind, _ in events):
            planned = {j.key for j in self.plan.jobs}
            keys |= {g["key"] for g in store.generations() if g["key"] in planned}
        keys -= ledger.logged()
        rows: dict[str, list[dict[str, Any]]] = {}
        by_key: dict[str, dict[str, Any]] = {}
        if keys:
            for row in item_rows(store):
                by_key[row["key"]] = row
                if row["key"] in keys:
                    rows.setdefault(row["point_id"], []).append(row)
        touched = list(dict.fromkeys([*starts, *rows]))
        if not touched:
            return
        done = set(store.statuses())
        completed = [pid for pid in rows if self._jobs_of.get(pid, set()) <= done]
        points = self._points_table(store) if completed else None
        for pid in touched:
            pending = sorted(rows.get(pid, []), key=lambda r: (r["prompt_index"], r["seed"]))
            rid = run_id(self.spec.name, pid, self.run_dir)
            if not pending and rid in self._started_runs:
                continue
            chunks = _chunks(pending, SEGMENT_ROWS) or [[]]
            for i, chunk in enumerate(chunks):
                last = i == len(chunks) - 1
                summary = _point_summary(points, pid) if last and pid in completed else None
                self._segment(wandb, ledger, pid, rid, chunk, by_key, summary)
            self._started_runs.add(rid)
        if completed or (rows and time.monotonic() - self._last_summary > SUMMARY_EVERY_S):
            self._summary(wandb, store, ledger, points if points is not None else self._points_table(store),
                          final=False)

    @_taking_turns
    def _segment(self, wandb, ledger: Ledger, pid: str, rid: str, rows: list[dict[str, Any]],
                 by_key: dict[str, dict[str, Any]], summary: dict[str, Any] | None) -> None:
        point = self._points.get(pid)
        is_baseline = point is None
        run = self._init(wandb, rid, name=f"baseline {pid.partition(' | ')[2]}".strip() if is_baseline
                         else f"{point.method_label} {point.label}",
                         job_type="baseline" if is_baseline else "cached", config=self._point_config(pid, point))
        try:
            step = len(ledger.items.get(rid, []))
            for row in rows:
                step += 1
                data = _item_data(row)
                data["items_done"] = step
                if step <= MEDIA_ITEMS and row["status"] == "ok":
                    data.update(_media(wandb, row, by_key.get(row.get("quality_baseline_key") or "")))
                run.log(data, step=step)
            if summary:
                run.summary.update(summary)
        finally:
            run.finish()
        ledger.add(rid, items=[r["key"] for r in rows], summary=stable_hash(summary) if summary else None)

    @_taking_turns
    def _summary(self, wandb, store, ledger: Ledger, points, final: bool, items=None) -> None:
        rid = run_id(self.spec.name, "summary", self.run_dir)
        fingerprint = stable_hash({"points": points.to_json(), "final": final})
        if ledger.summaries.get(rid) == fingerprint:
            return
        run = self._init(wandb, rid, name=f"{self.spec.name} summary", job_type="summary",
                         config=self._base_config(store))
        try:
            step = ledger.segments.get(rid, 0) + 1
            cols = [c for c in points.columns if c not in ("python_call", "spec_snippet")]
            data: dict[str, Any] = {"points": wandb.Table(columns=cols, data=[[_clean(v) for v in r] for r in
                                                                              points[cols].itertuples(index=False)]),
                                    "points_complete": int(sum(1 for pid, keys in self._jobs_of.items()
                                                               if keys <= set(store.statuses())))}
            ok = points[(points["status"] == "ok") & (points["method"] != "baseline")]
            for metric in ("lpips", "ssim", "psnr"):
                if metric in ok and ok[metric].notna().any():
                    xs, ys, names = [], [], []
                    for method, group in ok.sort_values("speedup").groupby("method", sort=True):
                        xs.append([float(v) for v in group["speedup"]])
                        ys.append([_clean(v) for v in group[metric]])
                        names.append(method)
                    data[f"speedup_vs_{metric}"] = wandb.plot.line_series(
                        xs=xs, ys=ys, keys=names, title=f"speedup vs {metric.upper()}", xname="speedup")
            if final and items is not None:
                data["media"] = _media_table(wandb, items)
            run.log(data, step=step)
            run.summary.update({"n_points": int(len(ok)), "spec_hash": self.spec.spec_hash(), "final": final})
        finally:
            run.finish()
        ledger.add(rid, summary=fingerprint)
        self._last_summary = time.monotonic()

    def _finish(self, wandb, store, ledger: Ledger, interrupted: bool) -> None:
        from repro.aggregate import tables

        points, items = tables(store)
        # every point's run gets its aggregates (partial ones too, when the sweep stopped early)
        for row in points.to_dict("records"):
            rid = run_id(self.spec.name, row["point_id"], self.run_dir)
            if rid in self._started_runs or rid in ledger.items:
                summary = _point_summary(points, row["point_id"])
                if ledger.summaries.get(rid) != stable_hash(summary):
                    self._segment(wandb, ledger, row["point_id"], rid, [], {}, summary)
        self._summary(wandb, store, ledger, points, final=not interrupted, items=items)
        if self.spec.wandb.artifact:
            self._artifact(wandb, ledger, stopped=interrupted)
        where = str(self.target.wandb_dir)
        if self.target.mode == "offline":
            where += f" (upload later with `wandb sync {self.target.wandb_dir}`)"
        n_runs = len([r for r, keys in ledger.items.items() if keys])
        print(f"wandb: {len(ledger.logged())} items in {n_runs} point runs of group {self.spec.name!r}, "
              f"mode {self.target.mode}: {where}", file=self.stream, flush=True)

    @_taking_turns
    def _artifact(self, wandb, ledger: Ledger, stopped: bool) -> None:
        """The results as a new artifact version, unless this exact content was logged already."""
        import shutil
        import tempfile

        from repro.artifacts import content_digest, log_results, pack

        media = self.spec.wandb.artifact_media
        staging = Path(tempfile.mkdtemp(prefix=".tmp-artifact-", dir=self.run_dir))
        try:
            pack(self.run_dir, staging, media)
            key = stable_hash({"content": content_digest(staging), "stopped": stopped, "media": media})
            if ledger.summaries.get("artifact") == key:
                return
            run = self._init(wandb, run_id(self.spec.name, "summary", self.run_dir), name=f"{self.spec.name} summary",
                             job_type="summary", config=self._base_config())
            try:
                log_results(wandb, run, staging, self.spec, stopped, media)
            finally:
                run.finish()
            ledger.add("artifact", summary=key)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _init(self, wandb, rid: str, name: str, job_type: str, config: dict[str, Any]):
        t = self.target
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True,
                                  disable_git=True)
        return wandb.init(id=rid, name=name, job_type=job_type, group=self.spec.name, project=t.project,
                          entity=t.entity, mode=t.mode, dir=str(t.root), tags=list(self.spec.wandb.tags),
                          config=config, resume="allow", reinit="create_new", settings=settings)

    def _base_config(self, store=None) -> dict[str, Any]:
        from repro.plan import versions

        spec = self.spec
        return {"spec_name": spec.name, "spec_hash": spec.spec_hash(), "model": spec.model.model_dump(mode="json"),
                "generation": spec.generation.pipeline_kwargs(), "versions": versions()}

    def _point_config(self, pid: str, point: Any) -> dict[str, Any]:
        cfg = {**self._base_config(), "point_id": pid}
        if point is None:
            return {**cfg, "method": "baseline", "params": {}}
        return {**cfg, "method": point.method_label, "params": point.params, "optimization": point.optimization}

    def _points_table(self, store):
        from repro.aggregate import tables

        return tables(store)[0]

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            try:
                print(message, file=self.stream, flush=True)
            except (ValueError, OSError):  # the stream closed under a thread that outlived its sweep
                pass


def _forget_inherited_service() -> None:
    """Start this process's own W&B service rather than one a parent process exported (WANDB_SERVICE:
    a notebook or script that used W&B before launching the sweep). That service outlives a killed
    sweep with its runs still open, and a resumed sweep's segments of the same run ids then never
    reached a finished offline directory: the resume lost them. A service this process started
    (its pid in the token, "VERSION-PID-...") is kept. Effective only before this process first
    uses W&B (it connects once): the tracker's thread is its only user, started after this."""
    token = os.environ.get("WANDB_SERVICE")
    if token and token.split("-")[1:2] != [str(os.getpid())]:
        del os.environ["WANDB_SERVICE"]


def _chunks(rows: list, n: int) -> list[list]:
    return [rows[i:i + n] for i in range(0, len(rows), n)]


ITEM_COLUMNS = ("e2e_s", "denoise_s", "speedup", "speedup_denoise", "compute_fraction", "peak_memory_mb",
                "lpips", "psnr", "ssim", "clip", "clip_delta")


def _item_data(row: dict[str, Any]) -> dict[str, Any]:
    data = {"item_key": row["key"], "prompt_index": row["prompt_index"], "seed": row["seed"],
            "status": row["status"], "latency_s": _clean(row["e2e_s"])}
    for col in ITEM_COLUMNS:
        value = _clean(row.get(col))
        if value is not None:
            data[col] = value
    if row.get("psnr") == math.inf:
        data["psnr_identical"] = True  # JSON has no inf: identical to its baseline
    return data


def _point_summary(points, pid: str) -> dict[str, Any]:
    if points is None:
        return {}
    rows = points[points["point_id"] == pid].to_dict("records")
    if not rows:
        return {}
    return {k: _clean(v) for k, v in rows[0].items() if k not in ("params", "python_call", "spec_snippet")}


def _media(wandb, row: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    out = {"media/output": _medium(wandb, row)}
    if baseline is not None and baseline.get("status") == "ok":
        out["media/baseline"] = _medium(wandb, baseline)
    return out


def _media_table(wandb, items):
    cols = ["point_id", "label", "prompt", "seed", "speedup", "lpips", "baseline", "cached"]
    table = wandb.Table(columns=cols)
    ok = items[items["status"] == "ok"]
    base = {r["key"]: r for r in ok.to_dict("records")}
    for r in ok[ok["role"] == "cached"].to_dict("records"):
        ref = base.get(r["quality_baseline_key"])
        if ref is None:
            continue
        table.add_data(r["point_id"], r["label"], r["prompt"], r["seed"], _clean(r["speedup"]), _clean(r.get("lpips")),
                       _medium(wandb, ref), _medium(wandb, r))
    return table


def _medium(wandb, row: dict[str, Any]):
    from experiments.media import FRAME_PATTERN

    if row.get("mp4"):
        return wandb.Video(row["mp4"], format="mp4")
    return wandb.Image(str(Path(row["frames_dir"]) / FRAME_PATTERN.format(0)))


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None  # JSON has no NaN/inf; PSNR of identical outputs shows as empty
    if hasattr(v, "item"):
        return _clean(v.item())
    return v
