"""Weights & Biases as a projection of the results store (docs/wandb.md).

`repro track RUN_DIR` reads the store and logs what W&B does not have yet: one run per point
(grouped by the sweep's name, one history row per settled generation, the point's aggregates once
it is complete), a summary run, and once the sweep has ended, the results as an artifact
(``repro.artifacts``). A generation is settled when it failed, or is stored with every score it
needs (``repro.scoring.needed``) or with its scoring error.

`repro sweep` runs it as a separate process at the lowest CPU priority (:class:`LiveTracker`),
following the store while the sweep runs: W&B never shares a process with a timed call.

Durability: a W&B run's transaction log is complete only once the run finishes, so a point's run
is written in *segments* (resume, log what is pending, finish), and only a finished segment's
items enter the ledger (RUN_DIR/wandb-ledger.jsonl). Run ids come from point ids and steps from
the ledger, so a `kill -9` of the sweep or of the tracker loses nothing and logs nothing twice.
The API key is never read into our logs, specs or store; we only check whether one exists.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from experiments.errors import SpecError
from experiments.spec import stable_hash

#: W&B's own names for its modes ("run" and "dryrun" are its older spellings).
MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}
MEDIA_ITEMS = 2  # items per point whose baseline and cached outputs are logged as media
SUMMARY_EVERY_S = 60.0  # the summary run refreshes at most this often while the sweep runs, and at its end
# Rows per segment: keeps a segment under one 32 KiB block of the transaction log, so a segment cut
# short by kill -9 holds no readable row (which the ledger would not know of and a resume would repeat).
SEGMENT_ROWS = 16
POLL_S = 1.0  # how often a following tracker looks for new generations
FINISH_TIMEOUT_S = 600.0  # how long a sweep waits for its tracker's final pass
LEDGER = "wandb-ledger.jsonl"
LOG = "wandb-tracker.log"  # what the sweep's tracker process printed
LOCK = ".wandb-tracker.lock"  # held by the one tracker of a run directory (its pid inside)


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
    """`auto`: online with credentials (WANDB_API_KEY, or a netrc entry for api.wandb.ai), else offline."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc")).read_text()
    except OSError:
        netrc = ""
    return "online" if "api.wandb.ai" in netrc else "offline"


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
        self.final = False  # the last summary logged was a complete sweep's
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
            if "final" in entry:
                self.final = bool(entry["final"])

    def logged(self) -> set[str]:
        return {k for keys in self.items.values() for k in keys}

    def add(self, run: str, items: list[str] | None = None, summary: str | None = None,
            final: bool | None = None) -> None:
        entry = {"target": self.target, "run": run, "items": list(items or []), "summary": summary,
                 "at": round(time.time(), 3), **({} if final is None else {"final": final})}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._apply(entry)


# -- the projection -------------------------------------------------------------------------------


class Projection:
    """What W&B lacks of one run directory's store, logged in segments (see the module doc)."""

    def __init__(self, spec: Any, store: Any, target: Target, stream: TextIO):
        from repro.aggregate import quality_columns

        self.spec, self.store, self.target, self.stream = spec, store, target, stream
        self.run_dir = Path(store.run_dir)
        self.ledger = Ledger(self.run_dir / LEDGER, target.fingerprint())
        self.columns = quality_columns(store)
        self.points = {p["point_id"]: p for p in store.points()}
        self._summary_at, self._completed_since_summary = 0.0, False

    # what the store holds ---------------------------------------------------------------------

    def _plan(self) -> tuple[set[str] | None, dict[str, int]]:
        meta = self.store.meta()
        keys = meta.get("plan_keys")
        return (set(keys) if keys is not None else None), dict(meta.get("plan_points") or {})

    def new_rows(self) -> list[dict[str, Any]]:
        """Settled generations of the current plan that W&B lacks, in the order they were stored."""
        from repro.scoring import needed

        planned, _ = self._plan()
        logged = self.ledger.logged()
        fresh = [g for g in self.store.generation_states() if g["key"] not in logged
                 and (planned is None or g["key"] in planned)]
        stored = self.store.score_keys([g["key"] for g in fresh])
        return [g for g in fresh if g["status"] != "ok" or g.get("score_error")
                or not needed(self.spec.metrics, g.get("quality_baseline_key"), stored.get(g["key"], ()))]

    def complete_points(self) -> set[str]:
        """Points whose planned generations are all logged."""
        _, sizes = self._plan()
        return {pid for pid, n in sizes.items() if len(self.ledger.items.get(self._rid(pid), [])) >= n}

    # logging ----------------------------------------------------------------------------------

    def log_new(self, wandb) -> int:
        """Log every settled generation W&B lacks; a point that completes gets its aggregates."""
        from repro.aggregate import item_rows

        fresh = [g["key"] for g in self.new_rows()]
        if not fresh:
            return 0
        before = self.complete_points()
        rows = {r["key"]: r for r in item_rows(self.store, keys=fresh, with_baselines=True)}
        by_point: dict[str, list[dict[str, Any]]] = {}
        for key in fresh:
            by_point.setdefault(rows[key]["point_id"], []).append(rows[key])
        for pid, pending in by_point.items():
            for i in range(0, len(pending), SEGMENT_ROWS):
                self._segment(wandb, pid, pending[i:i + SEGMENT_ROWS], rows)
        for pid in sorted(self.complete_points() - before):
            self._point_summary(wandb, pid)
            self._completed_since_summary = True
        if self._completed_since_summary and time.monotonic() - self._summary_at > SUMMARY_EVERY_S:
            self._summary(wandb, final=False)
        return len(fresh)

    def finish(self, wandb) -> str:
        """The last pass: every point's aggregates (partial ones too), the summary run, the artifact."""
        from repro.aggregate import tables

        points, items = tables(self.store)
        for pid in points["point_id"] if len(points) else []:
            if self._rid(pid) in self.ledger.items:
                self._point_summary(wandb, pid, points)
        complete = set(self._plan()[1]) <= self.complete_points()  # every planned generation logged
        self._summary(wandb, final=complete, tables=(points, items))
        if self.spec.wandb.artifact:
            self._artifact(wandb, stopped=not complete)
        where = str(self.target.wandb_dir)
        if self.target.mode == "offline":
            where += f" (upload later with `wandb sync {self.target.wandb_dir}`)"
        n_runs = len([r for r, keys in self.ledger.items.items() if keys])
        return (f"wandb: {len(self.ledger.logged())} items in {n_runs} point runs of group {self.spec.name!r}, "
                f"mode {self.target.mode}: {where}")

    def _segment(self, wandb, pid: str, rows: list[dict[str, Any]], by_key: dict[str, dict[str, Any]],
                 summary: dict[str, Any] | None = None) -> None:
        """Resume the point's run, log `rows` (steps continuing the ledger's) and `summary`, finish, record."""
        rid = self._rid(pid)
        point = self.points.get(pid)
        if point is None:  # a baseline: its point id is "baseline" or "baseline | <its optimization>"
            name, job_type = f"baseline {pid.partition(' | ')[2]}".strip(), "baseline"
            what = {"method": "baseline", "params": {}}
        else:
            name, job_type = f"{point['method']} {point['label']}", "cached"
            what = {k: point[k] for k in ("method", "params", "optimization")}
        run = self._init(wandb, rid, name=name, job_type=job_type,
                         config={**self._base_config(), "point_id": pid, **what})
        try:
            step = len(self.ledger.items.get(rid, []))
            for row in rows:
                step += 1
                data = {**_item_data(row, self.columns), "items_done": step}
                if step <= MEDIA_ITEMS and row["status"] == "ok":
                    data.update(_media(wandb, row, by_key.get(row.get("quality_baseline_key") or "")))
                run.log(data, step=step)
            if summary:
                run.summary.update(summary)
        finally:
            run.finish()
        self.ledger.add(rid, items=[r["key"] for r in rows], summary=stable_hash(summary) if summary else None)

    def _point_summary(self, wandb, pid: str, points=None) -> None:
        """A point's aggregates in its run's summary (from its own items alone unless `points` is given)."""
        import pandas as pd

        from repro.aggregate import item_rows, point_rows

        rid = self._rid(pid)
        if points is None:
            mine = [r for r in item_rows(self.store, keys=self.ledger.items.get(rid, [])) if r["point_id"] == pid]
            points = pd.DataFrame(point_rows(self.store, mine))
        rows = points[points["point_id"] == pid].to_dict("records")
        summary = {k: _clean(v) for k, v in rows[0].items() if k not in ("params", "python_call", "spec_snippet")} \
            if rows else {}
        if summary and self.ledger.summaries.get(rid) != stable_hash(summary):
            self._segment(wandb, pid, [], {}, summary)

    def _summary(self, wandb, final: bool, tables: tuple | None = None) -> None:
        from repro.aggregate import tables as make_tables
        from metrics.registry import FRONT

        points, items = tables if tables is not None else make_tables(self.store)
        self._summary_at, self._completed_since_summary = time.monotonic(), False
        rid = self._rid("summary")
        fingerprint = stable_hash({"points": points.to_json(), "final": final})
        if self.ledger.summaries.get(rid) == fingerprint:
            return
        run = self._summary_run(wandb)
        try:
            step = self.ledger.segments.get(rid, 0) + 1
            cols = [c for c in points.columns if c not in ("python_call", "spec_snippet")]
            data: dict[str, Any] = {"points": wandb.Table(columns=cols, data=[[_clean(v) for v in r] for r in
                                                                              points[cols].itertuples(index=False)]),
                                    "points_complete": len(self.complete_points())}
            ok = points[(points["status"] == "ok") & (points["method"] != "baseline")]
            for metric in FRONT:
                if metric in self.columns and metric in ok and ok[metric].notna().any():
                    by_method = list(ok.sort_values("speedup").groupby("method", sort=True))
                    data[f"speedup_vs_{metric}"] = wandb.plot.line_series(
                        xs=[[float(v) for v in g["speedup"]] for _, g in by_method],
                        ys=[[_clean(v) for v in g[metric]] for _, g in by_method], keys=[m for m, _ in by_method],
                        title=f"speedup vs {metric}", xname="speedup")
            if final:
                data["media"] = _media_table(wandb, items, self.columns)
            run.log(data, step=step)
            run.summary.update({"n_points": int(len(ok)), "spec_hash": self.spec.spec_hash(), "final": final})
        finally:
            run.finish()
        self.ledger.add(rid, summary=fingerprint, final=final)

    def _artifact(self, wandb, stopped: bool) -> None:
        """The results as a new artifact version, unless this exact content was logged already."""
        import shutil
        import tempfile

        from repro.artifacts import content_digest, log_results, pack

        media = self.spec.wandb.artifact_media
        staging = Path(tempfile.mkdtemp(prefix=".tmp-artifact-", dir=self.run_dir))
        try:
            pack(self.run_dir, staging, media)
            key = stable_hash({"content": content_digest(staging), "stopped": stopped, "media": media})
            if self.ledger.summaries.get("artifact") == key:
                return
            run = self._summary_run(wandb)
            try:
                log_results(wandb, run, staging, self.spec, stopped, media)
            finally:
                run.finish()
            self.ledger.add("artifact", summary=key)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _rid(self, pid: str) -> str:
        return run_id(self.spec.name, pid, self.run_dir)

    def _summary_run(self, wandb):
        return self._init(wandb, self._rid("summary"), name=f"{self.spec.name} summary", job_type="summary",
                          config=self._base_config())

    def _init(self, wandb, rid: str, name: str, job_type: str, config: dict[str, Any]):
        t = self.target
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True,
                                  disable_git=True)
        return wandb.init(id=rid, name=name, job_type=job_type, group=self.spec.name, project=t.project,
                          entity=t.entity, mode=t.mode, dir=str(t.root), tags=list(self.spec.wandb.tags),
                          config=config, resume="allow", reinit="create_new", settings=settings)

    def _base_config(self) -> dict[str, Any]:
        spec = self.spec
        return {"spec_name": spec.name, "spec_hash": spec.spec_hash(), "model": spec.model.model_dump(mode="json"),
                "generation": spec.generation.pipeline_kwargs(), "versions": self.store.meta().get("versions")}

def track(run_dir: str | Path, mode: str | None = None, follow: bool = False, stream: TextIO | None = None) -> bool:
    """Log what W&B lacks of RUN_DIR's store (`repro track`); with `follow`, keep doing so while the sweep that
    writes it runs, then make the final pass. Prints what W&B holds and where; False when W&B failed (each
    failure is one warning; local results never depend on W&B, and the next run logs what is missing)."""
    from repro.run_dir import check_no_escaping_links
    from repro.store import Store

    stream = stream or sys.stderr
    run_dir = Path(run_dir)
    with Store.open_existing(run_dir, read_only=True) as store:
        spec = store.recorded_spec()
        target = resolve_target(spec, run_dir, mode)
        if target.mode == "disabled":
            print("wandb: disabled (--wandb-mode, WANDB_MODE or the spec's wandb.mode); nothing logged", file=stream)
            return True
        check_no_escaping_links(run_dir)  # the ledger and the W&B folder are written inside it only
        from repro.lock import RunLock

        # one tracker per run directory: a second one (a re-run's, while a killed sweep's still logs) waits
        with RunLock(run_dir, LOCK, wait_s=FINISH_TIMEOUT_S, holder="another W&B tracker"):
            return _project(spec, store, target, follow, stream)


def _project(spec: Any, store: Any, target: Target, follow: bool, stream: TextIO) -> bool:
    warned: set[str] = set()

    def warn(exc: Exception) -> None:
        if type(exc).__name__ not in warned:
            warned.add(type(exc).__name__)
            print(f"wandb: logging failed ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); local "
                  f"results are complete in {store.run_dir}; `repro track {store.run_dir}` logs what W&B lacks",
                  file=stream, flush=True)

    try:
        _forget_inherited_service()
        import wandb

        target.wandb_dir.mkdir(parents=True, exist_ok=True)
        projection = Projection(spec, store, target, stream)
    except Exception as exc:
        warn(exc)
        return False
    while True:
        live = follow and sweep_running(store)  # read first: what is logged after it ended is complete
        try:
            projection.log_new(wandb)
        except Exception as exc:  # e.g. a network down for a while: the next poll tries again
            warn(exc)
        if not live:
            break
        time.sleep(POLL_S)
    try:
        print(projection.finish(wandb), file=stream, flush=True)
    except Exception as exc:
        warn(exc)
    return not warned


def up_to_date(store: Any, target: Target) -> bool:
    """Whether W&B already holds all a store holds, its complete sweep's summary included (read from the ledger
    alone: a sweep with nothing to do starts no tracker)."""
    if target.mode == "disabled":
        return True
    ledger = Ledger(Path(store.run_dir) / LEDGER, target.fingerprint())
    planned = set(store.meta().get("plan_keys") or [])
    return ledger.final and planned <= ledger.logged()


def sweep_running(store: Any) -> bool:
    """Whether the sweep session recorded in the store is still running (its process alive, not ended)."""
    session = store.meta().get("session") or {}
    if session.get("state") != "running":
        return False
    try:
        os.kill(int(session["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError, TypeError):
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


# -- the tracker process of a sweep -------------------------------------------------------------------


@dataclass
class LiveTracker:
    """`repro track RUN_DIR --follow` started by a sweep, at the lowest CPU priority, its output in RUN_DIR/LOG.

    It is paused (SIGSTOP) around every timed call (:meth:`paused`): even at the lowest priority a busy process
    slows a timed call on a shared core (measured: the demo's slowest generation 4.6x the disabled run's). It
    runs in its own process group of the sweep's session, so a terminal's Ctrl-C does not reach it, and if the
    sweep dies while it is paused, the kernel continues it (a stopped member of a group just orphaned gets
    SIGHUP, which it ignores, and SIGCONT): it then sees the sweep is gone and makes its final pass. That rule
    misses a pause still pending when the sweep dies (the tracker, at the lowest priority on busy cores, has
    not yet acted on it), so on Linux the sweep's death also sends it SIGCONT (PR_SET_PDEATHSIG), which
    cancels a pending stop."""

    run_dir: Path
    target: Target
    proc: subprocess.Popen
    offset: int

    @classmethod
    def start(cls, run_dir: Path, target: Target, follow: bool = True) -> "LiveTracker | None":
        if target.mode == "disabled":
            return None
        log = Path(run_dir) / LOG
        offset = log.stat().st_size if log.is_file() and not log.is_symlink() else 0
        env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # its own W&B service (see below)
        with open(log, "ab") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "repro.cli", "track", str(run_dir), "--wandb-mode",
                                     target.mode, *(["--follow"] if follow else [])], stdin=subprocess.DEVNULL,
                                    stdout=fh, stderr=fh, env=env, process_group=0,
                                    preexec_fn=_continue_when_orphaned())
        lowest_priority(proc.pid)
        return cls(Path(run_dir), target, proc, offset)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The tracker stopped for the duration (a timed call); continued after, whatever happened."""
        with contextlib.suppress(ProcessLookupError):  # it has ended (or was killed): nothing to pause
            os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)

    def finish(self, stream: TextIO, timeout: float | None = None) -> None:
        """Wait (bounded) for its final pass, then show what it printed. A tracker killed mid-sweep (a signal)
        is replaced by one catch-up pass: what it had not logged is logged now."""
        if self.proc.poll() is not None and self.proc.returncode < 0 and timeout != 0:
            self._show(stream)
            print(f"wandb: the tracker was stopped by signal {-self.proc.returncode}; logging what it missed",
                  file=stream)
            again = LiveTracker.start(self.run_dir, self.target, follow=False)
            self.proc, self.offset = again.proc, again.offset
        try:
            self.proc.wait(FINISH_TIMEOUT_S if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            print(f"wandb: the tracker (pid {self.proc.pid}) is still logging in the background; what it has not "
                  f"logged when it ends, `repro track {self.run_dir}` logs", file=stream)
            return
        self._show(stream)
        if self.proc.returncode not in (0, 1):  # 1: W&B failed, and the tracker said so itself
            print(f"wandb: the tracker stopped with exit {self.proc.returncode}; local results are complete; "
                  f"`repro track {self.run_dir}` logs what W&B lacks", file=stream)

    def _show(self, stream: TextIO) -> None:
        try:
            with open(self.run_dir / LOG, "rb") as fh:
                fh.seek(self.offset)
                text = fh.read().decode("utf-8", "replace").strip()
                self.offset = fh.tell()
        except OSError:
            text = ""
        if text:
            print(text, file=stream)


def _continue_when_orphaned() -> Callable[[], None] | None:
    """A function for the tracker's child side of the fork (Linux): SIGCONT when the thread that started it ends.
    The library is loaded here, in the parent, so the child between fork and exec only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, int(signal.SIGCONT), 0, 0, 0)  # 1: PR_SET_PDEATHSIG, kept across exec


def lowest_priority(pid: int = 0) -> None:
    """Run `pid` only when a CPU is otherwise idle (SCHED_IDLE, inherited by its children: W&B's own service),
    at nice 19 where that policy is missing: it never competes with a timed call."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, pid, 19)


def _forget_inherited_service() -> None:
    """Start this process's own W&B service, not one a parent exported (WANDB_SERVICE), which outlives a killed
    tracker with its runs still open (docs/wandb.md); one this process started ("VERSION-PID-...") is kept."""
    token = os.environ.get("WANDB_SERVICE")
    if token and token.split("-")[1:2] != [str(os.getpid())]:
        del os.environ["WANDB_SERVICE"]


TIMING_COLUMNS = ("e2e_s", "denoise_s", "speedup", "speedup_denoise", "compute_fraction", "peak_memory_mb")


def _item_data(row: dict[str, Any], quality: tuple[str, ...]) -> dict[str, Any]:
    """One history row: timing and the run's quality columns (metrics.registry; nothing it did not request)."""
    from metrics.registry import METRICS

    data = {"item_key": row["key"], "prompt_index": row["prompt_index"], "seed": row["seed"],
            "status": row["status"], "latency_s": _clean(row["e2e_s"])}
    for col in (*TIMING_COLUMNS, *quality):
        value = _clean(row.get(col))
        if value is not None:
            data[col] = value
        elif col in METRICS and row.get(col) == METRICS[col].identity and not row.get("reference"):
            data[f"{col}_identical"] = True  # JSON has no inf: equal to its baseline's (the identity value)
    return data


def _media(wandb, row: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """The output beside its baseline (what has media: a row kept without media by output.keep_media has none)."""
    out = {"media/output": _medium(wandb, row)} if row.get("frames_dir") else {}
    if baseline is not None and baseline.get("status") == "ok" and baseline.get("frames_dir"):
        out["media/baseline"] = _medium(wandb, baseline)
    return out


def _media_table(wandb, items, quality: tuple[str, ...]):
    first = next((m for m in quality if m in items), None)  # the run's first quality column, beside its outputs
    cols = ["point_id", "label", "prompt", "seed", "speedup", *([first] if first else []), "baseline", "cached"]
    table = wandb.Table(columns=cols)
    ok = items[items["status"] == "ok"]
    base = {r["key"]: r for r in ok.to_dict("records")}
    for r in ok[ok["role"] == "cached"].to_dict("records"):
        ref = base.get(r["quality_baseline_key"])
        if ref is None or not r.get("frames_dir") or not ref.get("frames_dir"):
            continue
        table.add_data(r["point_id"], r["label"], r["prompt"], r["seed"], _clean(r["speedup"]),
                       *([_clean(r.get(first))] if first else []), _medium(wandb, ref), _medium(wandb, r))
    return table


def _medium(wandb, row: dict[str, Any]):
    from experiments.media import read_frames

    if row.get("mp4"):
        return wandb.Video(row["mp4"], format="mp4")
    return wandb.Image(read_frames(row["frames_dir"])[0])  # the first frame, from any media format


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None  # JSON has no NaN/inf; PSNR of identical outputs shows as empty
    if hasattr(v, "item"):
        return _clean(v.item())
    return v
