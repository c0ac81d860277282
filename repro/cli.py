"""The `repro` command line. Heavy imports (torch, diffusers, metrics) stay inside commands,
so `repro --help` answers at once.

Exit codes: 0 success; 1 some generations failed (recorded, the rest ran), or nothing to
show (no results yet, no point meets the gates); 2 bad input (spec, flag, path, damaged store,
unreadable images) with one clear message and nothing written; 3 missing model or metric
weights (the message says how to fetch them); 4 the path is not a run directory; 5 the run
directory is being written by another process; 6 disk full (the message names the disk and the
space; finished work is kept, re-run to resume); 130 interrupted (Ctrl-C or SIGTERM, at any
stage; re-run to resume).
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import click

#: Every message is one line shorter than this (values quoted in it are cut first, this is the backstop).
MAX_MESSAGE = 990


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code an error the user can fix carries (its type's ``exit_code``); None: not such an error."""
    from experiments.errors import UserError
    from metrics.errors import InputError, WeightsMissing

    return exc.exit_code if isinstance(exc, (UserError, InputError, WeightsMissing)) else None


def _fail(exc: BaseException) -> None:
    line = " ".join(str(exc).split())
    click.echo(f"error: {line[:MAX_MESSAGE - 10] + ' [...]' if len(line) > MAX_MESSAGE else line}", err=True)
    sys.exit(exit_code_for(exc))


def _friendly_errors(fn):
    """Turn the errors a user can fix into one line on stderr and the exit code their type carries."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import errno
        import sqlite3

        from experiments.errors import EXIT_INTERRUPTED, DiskFull, SpecError
        from repro import stop

        try:
            with stop.handled():  # SIGTERM interrupts like Ctrl-C: same clean stop, same exit code
                try:
                    return fn(*args, **kwargs)
                except KeyboardInterrupt:  # still under our handler: a second signal cannot cut this short
                    stop.exiting()
                    click.echo("interrupted: finished work is saved; run the same command again to resume", err=True)
                    sys.exit(EXIT_INTERRUPTED)
        except OSError as exc:
            if exit_code_for(exc) is not None:  # e.g. RunDirMissing is a FileNotFoundError, DiskFull an OSError
                _fail(exc)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                _fail(DiskFull(exc.filename or Path.cwd()))
            if exc.errno in (errno.EROFS, errno.EACCES) and exc.filename:
                _fail(SpecError(f"cannot write {exc.filename} ({exc.strerror}): the run directory or output is "
                                f"read-only; pareto, best, export --out and figures --out read it as it is, write "
                                f"elsewhere with --out DIR"))
            raise
        except sqlite3.DatabaseError as exc:  # a store damaged after it was opened
            _fail(SpecError(f"the results store cannot be read ({exc}); it was left untouched: restore it from a "
                            f"backup or move it away and re-run"))
        except Exception as exc:
            if exit_code_for(exc) is None:
                raise
            _fail(exc)
    return wrapper


def _require_results(points, run_dir) -> None:
    """NoResults (exit 1) when a run has no finished generation to show yet."""
    from experiments.errors import NoResults

    if len(points) == 0 or "method" not in points or not (points["status"] != "failed").any():
        raise NoResults(f"no results yet in {run_dir}: no generation has finished; run or resume `repro sweep` first")


def _load(spec_path: str, overrides: tuple[str, ...], out: str | None = None, plan_only: bool = False):
    from experiments.spec import load_spec

    extra = (f"output.dir={out}",) if out else ()
    return load_spec(spec_path, overrides=(*overrides, *extra), plan_only=plan_only)


def _run_spec(run_dir: str):
    """The resolved spec a run directory was made with."""
    from repro.store import Store

    with Store.open_existing(run_dir, read_only=True) as store:
        spec = store.recorded_spec()
    return spec.model_copy(update={"output": spec.output.model_copy(update={"dir": str(run_dir)})})


set_option = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                          help="Override a spec field, e.g. --set generation.num_inference_steps=20 (repeatable).")
wandb_mode_option = click.option("--wandb-mode", type=click.Choice(["auto", "online", "offline", "disabled"]),
                                 help="Override the spec's wandb.mode (auto: online with credentials, else offline).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="diffusion-cache-repro")
def main() -> None:
    """Reproducible speed vs quality sweeps of training-free diffusion caches (diffusers.hooks)."""
    from metrics.device import prefer_short_openmp_spin

    prefer_short_openmp_spin()  # before anything loads torch: see its docstring


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/<spec name>).")
@set_option
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), help="Ray: number of workers (default: one per GPU, or 1).")
@click.option("--ray-address", help="Ray: join this cluster instead of starting Ray locally.")
@wandb_mode_option
@click.option("--only", multiple=True, metavar="KEY=VALUE", help="Restrict to method=NAME, point=ID, prompt=I, seed=S.")
@click.option("--retry-failed", is_flag=True, help="Run only the generations that failed before.")
@click.option("--dry-run", is_flag=True, help="Print the plan and what would run; load nothing.")
@_friendly_errors
def sweep(spec, out, overrides, executor, workers, ray_address, wandb_mode, only, retry_failed, dry_run):
    """Run or resume the sweep described by SPEC."""
    from repro.sweep import run_sweep

    loaded = _load(spec, overrides, out)
    outcome = run_sweep(loaded, executor=executor, wandb_mode=wandb_mode, only=only, retry_failed=retry_failed,
                        dry_run=dry_run, workers=workers, ray_address=ray_address)
    sys.exit(outcome.exit_code)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--follow", is_flag=True, help="Keep logging while the sweep writing RUN_DIR runs, then finish.")
@wandb_mode_option
@_friendly_errors
def track(run_dir, follow, wandb_mode):
    """Log to W&B what RUN_DIR's store holds and W&B lacks (a sweep runs this itself, in the background)."""
    from repro.tracking import lowest_priority, track as project

    if follow:
        import signal

        lowest_priority()  # it follows a sweep: never beside a timed call
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # sent with SIGCONT if the sweep dies while it is paused
    if not project(run_dir, mode=wandb_mode, follow=follow):
        sys.exit(1)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@set_option
@_friendly_errors
def validate(spec, overrides):
    """Check SPEC and print the plan without loading any model."""
    from repro.plan import build_plan
    from repro.sweep import preflight

    loaded = _load(spec, overrides, plan_only=True)
    preflight(loaded.run_dir)  # the run directory rules `repro sweep` applies
    ranged = [(i, m) for i, m in enumerate(loaded.methods) if m.ranges()]
    plan = None if ranged else build_plan(loaded)
    click.echo(f"{spec}: valid ({loaded.name}, model {loaded.model.source}, spec hash {loaded.spec_hash()})")
    if ranged:  # a range is a grid `repro tune` searches; no sweep runs it, so there is no plan to show
        from experiments.methods import get_method

        for i, m in ranged:
            method = get_method(m.name)
            n = math.prod(len(method.axis_values(k, v)) for k, v in m.sweep.items())
            axes = ", ".join(f"{k} {v.describe()}" for k, v in m.ranges().items())
            click.echo(f"methods[{i}] ({m.display_name}): {axes}: ranges, for `repro tune {spec} --max METRIC=VALUE` "
                       f"(a grid at that resolution: {n} point(s) x {len(loaded.prompts) * len(loaded.seeds)} item(s))")
        click.echo("`repro sweep` runs lists of values and refuses ranges; see docs/tune.md")
        return
    ps = loaded.prompt_set
    if ps and ps.get("fetched") is False:
        click.echo(f"prompts: preset {ps['preset']!r} is not fetched yet; the plan below counts "
                   f"{len(loaded.prompts)} stand-in prompt(s). Run `repro fetch-weights {spec}` to get it.")
    elif ps:
        click.echo(f"prompts: {len(loaded.prompts)} of the {ps['n_total']} prompts of {ps['preset']} "
                   f"({ps['repo']} @ {str(ps['revision'])[:12]}, sha256 {ps['sha256'][:12]})"
                   + ("" if ps["reportable"] else f"; limit={ps['limit']}: NOT REPORTABLE"))
    click.echo(plan.describe())
    for p in plan.points:
        click.echo(f"  {p.point_id:32s} {p.method_label:20s} {p.label}")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False))
@set_option
@_friendly_errors
def calibrate(spec, out, overrides):
    """Compute and store the calibrations SPEC needs (MagCache ratios, TeaCache coefficients); a sweep reuses them."""
    from repro.executors.local import LocalExecutor
    from repro.lock import RunLock
    from repro.plan import build_plan
    from repro.store import Store
    from repro.sweep import ensure_calibration, preflight

    loaded = _load(spec, overrides, out)
    plan = build_plan(loaded)
    preflight(loaded.run_dir)
    if not plan.calibrations:
        click.echo("no method entry in this spec needs calibration")
        return
    with RunLock(loaded.run_dir), Store(loaded.run_dir) as store:
        executor = LocalExecutor(loaded)
        for cal in plan.calibrations:
            ratios = ensure_calibration(store, cal, executor, note=click.echo)
            for branch, values in ratios["ratios"].items():
                mark = " (used)" if branch in ratios["used"].split(",") else ""
                click.echo(f"{cal.method} {cal.key} {branch}{mark}: {[float(f'{v:.6g}') for v in values]}")


#: Spec fields that name the network a score was made with (`repro score` changes them only with --force), and
#: the metric whose scores that network made.
SCORING_NETWORKS = {"metrics.lpips_net": "lpips", "metrics.clip_model": "clip", "metrics.clip_pretrained": "clip"}


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Rescore everything, not only what is missing.")
@set_option
@_friendly_errors
def score(run_dir, force, overrides):
    """(Re)score the generations of RUN_DIR, e.g. after adding CLIP with --set metrics.names=[...]."""
    from experiments.errors import SpecError
    from experiments.feasibility import check_device
    from experiments.spec import apply_override, fixed_changes, shorten, validate_spec_data
    from repro.lock import RunLock
    from repro.run_dir import missing_media
    from repro.scoring import Scoring, score_missing
    from repro.store import Store

    made_with = _run_spec(run_dir)
    for item in overrides:  # the stored spec must keep describing what was generated
        if not item.partition("=")[0].strip().startswith("metrics."):
            raise SpecError(f"repro score --set {shorten(item)}: scoring changes only metrics.* fields; the "
                            f"outputs of {run_dir} were made as its spec says; to generate with other settings, "
                            f"run `repro sweep` with another --out DIR")
    raw = made_with.model_dump(mode="json")
    for item in overrides:
        apply_override(raw, item)
    spec = validate_spec_data(raw, where=f"{run_dir} with --set")
    networks = [c for c in fixed_changes(made_with.model_dump(mode="json"), spec)
                if c.startswith(tuple(SCORING_NETWORKS))]
    if networks and not force:  # scores of two networks would be mixed in one run
        raise SpecError(f"repro score --set: {'; '.join(networks)}: the scores in {run_dir} were made with the old "
                        f"network; add --force to rescore every generation with the new one")
    check_device(spec.metrics.device, "metrics.device", where=f"{run_dir} with --set")
    with RunLock(Path(run_dir)), Store(run_dir) as store:
        # first the new settings, without the replaced network's scores: an interrupted rescore leaves gaps
        # that the next `repro score` fills, never scores of two networks side by side
        store.replace_scoring(spec.model_dump(mode="json"),
                              drop={m for field, m in SCORING_NETWORKS.items() if any(c.startswith(field)
                                                                                      for c in networks)})
        n, failed = score_missing(store, Scoring(spec.metrics), force=force)
        gone = missing_media(store)
        dropped = sum(1 for g in store.generation_states() if g["status"] == "ok" and not g["media_dir"])
    click.echo(f"scored {n} generation(s) in {run_dir}")
    if gone:
        click.echo(f"{len(gone)} generation(s) have lost their media (e.g. {gone[0]['media_dir']}) and were not "
                   f"scored; `repro sweep` on the same spec generates them again", err=True)
    if dropped:
        click.echo(f"{dropped} generation(s) kept no media (output.keep_media) and keep the scores made when they "
                   f"were generated", err=True)
    if failed:
        click.echo(f"{len(failed)} generation(s) could not be scored (e.g. {failed[0].key}: {failed[0].error}); "
                   f"their errors are stored", err=True)
        sys.exit(1)


@main.command("score-folders")
@click.argument("dir_a", type=click.Path(exists=True, file_okay=False))
@click.argument("dir_b", type=click.Path(exists=True, file_okay=False))
@click.option("--metrics", "names", default="lpips,psnr,ssim", show_default=True)
@click.option("--allow-random-weights", is_flag=True, help="Tests/smoke runs only; scores are labelled so.")
@click.option("--common-only", is_flag=True, help="Score the files both folders hold (others are named and skipped).")
@_friendly_errors
def score_folders(dir_a, dir_b, names, allow_random_weights, common_only):
    """Score two folders of images against each other (files paired by name)."""
    import metrics
    from experiments.errors import SpecError

    wanted = tuple(n.strip() for n in names.split(",") if n.strip())
    unknown = [n for n in wanted if n not in metrics.METRICS]
    if unknown or not wanted:
        raise SpecError(f"--metrics {names[:80]!r}: unknown metric(s) {unknown[:5]}; allowed: {', '.join(metrics.METRICS)}")
    result = metrics.score_folders(dir_a, dir_b, names=wanted, allow_random_weights=allow_random_weights,
                                   allow_unmatched=common_only)
    for note in result["notes"]:
        click.echo(f"warning: {note}", err=True)
    for row in result["items"]:
        click.echo("  ".join(f"{k}={v}" for k, v in row.items()))
    click.echo("aggregate: " + "  ".join(f"{k}={v}" for k, v in result["aggregate"].items()))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--metric", default="all", show_default=True,
              help="A quality axis of the fronts (lpips, psnr, ssim, clip_delta: metrics.registry.FRONT), or all.")
@_friendly_errors
def pareto(run_dir, metric):
    """Print the Pareto front(s) of speedup vs quality."""
    from experiments.errors import SpecError
    from metrics.registry import FRONT
    from repro.aggregate import tables
    from repro.report import format_points
    from repro.store import Store

    points, _ = tables(Store.open_existing(run_dir, read_only=True))
    _require_results(points, run_dir)
    cached = points[points["method"] != "baseline"]
    if metric != "all" and metric not in FRONT:
        raise SpecError(f"--metric {metric!r}: allowed are {', '.join(FRONT)} or all")
    for m in (FRONT if metric == "all" else [metric]):
        if m in cached and cached[m].notna().any():  # a metric the run did not request has no column
            click.echo(f"\nPareto front: speedup vs {m}")
            click.echo(format_points(points, only_front=m))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--max", "maxima", multiple=True, metavar="METRIC=VALUE", help="Upper bound, e.g. lpips=0.1.")
@click.option("--min", "minima", multiple=True, metavar="METRIC=VALUE", help="Lower bound, e.g. psnr=30.")
@click.option("--confident", is_flag=True, help="A gate must hold for the 95% bound over items (as `repro tune` "
              "checks), not only for the mean.")
@_friendly_errors
def best(run_dir, maxima, minima, confident):
    """Print the fastest point meeting every quality gate, as a spec snippet and a Python call."""
    from experiments.errors import NoResults
    from repro.aggregate import tables
    from repro.pareto import check_gates_scored, parse_gates, ranked_points
    from repro.report import format_best
    from repro.significance import runner_up_note
    from repro.store import Store

    gates = parse_gates(maxima, minima)
    store = Store.open_existing(run_dir, read_only=True)
    points, items = tables(store)
    _require_results(points, run_dir)
    check_gates_scored(points, gates, points.attrs.get("metric_labels", {}))
    ranked = ranked_points(points.to_dict("records"), gates, confident)
    if not ranked:
        raise NoResults("no point meets every gate")
    choice = ranked[0]
    click.echo(format_best(choice, gates))  # its own call and snippet: its calibration, branch and steps
    if len(ranked) > 1:
        click.echo(runner_up_note(items, choice, ranked[1]))


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--max", "maxima", multiple=True, metavar="METRIC=VALUE", help="Upper bound, e.g. lpips=0.1.")
@click.option("--min", "minima", multiple=True, metavar="METRIC=VALUE", help="Lower bound, e.g. psnr=30.")
@click.option("--method", "methods", multiple=True, metavar="NAME",
              help="Tune only this method entry (its name or label; repeatable). Default: every entry.")
@click.option("--budget", type=click.IntRange(min=1), help="Most settings the search evaluates per method "
              "(default: bisection runs to the end; optuna stops at 30).")
@click.option("--search-items", type=click.IntRange(min=1), default=2, show_default=True,
              help="Items (prompt x seed) the search runs on before the choice is confirmed on every item.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/<spec name>).")
@set_option
@wandb_mode_option
@_friendly_errors
def tune(spec, maxima, minima, methods, budget, search_items, out, overrides, wandb_mode):
    """The fastest setting of each method in SPEC whose quality meets every gate (at 95% confidence),
    searched over the ranges of its sweep with a fraction of a grid's generations (docs/tune.md)."""
    from experiments.errors import NoResults
    from repro.pareto import parse_gates
    from repro.tune import format_result, search_subset, tune as run_tune

    gates = parse_gates(maxima, minima)
    loaded = _load(spec, overrides, out)
    results = run_tune(loaded, gates, methods=methods, budget=budget, search_items=search_items,
                       wandb_mode=wandb_mode)
    n_items = len(loaded.prompts) * len(loaded.seeds)
    n_search = len(search_subset(loaded, search_items))
    for r in results:
        click.echo(format_result(r, gates, n_search, n_items) + "\n")
    click.echo(f"every setting tried is a point of {loaded.run_dir}: `repro figures {loaded.run_dir}` shows them "
               f"(the chosen ones ringed), `repro best {loaded.run_dir} --confident ...` checks the same gates")
    if any(r.chosen is None for r in results):
        raise NoResults("no setting of " + ", ".join(r.space.label for r in results if r.chosen is None)
                        + " meets every gate")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Default RUN_DIR/figures.")
@click.option("--format", "formats", default="png,pdf,svg", show_default=True)
@_friendly_errors
def figures(run_dir, out, formats):
    """Write Pareto plots, tables, grids, heat maps and an index page for RUN_DIR."""
    from experiments.errors import SpecError
    from repro.aggregate import tables
    from repro.store import Store

    fmts = tuple(f.strip() for f in formats.split(",") if f.strip())
    if not fmts or any(f not in ("png", "pdf", "svg") for f in fmts):
        raise SpecError(f"--format {formats!r}: allowed formats are png, pdf, svg (comma-separated)")
    import paper_figures
    from paper_figures.frame_curves import frame_table

    store = Store.open_existing(run_dir, read_only=True)
    points, items = tables(store)
    _require_results(points, run_dir)
    meta = store.meta()
    points.attrs["provenance"] = {"spec_name": (meta.get("spec") or {}).get("name"), "spec_hash": meta.get("spec_hash"),
                                  "versions": meta.get("versions"), "environment": meta.get("environment")}
    out_dir = Path(out) if out else Path(run_dir) / "figures"
    frames = frame_table(items, store.scores(keys=list(items["key"])) if len(items) else {})
    written = paper_figures.make_all(points, items, store.calibrations(), out_dir, formats=fmts, frames=frames)
    click.echo(f"wrote {len(written)} figures and tables to {out_dir} (browse {out_dir / 'index.html'} "
               f"or {out_dir / 'index.md'})")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "jsonl"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="Default RUN_DIR/export.")
@_friendly_errors
def export(run_dir, fmt, out):
    """Write tidy tables: one row per item and one per point."""
    from repro.export import export_tables

    for path in export_tables(run_dir, fmt, out):
        click.echo(str(path))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--paper", metavar="NAME|FILE", help="A published table (`repro papers`) or a table YAML file.")
@click.option("--points", nargs=2, metavar="A B", help="Two point ids (or labels) of this run, tested against each other.")
@click.option("--parity", is_flag=True, help="Step-by-step skip decisions of diffusers' First Block Cache vs "
              "cache-dit's DBCache F1B0 at the same threshold, per item and CFG branch, and why they differ.")
@click.option("--match", "matches", multiple=True, metavar="LABEL=POINT",
              help="Pair a published row with one of our points by hand (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "latex"]), default="text", show_default=True)
@click.option("--out", type=click.Path(file_okay=False),
              help="--paper: also write NAME.md, NAME.tex and Pareto plots with the published points here "
                   "(default RUN_DIR/figures/compare).")
@_friendly_errors
def compare(run_dir, paper, points, parity, matches, fmt, out):
    """Compare RUN_DIR with a published table (--paper), two of its points with each other (--points), or two
    libraries' implementations of one algorithm (--parity)."""
    from experiments.errors import SpecError

    if bool(paper) + bool(points) + parity != 1:
        raise SpecError("repro compare: give exactly one of --paper NAME, --points A B or --parity")
    if parity:
        from repro.parity import format_parity, parity as run_parity

        if fmt == "latex":
            raise SpecError("repro compare --parity: --format text or markdown")
        click.echo(format_parity(run_parity(run_dir), markdown=fmt == "markdown"))
        return
    if points:
        from repro.aggregate import tables
        from repro.significance import compare_points, find_point, format_point_comparison
        from repro.store import Store

        table, items = tables(Store.open_existing(run_dir, read_only=True))
        a, b = (find_point(table, p) for p in points)
        if a == b:
            raise SpecError(f"--points: {points[0]!r} and {points[1]!r} are the same point; give two different points")
        click.echo(format_point_comparison(compare_points(items, a, b), table, a, b, fmt))
        return
    from repro.papers.compare import compare_run_dir, format_latex, format_markdown, format_text, write_comparison

    cmp, points_table, items_table = compare_run_dir(run_dir, paper, _parse_matches(matches))
    click.echo({"text": format_text, "markdown": format_markdown, "latex": format_latex}[fmt](cmp))
    out_dir = Path(out) if out else Path(run_dir) / "figures" / "compare"
    for path in write_comparison(cmp, points_table, items_table, out_dir):
        click.echo(f"wrote {path}", err=True)


def _parse_matches(items: tuple[str, ...]) -> dict[str, str]:
    from experiments.errors import SpecError

    out = {}
    for item in items:
        label, sep, point = item.partition("=")
        if not sep or not label.strip() or not point.strip():
            raise SpecError(f"--match {item!r}: expected PUBLISHED_LABEL=POINT_ID, e.g. --match MagCache-slow=mag_cache-t0.12")
        out[label.strip()] = point.strip()
    return out


@main.command()
@click.argument("artifact")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory to create (default runs/<spec name>).")
@_friendly_errors
def pull(artifact, out):
    """Rebuild a run directory from a sweep's W&B artifact (entity/project/name:version) or a downloaded
    artifact folder, so figures, best, pareto and compare work on it."""
    from repro.artifacts import pull as pull_artifact

    target = pull_artifact(artifact, out)
    click.echo(f"rebuilt {target} from {artifact}; try `repro figures {target}` or `repro best {target} --max lpips=0.1`")


@main.command("fetch-weights")
@click.argument("spec", type=click.Path(dir_okay=False))
@set_option
@_friendly_errors
def fetch_weights(spec, overrides):
    """Download everything SPEC needs (model, LPIPS backbone, CLIP) into the standard caches."""
    import metrics
    from experiments.pipelines import fetch_model

    loaded = _load(spec, overrides, plan_only=True)
    if loaded.prompt_set:
        from experiments import prompt_sets

        ps = loaded.prompt_set
        folder = prompt_sets.fetch(ps["preset"], ps.get("requested_revision"))
        click.echo(f"prompts: {ps['preset']} in {folder}")
    click.echo(f"model: {fetch_model(loaded.model)}")
    from metrics import registry

    m = loaded.metrics
    for line in metrics.fetch_weights(lpips_net=m.lpips_net, clip_model=m.clip_model_id,
                                      clip_pretrained=m.clip_pretrained,
                                      metrics=tuple(n for n in m.names if registry.METRICS[n].needs_weights)):
        click.echo(f"metrics: {line}")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--point", "points", multiple=True, metavar="ID",
              help="Profile only this point (repeatable; ids as `repro validate` prints them, or baseline).")
@click.option("--steps", type=click.IntRange(min=1), help="Denoising steps (default: the spec's; 2 shows per-step costs).")
@click.option("--function", metavar="NAME", help="Also count calls and total ms of this Python function, "
              "e.g. get_parameter_dtype.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/<spec name>).")
@set_option
@_friendly_errors
def profile(spec, points, steps, function, out, overrides):
    """One generation per point under torch.profiler: per-step host time, syncs, hot frames, hook cost."""
    from repro.profile import profile_spec

    extra = (f"generation.num_inference_steps={steps}",) if steps else ()
    rows = profile_spec(_load(spec, (*overrides, *extra), out), points=points, function=function, echo=click.echo)
    sys.exit(1 if any("error" in r for r in rows) else 0)


@main.command()
@click.option("--name", "name", help="Show one table in full (rows, settings, protocol, source).")
@_friendly_errors
def papers(name):
    """List the published tables `repro compare --paper NAME` can compare a run with."""
    from repro.papers import all_papers, get_paper
    from repro.papers.compare import describe_table

    if name:
        click.echo(describe_table(get_paper(name)))
        return
    for t in all_papers().values():
        click.echo(f"{t.name:28s} {len(t.rows):3d} rows  {t.title}")
        click.echo(f"{'':28s}           {t.citation}")
    click.echo("\nrepro papers --name NAME shows one table; repro compare RUN_DIR --paper NAME compares a run with it")


@main.command()
@click.option("--family", help="Only this family.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import MODULE (your own code) so its registered methods are listed and probed. Repeatable.")
@click.option("--probe", is_flag=True, help="Run every method on each family's tiny twin through the engine "
              "and compare with the recorded matrix (minutes; exit 1 on a disagreement).")
@_friendly_errors
def methods(family, plugins, probe):
    """List the cache methods (with where each comes from) and the method x family matrix."""
    import textwrap

    from experiments.families import LIBRARY_METHODS, METHODS, all_families, get_family
    from experiments.methods import all_methods, load_plugins
    from experiments.methods.plugins import entry_points

    load_plugins(plugins, where="--plugin")
    fams = [get_family(family)] if family else list(all_families().values())
    registered = all_methods()
    click.echo("method".ljust(30) + "origin".ljust(34) + "config")
    for name, m in registered.items():
        click.echo(name.ljust(30) + m.origin.ljust(34) + (m.missing() or _config_label(m)))
        if m.doc:  # what it is and how it differs from the original code (docs/fidelity.md has the sources)
            click.echo(textwrap.fill(m.doc, width=110, initial_indent="    ", subsequent_indent="    "))
    for ep in entry_points():
        if ep["name"] not in registered:
            click.echo(ep["name"].ljust(30) + f"entry point {ep['dist']}".ljust(34)
                       + f"{ep['value']} (imported when a spec names it)")
    reasons, counts = [], []
    for title, columns in (("diffusers and project methods", METHODS), ("cache-dit methods", LIBRARY_METHODS)):
        if not columns:
            continue
        width = max(len(m) for m in columns) + 2
        click.echo("\n" + "family".ljust(16) + "".join(m.ljust(width) for m in columns))
        supported = not_applicable = 0
        for fam in fams:
            cells = []
            for m in columns:
                support = fam.methods.get(m)
                status = support.status if support else "untested"
                supported += status == "supported"
                not_applicable += support is not None and not support.applicable
                cells.append(status.ljust(width))
                if support and support.status != "supported":
                    reasons.append(f"  {fam.name} / {m}: {support.reason}")
            click.echo(fam.name.ljust(16) + "".join(cells))
        # a method defined for another model (n/a) is not a cell it could support here
        counts.append(f"{supported} of {len(fams) * len(columns) - not_applicable} {title}"
                      + (f" ({not_applicable} n/a: defined for another model)" if not_applicable else ""))
    click.echo("\nsupported cells: " + "; ".join(counts))
    if reasons:
        click.echo("\nreasons:\n" + "\n".join(reasons))
    if probe:
        from experiments.families.matrix import report

        click.echo("\nprobe (tiny twins, through the engine):")
        stated = (*METHODS, *LIBRARY_METHODS)
        extra = [n for n, m in all_methods().items() if n not in stated]
        mismatches = report([f.name for f in fams], [*stated, *extra], tuple(plugins), echo=click.echo)
        if mismatches:
            click.echo(f"{mismatches} probe result(s) disagree with the recorded matrix", err=True)
            sys.exit(1)


def _config_label(method) -> str:
    """The config class, with the version of the library it comes from when that is not diffusers or ours."""
    if method.requires is None:
        return method.config_class_name
    from importlib.metadata import PackageNotFoundError, version

    dist = method.requires.replace("_", "-")
    try:
        return f"{method.config_class_name} ({dist} {version(dist)})"
    except PackageNotFoundError:
        return method.config_class_name


if __name__ == "__main__":  # pragma: no cover
    main()
