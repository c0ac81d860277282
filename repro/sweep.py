"""`repro sweep`: plan, run items (baseline, then its cached variants), store, score, aggregate, report.

Execution is item-major (``repro.plan.item_major``): each item (prompt, seed) runs back to back
on one worker, its baseline first, so every speedup is a paired, adjacent measurement (see
``repro.executors.item`` for the timing protocol). Measurement is sequential: while a generation
is timed nothing else of ours runs. Each generation's media and row are written as soon as it
finishes (between the timed calls); once an item's generations are done they are scored on the
worker that made them, and the scores committed; then listeners (``repro.events``) hear of the
item. W&B is a projection of the store, made by another process (``repro.tracking``).

The driver is the only writer of the store, so an interrupted sweep resumes exactly where it
stopped: generations not in the store run again, generations without their scores are scored at
the end of the next sweep. Ctrl-C asks to stop after the generation in flight; a second Ctrl-C,
or SIGTERM, stops the generation in flight at its next denoising step (``repro.stop``). Every
interruption exits 130.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TextIO

from experiments.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, DiskFull, SpecChanged, SpecError
from experiments.media import clean_partial, read_frames, write_frames
from experiments.pipelines import check_model_available
from experiments.spec import Spec
from repro import scoring, stop
from repro.executors.resident import Resident
from repro.events import (GenerationFinished, GenerationStarted, ItemFinished, Listeners, PointFinished,
                          SweepFinished, SweepStarted)
from repro.lock import RunLock
from repro.plan import ItemWork, Job, Plan, branch_ratios, build_plan, item_major, versions
from repro.progress import Progress, summary as progress_summary
from repro.scoring import ScoreResult, Scoring, build_scorer, score_missing
from repro.store import STORE_FILE, Store


@dataclass
class SweepOutcome:
    run_dir: Path
    generated: int = 0
    skipped: int = 0
    failed: int = 0
    interrupted: bool = False
    finished: bool = False  # False when the sweep stopped by an exception (stop now, disk full, ...)
    failed_keys: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)  # executor stats: pipeline calls by purpose, worker busy time

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_SOME_FAILED if self.failed else EXIT_OK


def select(plan: Plan, only: tuple[str, ...]) -> Plan:
    """Restrict to `--only method=NAME` / `point=ID` / `prompt=I` / `seed=S` (repeatable, all must match)."""
    filters: dict[str, set[str]] = {}
    for item in only:
        key, _, value = item.partition("=")
        if key not in ("method", "point", "prompt", "seed") or not value:
            raise SpecError(f"--only {item!r}: expected method=NAME, point=ID, prompt=INDEX or seed=SEED")
        filters.setdefault(key, set()).add(value)
    if not filters:
        return plan

    def keep_point(p) -> bool:
        return ("method" not in filters or {p.method, p.method_label} & filters["method"]) and \
               ("point" not in filters or p.point_id in filters["point"])

    def keep_item(j: Job) -> bool:
        return ("prompt" not in filters or str(j.prompt_index) in filters["prompt"]) and \
               ("seed" not in filters or str(j.seed) in filters["seed"])

    points = [p for p in plan.points if keep_point(p)]
    if not points:
        known = sorted({p.method_label for p in plan.points})
        raise SpecError(f"--only {' '.join(only)} matches no point; methods in this spec: {', '.join(known)}")
    ids = {p.point_id for p in points}
    cached = [j for j in plan.cached if j.point_id in ids and keep_item(j)]
    needed = {j.quality_baseline_key for j in cached} | {j.speed_baseline_key for j in cached}
    baselines = [j for j in plan.baselines if j.key in needed or (keep_item(j) and not cached)]
    if not cached and not baselines:
        seeds = sorted({j.seed for j in plan.baselines})
        raise SpecError(f"--only {' '.join(only)} matches no generation; this spec has prompts 0.."
                        f"{max(j.prompt_index for j in plan.baselines)} and seeds {seeds[:10]}")
    calib = {j.calibration_key for j in cached}
    return Plan(points, baselines, cached, [c for c in plan.calibrations if c.key in calib])


def pending(plan: Plan, statuses: dict[str, str], retry_failed: bool) -> list[Job]:
    """The jobs still to run: those not in the store, or with --retry-failed only the failed ones."""
    if retry_failed:
        return [j for j in plan.jobs if statuses.get(j.key) == "failed"]
    return [j for j in plan.jobs if j.key not in statuses]


def run_sweep(spec: Spec, *, executor: str = "local", wandb_mode: str | None = None, only: tuple[str, ...] = (),
              retry_failed: bool = False, dry_run: bool = False, workers: int | None = None,
              ray_address: str | None = None, stream: TextIO | None = None,
              listeners: Iterable[Any] = (), resident: Resident | None = None) -> SweepOutcome:
    """`resident`: a pipeline and metric networks kept loaded across this process's sweeps (repro tune's rounds)."""
    from repro.tracking import resolve_target

    stream = stream or sys.stderr
    full_plan = build_plan(spec)
    plan = select(full_plan, only)
    run_dir = spec.run_dir
    preflight(run_dir)
    target = resolve_target(spec, run_dir, wandb_mode)  # a bad WANDB_MODE stops us before anything is written
    done: dict[str, str] = {}
    if (run_dir / STORE_FILE).is_file():
        with Store(run_dir) as store:
            refuse_changed_spec(store, spec)
            done = store.statuses() if dry_run else {}
    if dry_run:
        todo = pending(plan, done, retry_failed)
        print(plan.describe(), file=stream)
        print(f"{len(todo)} generation(s) would run; {len(plan.jobs) - len(todo)} already in {run_dir}", file=stream)
        for p in plan.points:
            print(f"  {p.point_id:32s} {p.method_label:20s} {p.label}", file=stream)
        return SweepOutcome(run_dir)

    resident = resident or Resident()
    if not (run_dir / STORE_FILE).exists() and plan.jobs:
        # A new run: what is missing (model, metric weights) stops it before its directory exists.
        if executor == "local":
            check_model_available(spec.model)
        resident.keep_scorer(spec.metrics, resident.scorer_for(spec.metrics) or build_scorer(spec.metrics))
    with RunLock(run_dir), Store(run_dir) as store:
        refuse_changed_spec(store, spec)  # again under the lock: another sweep may have just begun
        # what the tables aggregate, and how many generations complete each point (W&B's tracker reads it)
        store.set_meta(plan_keys=[j.key for j in full_plan.jobs],
                       plan_points=dict(Counter(j.point_id for j in full_plan.jobs)))
        return _run(spec, plan, store, executor, retry_failed, workers, ray_address, stream, resident,
                    Listeners(list(listeners), stream), target)


def preflight(run_dir: Path) -> None:
    """Refuse a run directory a sweep must not write into, before anything is created or cleaned."""
    from repro.run_dir import check_no_escaping_links, check_output_dir

    check_output_dir(run_dir)
    check_no_escaping_links(run_dir)


def _trusted_statuses(store: Store, stream: TextIO) -> dict[str, str]:
    """The store's statuses, minus the ok rows whose media are gone: those are generated again (said on `stream`)."""
    from repro.run_dir import missing_media

    statuses = store.statuses()
    gone = missing_media(store)
    if gone:
        print(f"{len(gone)} finished generation(s) have lost their media (e.g. {gone[0]['media_dir']}); "
              f"generating them again", file=stream)
    for g in gone:
        statuses.pop(g["key"], None)
    return statuses


def refuse_changed_spec(store: Store, spec: Spec) -> None:
    """SpecError (exit 2, nothing written) when `spec` changes a field the run directory was made with.

    A run directory holds one experiment: results of another model, step count, device, timing or metric
    network would otherwise be averaged into the same points. Adding points, prompts or seeds is fine.
    """
    from experiments.spec import fixed_changes

    stored = store.meta().get("spec")
    changes = fixed_changes(stored, spec) if stored else []
    if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise SpecChanged(f"{store.run_dir} was made with another experiment ({shown}); a run directory holds one "
                          f"experiment: write this one elsewhere with --out DIR (or output.dir)")


def _run(spec, plan, store, executor_kind, retry_failed, workers, ray_address, stream,
         resident: Resident, events: Listeners, target) -> SweepOutcome:
    from repro.provenance import environment, write_run_files
    from repro.tracking import LiveTracker, up_to_date

    outcome = SweepOutcome(spec.run_dir)
    # A re-run with nothing to generate or score (a finished sweep) imports no torch and no scipy, so it takes a
    # second or two: the environment the results were made in stays theirs (environment() asks torch about the
    # GPUs), and the results table (its confidence intervals import scipy.stats) is left to `repro pareto`.
    todo = pending(plan, _trusted_statuses(store, stream), retry_failed)
    idle = not todo and not scoring.unscored(store, spec.metrics)
    env = idle and store.meta().get("environment") or environment()
    session = {"pid": os.getpid(), "state": "running"}  # a following W&B tracker logs while this one runs
    store.set_meta(spec=spec.model_dump(mode="json"), spec_hash=spec.spec_hash(), versions=versions(),
                   environment=env, session=session)
    write_run_files(spec.run_dir, spec, env)
    clean_partial(spec.run_dir / "media")
    store.put_points(point_records(plan, store))
    tracker = None if idle and up_to_date(store, target) else LiveTracker.start(spec.run_dir, target)
    try:
        _generate(spec, plan, store, todo, executor_kind, workers, ray_address, stream, resident, events, outcome,
                  tracker)
    finally:
        aborted = not outcome.finished
        try:
            store.set_meta(session={**session, "state": "interrupted" if aborted or outcome.interrupted else "ended"})
        finally:
            if tracker is not None:
                tracker.finish(stream, timeout=0 if aborted else None)  # stopped now: W&B ends on its own
    if idle:
        print(f"nothing to generate or score; `repro pareto {spec.run_dir}` shows the results", file=stream)
    else:
        from repro.aggregate import tables
        from repro.report import print_points

        print_points(tables(store)[0], stream)
    if outcome.interrupted:
        print("interrupted: finished generations are saved; run the same command again to resume", file=stream)
    elif outcome.failed:
        print(f"{outcome.failed} generation(s) failed (recorded with their errors); "
              f"retry them with --retry-failed", file=stream)
    return outcome


def _generate(spec, plan, store, todo, executor_kind, workers, ray_address, stream, resident: Resident,
              events: Listeners, outcome: SweepOutcome, tracker=None) -> None:
    """Generate and score `todo` (and what earlier sessions left unscored); fills `outcome`."""
    items = item_major(plan, todo)
    outcome.skipped = len(plan.jobs) - len(todo)
    print(plan.describe(), file=stream)
    print(f"{len(todo)} generation(s) in {len(items)} item(s) to run, {outcome.skipped} already in {spec.run_dir}",
          file=stream)

    scoring_ = Scoring(spec.metrics, resident.scorer_for(spec.metrics))
    if todo or scoring.unscored(store, spec.metrics):
        # build the metric networks now: missing weights stop us before hours of generation
        resident.keep_scorer(spec.metrics, scoring_.scorer)

    progress = Progress(len(todo), stream, items=len(items))
    driver = _Driver(spec, store, items, progress, events, outcome)
    events.emit("sweep_started", SweepStarted(spec, spec.run_dir, store, plan, [j for it in items for j in it.jobs],
                                              len(items)))
    if todo:
        from repro.executors import make_executor

        def on_step(done: int, total: int) -> None:  # runs in the pipeline's per-step callback
            stop.check()
            progress.step(done, total)

        executor = make_executor(executor_kind, spec, on_step=on_step, workers=workers, address=ray_address,
                                 resident=resident, raise_if_aborted=stop.check,
                                 pause_background=tracker.paused if tracker is not None else None)
        try:
            t0 = time.perf_counter()
            executor.start()
            progress.note(f"ready to generate after {time.perf_counter() - t0:.1f} s of loading")
            # calibrations (MagCache ratios, TeaCache coefficients): computed once, stored, reused
            needed = {j.calibration_key for j in todo if j.calibration_key}
            ratios = {cal.key: ensure_calibration(store, cal, executor, progress.note) for cal in plan.calibrations
                      if cal.key in needed}
            if ratios:  # each point records the branch and ratios it runs with, in its paste-ready call and snippet
                store.put_points(point_records(plan, store))
            with stop.graceful(progress.note):
                executor.run(items, prepare=lambda item: _unit(item, spec, store, ratios), on_start=driver.started,
                             on_generated=driver.generated, on_scored=driver.scored, should_stop=stop.requested)
            outcome.stats = executor.stats()
        finally:
            executor.close()
            progress.close()
    outcome.interrupted = stop.requested() if todo else False
    if not outcome.interrupted:
        score_missing(store, scoring_)  # what an earlier, interrupted session left unscored
    statuses = store.statuses()
    outcome.failed = sum(1 for j in plan.jobs if statuses.get(j.key) == "failed")
    if outcome.stats:
        print(progress_summary(outcome.stats, outcome.generated + len(outcome.failed_keys), executor_kind), file=stream)
    outcome.finished = True
    events.emit("sweep_finished", SweepFinished(outcome, outcome.stats))


def point_records(plan: Plan, store: Store) -> list[dict[str, Any]]:
    return [p.record(store.calibration(p.calibration_key) if p.calibration_key else None) for p in plan.points]


def ensure_calibration(store: Store, cal: Any, executor, note=print) -> dict[str, Any]:
    """The stored calibration for `cal` (any method, per CFG branch), computed and stored first if missing."""
    stored = store.calibration(cal.key)
    if stored is not None:
        return stored
    meta: dict[str, Any] = {"method": cal.method}
    if cal.published is not None:
        values, source = cal.published
        ratios = {"published": list(values)}
        meta["source"] = source
        note(f"{cal.method}: using published values ({source})")
    else:
        note(f"calibrating {cal.method} over {len(cal.items)} uncached generation(s) "
             f"(prompt {cal.prompt!r}, seed {cal.seed}{', ...' if len(cal.items) > 1 else ''})")
        ratios = executor.calibrate(cal.method, list(cal.items), dict(cal.params))
        meta["items"] = [list(i) for i in cal.items]
    used = ",".join(dict.fromkeys(branch_ratios({"ratios": ratios}, b)[0] for b in cal.branches or (cal.cfg_branch,)))
    store.put_calibration(cal.key, ratios, used, {**meta, "prompt": cal.prompt, "seed": cal.seed,
                                                  "steps": len(next(iter(ratios.values()))),
                                                  "branches": sorted(ratios)})
    if len(ratios) > 1:
        note(f"{cal.method} calibration gave {len(ratios)} arrays ({', '.join(sorted(ratios))}: "
             f"CFG runs as separate passes); each entry uses its own cfg_branch ({used})")
    return store.calibration(cal.key)


def _request(job: Job, calibrations: dict[str, dict]):
    from experiments.runner import GenerationRequest  # imports torch: only when there is work to do

    values = tuple(branch_ratios(calibrations[job.calibration_key], job.cfg_branch)[1]) if job.calibration_key \
        else None
    return GenerationRequest(prompt=job.prompt, seed=job.seed, method=job.method, params=job.params,
                             optimization=job.optimization, calibration=values)


def _unit(item: ItemWork, spec: Spec, store: Store, ratios: dict[str, tuple]):
    """What a worker needs for `item`, read from the store now (a retried item sees what its first try stored)."""
    from repro.executors.item import ItemUnit

    statuses = store.statuses()
    requests = {j.key: _request(j, ratios) for j in item.jobs}
    speed = {group: _request(b, ratios) for group, b in item.speed_baselines.items()
             if b.key in requests or statuses.get(b.key) == "ok"}
    references = {}
    q = item.quality_baseline
    reference_metrics = any(n in scoring.REFERENCE for n in spec.metrics.names)
    if reference_metrics and q.key not in requests and statuses.get(q.key) == "ok" \
            and any(j.quality_baseline_key == q.key for j in item.jobs):
        references[q.key] = read_frames(spec.run_dir / store.generation(q.key)["media_dir"])
    targeted = spec.timing.items == "all" or item.index < spec.timing.items
    return ItemUnit(item, requests, speed, spec.timing.repeats if targeted else 1, references)


BASELINES_HELD = 32  # baseline videos held for their cached outputs' differences (items in flight at once)


class _Driver:
    """The executor's callbacks: writes each generation, then its item's scores, into the store, and tells
    progress and the listeners what finished."""

    def __init__(self, spec, store, items: list[ItemWork], progress: Progress, events: Listeners,
                 outcome: SweepOutcome):
        self.spec, self.store, self.progress, self.events, self.outcome = spec, store, progress, events, outcome
        todo = [j for it in items for j in it.jobs]
        self.total = len(todo)
        self.point_left: dict[str, set[str]] = {}  # this session's generations of each point not yet finished
        for j in todo:
            self.point_left.setdefault(j.point_id, set()).add(j.key)
        self.point_keys = {pid: sorted(keys) for pid, keys in self.point_left.items()}
        keep = spec.output.keep_media
        # cached generations whose frames are dropped once scored (output.keep_media): their rows wait for it
        self.drop_media = set() if keep == "all" else {j.key for it in items if it.index >= keep for j in it.jobs
                                                       if j.role == "cached"}
        self.unrecorded: dict[str, Any] = {}  # job key -> its result, until its item is scored
        # baseline key -> its frames, until its item is scored: a cached video may be stored as its difference
        self.baseline_frames: dict[str, Any] = {}
        self.recorded: set[str] = set()
        self.finished = 0

    def started(self, job: Job) -> None:
        self.events.emit("generation_started", GenerationStarted(job))
        self.progress.start(job.key, job.description, self.spec.generation.num_inference_steps)

    def generated(self, job: Job, result: Any) -> None:
        if job.key in self.drop_media and not isinstance(result, BaseException):
            self.unrecorded[job.key] = result  # recorded with its scores: a crash before them regenerates it
            note = _note(result.summary()) + ", media dropped once scored"
        else:
            note = _record(job, result, self.spec, self.store, self.outcome,
                           base=self.baseline_frames.get(job.quality_baseline_key or ""))
        if job.role == "baseline" and not isinstance(result, BaseException):
            self.baseline_frames[job.key] = result.frames
            while len(self.baseline_frames) > BASELINES_HELD:  # items given up on are never scored: oldest out
                del self.baseline_frames[next(iter(self.baseline_frames))]
        self.recorded.add(job.key)
        self.progress.finish(job.key, note)

    def scored(self, item: ItemWork, results: list[ScoreResult]) -> None:
        for job in item.jobs:
            if job.key in self.unrecorded:
                _record(job, self.unrecorded.pop(job.key), self.spec, self.store, self.outcome, media=False)
        # by the item's baselines, not its jobs: an item requeued after a lost worker lists only what was left
        for key in (item.quality_baseline.key, *(b.key for b in item.speed_baselines.values())):
            self.baseline_frames.pop(key, None)
        for result in results:
            scoring.write(self.store, result)
            if result.error:
                self.progress.note(f"scoring {result.key} failed ({result.error}); `repro score` retries it")
        jobs = [j for j in item.jobs if j.key in self.recorded]
        scores = self.store.scores(keys=[j.key for j in jobs])
        rows = {g["key"]: g for g in self.store.generations(keys=[j.key for j in jobs])}
        self.progress.items_done += 1
        for job in jobs:
            self.recorded.discard(job.key)
            self.finished += 1
            self.events.emit("generation_finished", GenerationFinished(job, rows.get(job.key, {}),
                                                                       scores.get(job.key, {}), self.finished,
                                                                       self.total))
        self.events.emit("item_finished", ItemFinished(item.prompt_index, item.prompt, item.seed,
                                                       [j.key for j in jobs], self.progress.items_done,
                                                       self.progress.items))
        for job in jobs:
            left = self.point_left.get(job.point_id)
            if left is not None:
                left.discard(job.key)
                if not left:
                    del self.point_left[job.point_id]
                    self.events.emit("point_finished", PointFinished(job.point_id, self.point_keys[job.point_id]))


def _record(job: Job, result: Any, spec: Spec, store: Store, outcome: SweepOutcome, media: bool = True,
            base: Any = None) -> str:
    """Write one generation (media unless `media` is False, then its row); returns a note for the progress line.
    `base`: the frames of its quality baseline, when at hand (experiments.media may store the difference)."""
    row = {
        "key": job.key, "role": job.role, "point_id": job.point_id, "method": job.method, "params": job.params,
        "optimization": job.optimization, "prompt_index": job.prompt_index, "prompt": job.prompt, "seed": job.seed,
        "quality_baseline_key": job.quality_baseline_key, "speed_baseline_key": job.speed_baseline_key,
        "spec_hash": spec.spec_hash(), "code_version": versions()["code"],
    }
    if isinstance(result, BaseException):
        import traceback

        error = " ".join(f"{type(result).__name__}: {result}".split())  # one line; the cause is in the traceback
        # the traceback as the executor captured it (in the worker), else from the exception
        tb = getattr(result, "formatted", None) or "".join(traceback.format_exception(result))
        store.put_generation({**row, "status": "failed", "error": error[:2000], "traceback": tb[-20_000:]})
        outcome.failed_keys.append(job.key)
        return f"FAILED ({error[:120]})"
    folder = spec.run_dir / "media" / job.key
    paths = {"media_dir": None, "mp4": None}
    try:
        if media:
            paths = write_frames(result.frames, folder, mp4=spec.output.mp4 and result.kind == "video",
                                 base=None if base is None else (folder.with_name(job.quality_baseline_key), base))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # nothing recorded: the next run generates it again
            raise DiskFull(folder, needed_bytes=int(result.frames.nbytes)) from None
        raise
    summary = result.summary()
    frames, height, width = (int(n) for n in result.frames.shape[:3])
    store.put_generation({
        **row, "status": "ok", "error": None, "kind": result.kind,
        **{k: str(Path(paths[k]).relative_to(spec.run_dir)) if paths[k] else None for k in ("media_dir", "mp4")},
        "num_frames": frames, "height": height, "width": width, "summary": summary, "device": result.device,
        **{k: summary[k] for k in ("e2e_s", "denoise_s", "compute_executed", "compute_possible", "peak_memory_bytes")},
    })
    outcome.generated += 1
    return _note(summary)


def _note(summary: dict[str, Any]) -> str:
    return f"{summary['e2e_s']:.2f}s, compute {summary['compute_executed']}/{summary['compute_possible']}"

