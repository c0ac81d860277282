"""From a spec to the work of a sweep: points, baseline jobs, cached jobs, calibrations.

Every generation is identified by a key: a hash of everything that affects its pixels or
its timings (model source, dtypes and the device it runs on, generation settings, timing
repeats and warm-ups, prompt, seed, method, params, optimizations, calibration and CFG
branch, and the library and code versions). Re-running a spec skips keys already in the
store; a spec with more points reuses every key that is still valid (e.g. the baselines when
only thresholds were added). A spec whose model, generation, timing or metric networks
changed is refused for an existing run directory (``repro.sweep``), and only the current
plan's keys are aggregated.

MagCache calibrates once per (model, generation settings): one uncached pass records the
ratios of every CFG branch. Each MagCache entry then runs with the ratios of its own
``cfg_branch`` (:func:`branch_ratios`), and its point records which branch and ratios it used.

The quality reference of a cached point is the unoptimized, uncached generation of the
same (prompt, seed). Its speed reference is the uncached generation with the *same*
optimizations, so a cache on top of torch.compile is compared against compile alone.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from experiments.methods import expand_grid, get_method
from experiments.optimizations.axis import defaults, is_default_optimization, non_default, optimization_label
from experiments.spec import Spec, refuse_ranges, stable_hash

#: Bump when a code change alters generated pixels, so stale generations are not reused.
#: 3: TeaCache and EasyCache decide as their official scripts (issue 29).
#: 4: on Wan 2.2 a cache also runs on the second expert, MagCache once per expert (pipeline adapters, issue 26).
CODE_VERSION = "4"

_SHORT = {"threshold": "t", "retention_ratio": "r", "max_skip_steps": "k", "cache_interval": "n",
          "spatial_attention_block_skip_range": "s", "max_consecutive_cached": "c",
          # cache-dit's own abbreviations (its config strings read F1B0_W8..._R0.12)
          "residual_diff_threshold": "R", "Fn_compute_blocks": "F", "Bn_compute_blocks": "B", "max_warmup_steps": "W",
          "taylorseer_order": "O", "mask_policy": "SCM"}


@dataclass(frozen=True)
class Point:
    point_id: str
    method: str  # registry name, e.g. "mag_cache"
    method_label: str  # the spec's label for this entry (defaults to the method name)
    params: dict[str, Any]
    optimization: dict[str, Any]
    label: str
    key_param: str | None
    key_value: Any
    calibration_key: str | None = None
    cfg_branch: str = "cond"
    steps: int | None = None  # generation.num_inference_steps (MagCache's config needs it)
    fixed: dict[str, Any] = field(default_factory=dict)  # params the model's family adds (families.MethodSupport)

    def record(self, calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        """The point as stored; `calibration` (a stored MagCache calibration) puts this point's own branch and
        ratios into the record and into the paste-ready call and snippet."""
        method = get_method(self.method)
        used = None
        if self.calibration_key and calibration is not None:
            branch, ratios = branch_ratios(calibration, self.cfg_branch)
            used = {"key": self.calibration_key, "branch": branch, "ratios": ratios}
        target = method.calibrated_field  # mag_ratios (MagCache), coefficients (TeaCache), ...
        params = {**self.fixed, **self.params, **({target: used["ratios"]} if used and target else {})}
        return {
            "point_id": self.point_id, "method": self.method_label, "label": self.label, "params": self.params,
            "optimization": self.optimization, "key_param": self.key_param, "key_value": self.key_value,
            "python_call": method.python_call(params, num_inference_steps=self.steps),
            "spec_snippet": method.spec_snippet(params, num_inference_steps=self.steps,
                                                optimization=non_default(self.optimization), label=self.method_label),
            "calibration": used,
        }


@dataclass(frozen=True)
class Job:
    key: str
    role: str  # "baseline" | "cached"
    point_id: str  # "baseline" for baselines (plus an optimization suffix when optimized)
    method: str | None
    params: dict[str, Any]
    optimization: dict[str, Any]
    prompt_index: int
    prompt: str
    seed: int
    quality_baseline_key: str | None = None
    speed_baseline_key: str | None = None
    calibration_key: str | None = None
    cfg_branch: str | None = None  # MagCache: which branch's calibrated ratios this job runs with

    @property
    def description(self) -> str:
        what = "baseline" if self.role == "baseline" else f"{self.point_id}"
        return f"{what} | prompt {self.prompt_index} seed {self.seed}"


@dataclass(frozen=True)
class Calibration:
    """One calibration of a method (MagCache ratios, TeaCache coefficients), stored once and reused."""

    key: str
    prompt: str
    seed: int
    cfg_branch: str
    method: str = "mag_cache"
    items: tuple[tuple[str, int], ...] = ()  # the uncached generations it runs over
    published: tuple[tuple[float, ...], str] | None = None  # (values, source): stored as published, nothing run
    branches: tuple[str, ...] = ()  # the CFG branches the spec's entries use (stored as "used")
    params: tuple[tuple[str, Any], ...] = ()  # the entry's calibration_params (TeaCache's signal, mode, target)


def branch_ratios(calibration: dict[str, Any], branch: str) -> tuple[str, list[float]]:
    """(branch, values) an entry with `cfg_branch` runs with, from a stored calibration.

    The entry's own branch when the calibration recorded it; a pipeline that runs guidance in one batched
    pass (or none), or published values, give a single array, which every entry then uses (and records).
    """
    ratios = calibration["ratios"]
    if branch in ratios:
        return branch, list(ratios[branch])
    if len(ratios) == 1:
        only = next(iter(ratios))
        return only, list(ratios[only])
    from experiments.errors import SpecError

    raise SpecError(f"cfg_branch {branch!r}: the calibration recorded the branches "
                    f"{', '.join(sorted(ratios))}; use one of them")


@dataclass
class Plan:
    points: list[Point]
    baselines: list[Job]
    cached: list[Job]
    calibrations: list[Calibration] = field(default_factory=list)

    @property
    def jobs(self) -> list[Job]:
        return self.baselines + self.cached

    def describe(self) -> str:
        lines = [f"{len(self.baselines)} baseline generations, {len(self.cached)} cached generations, "
                 f"{len(self.points)} points, {len(self.calibrations)} calibration(s)"
                 + (f" ({sum(c.published is not None for c in self.calibrations)} from published values)"
                    if any(c.published is not None for c in self.calibrations) else "")]
        lines += [f"  {name}: {n} points" for name, n in Counter(p.method_label for p in self.points).items()]
        return "\n".join(lines)


@dataclass
class ItemWork:
    """One item (prompt, seed) of a sweep, the unit of execution: its pending jobs in the order one worker runs them.

    Jobs come grouped by optimization configuration (the unoptimized group first, then the
    spec's optimization grid order); each group starts with its speed baseline when that is
    pending, then the group's cached jobs in plan order. ``speed_baselines`` names every
    group's speed baseline (pending or not): a cached job is timed against it, on the same
    worker, right before or after. ``index`` is the item's position in the plan (targeted
    timing repeats go to the first ``timing.items`` items).
    """

    index: int
    prompt_index: int
    prompt: str
    seed: int
    jobs: list[Job]
    groups: dict[str, str]  # job key -> its optimization group (optimization_label)
    speed_baselines: dict[str, Job]  # group -> the uncached job of that group
    quality_baseline: Job  # the unoptimized uncached job every job of the item is scored against


def item_major(plan: Plan, todo: list[Job]) -> list[ItemWork]:
    """The pending jobs as items in plan order, each ready to run back to back on one worker."""
    wanted = {j.key for j in todo}
    baselines = {j.key: j for j in plan.baselines}
    group_order: dict[str, int] = {}
    for b in plan.baselines:
        group_order.setdefault(optimization_label(b.optimization), len(group_order))
    items: dict[tuple[int, int], ItemWork] = {}
    for b in plan.baselines:
        if b.quality_baseline_key is None:
            items.setdefault((b.prompt_index, b.seed), ItemWork(len(items), b.prompt_index, b.prompt, b.seed, [], {},
                                                                {}, b))
    for j in plan.jobs:  # baselines first, then cached: a group's baseline precedes its cached jobs
        item = items.get((j.prompt_index, j.seed))
        if item is None:
            continue
        speed = j if j.role == "baseline" else baselines[j.speed_baseline_key]
        group = optimization_label(speed.optimization)
        item.speed_baselines.setdefault(group, speed)
        if j.key in wanted:
            item.groups[j.key] = group
            item.jobs.append(j)
    for item in items.values():
        item.jobs.sort(key=lambda j: group_order[item.groups[j.key]])  # stable: baseline, then cached
    return [item for item in items.values() if item.jobs]


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Versions that can change generated pixels (read from package metadata: no heavy imports)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"code": CODE_VERSION}
    for pkg in ("torch", "diffusers", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def model_identity(spec: Spec) -> dict[str, Any]:
    """What of the model determines pixels and timings: source, revision, dtypes, and the device it runs on
    (resolved: `auto` on a GPU machine is cuda, on a laptop cpu; a point never mixes devices)."""
    from experiments import pipelines

    m = spec.model
    identity = {"source": m.source, "pipeline_class": m.pipeline_class, "revision": m.revision, "dtype": m.dtype,
                "component_dtypes": dict(sorted(m.component_dtypes.items())), "vae_tiling": m.vae_tiling,
                "device": pipelines.resolve_device(m.device)}
    if m.scheduler:  # only when given: runs without overrides keep their keys
        identity["scheduler"] = dict(sorted(m.scheduler.items()))
    if m.reference:  # retrained reference weights are a different model: their manifest digest says which
        from experiments.reference import weights_digest

        identity["weights"] = weights_digest()
    return identity


def optimization_grid(spec: Spec) -> list[dict[str, Any]]:
    axes = spec.optimizations.axes()
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def build_plan(spec: Spec) -> Plan:
    refuse_ranges(spec)  # a range stands for a grid `repro tune` searches; a plan runs lists
    family = check_support(spec)
    base_identity = {"model": model_identity(spec), "generation": spec.generation.pipeline_kwargs(),
                     "timing": spec.timing.model_dump(mode="json"), "versions": versions()}
    opts = optimization_grid(spec)
    default_opt = {k: v for k, v in defaults().items() if k in spec.optimizations.axes()}  # the quality reference
    items = [(i, p, s) for i, p in enumerate(spec.prompts) for s in spec.seeds]

    def key(**parts: Any) -> str:
        return stable_hash({**base_identity, **parts})

    baselines: dict[tuple, Job] = {}

    def baseline(opt: dict[str, Any], i: int, prompt: str, seed: int) -> Job:
        k = (optimization_label(opt), i, seed)
        if k not in baselines:
            # an optimized baseline is itself scored against the unoptimized one (e.g. compile drift)
            quality = None if opt == default_opt else baseline(default_opt, i, prompt, seed).key
            baselines[k] = Job(
                key=key(prompt=prompt, seed=seed, method=None, params={}, optimization=opt),
                role="baseline", method=None, params={}, optimization=opt,
                point_id="baseline" if is_default_optimization(opt) else f"baseline | {optimization_label(opt)}",
                prompt_index=i, prompt=prompt, seed=seed, quality_baseline_key=quality,
            )
        return baselines[k]

    for i, prompt, seed in items:  # the quality references exist even if only optimized points are run
        baseline(default_opt, i, prompt, seed)

    points: list[Point] = []
    cached: list[Job] = []
    calibrations: dict[str, Calibration] = {}
    for mspec in spec.methods:
        method = get_method(mspec.name)
        calib = None
        cal = calibration_for(spec, mspec, base_identity)
        if cal is not None:
            calib = cal.key
            known = calibrations.get(calib)
            branches = tuple(dict.fromkeys((*(known.branches if known else ()), mspec.cfg_branch)))
            calibrations[calib] = dataclasses.replace(known or cal, branches=branches)
        support = family.methods.get(mspec.name) if family else None
        fixed = dict(support.extra) if support else {}
        key_param = next(iter(mspec.sweep), None) or next((k for k in method.key_params if k in mspec.params), None)
        for opt in opts:
            for params in expand_grid(mspec.params, mspec.sweep):
                label = _label(mspec.sweep or {k: None for k in method.key_params if k in params}, params)
                if not is_default_optimization(opt):
                    label = f"{label} | {optimization_label(opt)}"
                point_id = f"{mspec.display_name}-{stable_hash({'m': mspec.name, 'p': params, 'o': opt, 'c': mspec.cfg_branch})[:8]}"
                points.append(Point(point_id, mspec.name, mspec.display_name, params, opt, label, key_param,
                                    params.get(key_param) if key_param else None, calib, mspec.cfg_branch,
                                    spec.generation.num_inference_steps, fixed))
                for i, prompt, seed in items:
                    quality = baseline(default_opt, i, prompt, seed)
                    speed = baseline(opt, i, prompt, seed)
                    cached.append(Job(
                        key=key(prompt=prompt, seed=seed, method=mspec.name, params=params, optimization=opt,
                                calibration=[calib, mspec.cfg_branch] if calib else None),
                        role="cached", point_id=point_id, method=mspec.name, params=params, optimization=opt,
                        prompt_index=i, prompt=prompt, seed=seed, quality_baseline_key=quality.key,
                        speed_baseline_key=speed.key, calibration_key=calib,
                        cfg_branch=mspec.cfg_branch if calib else None,
                    ))
    return Plan(points, list(baselines.values()), cached, list(calibrations.values()))


def calibration_for(spec: Spec, mspec: Any, base_identity: dict[str, Any]) -> Calibration | None:
    """The calibration a method entry needs: None when the spec gives the calibrated field itself.

    Published values (TeaCache's coefficients for a known hub id) are used unless the entry says
    ``calibrate: always``; otherwise the method calibrates over the first prompt (MagCache) or
    every prompt (``calibrate_over="all"``, TeaCache), with the first seed.
    """
    from experiments.errors import SpecError

    method = get_method(mspec.name)
    target = method.calibrated_field
    if target is None or target in mspec.params:
        return None
    swept = [k for k in method.calibration_params if k in mspec.sweep]
    if swept:
        raise SpecError(f"methods ({mspec.display_name}): {swept[0]} changes what {method.name} calibrates; put it "
                        f"in params (one value per entry; give two entries distinct labels to compare values)")
    params = {k: mspec.params[k] for k in method.calibration_params if k in mspec.params}
    published = method.published(spec.model.id, params) if method.published and mspec.calibrate != "always" else None
    if published is None and mspec.calibrate == "never":
        raise SpecError(f"methods ({mspec.display_name}): {method.name} has no published {target} for model "
                        f"{spec.model.source}; give params.{target} or set calibrate: auto")
    prompts = spec.prompts if method.calibrate_over == "all" else spec.prompts[:1]
    items = tuple((p, spec.seeds[0]) for p in prompts)
    parts: dict[str, Any] = {"calibration": method.name, **base_identity}
    if method.calibrate_over == "all":
        parts["items"] = items
    if params:  # only when given: calibrations stored before these params existed keep their keys
        parts["params"] = params
    if published is not None:
        parts["published"] = published[1]
    key = stable_hash(parts)
    return Calibration(key, items[0][0], items[0][1], mspec.cfg_branch, method.name, items, published,
                       params=tuple(sorted(params.items())))


def check_support(spec: Spec) -> Any:
    """Refuse a method the model's family cannot run, or an optimization this machine cannot, before any model loads;
    returns the model's family (None: no known family)."""
    from experiments.errors import SpecError
    from experiments.pipelines import family_of, resolve_device

    if not all(is_default_optimization(o) for o in optimization_grid(spec)):
        from experiments.optimizations import check_available

        check_available(spec.optimizations, resolve_device(spec.model.device),
                        dtype=spec.model.component_dtypes.get("transformer", spec.model.dtype))
    family = family_of(spec.model)
    for i, m in enumerate(spec.methods if family is not None else ()):
        support = family.methods.get(m.name)
        if support is not None and support.status == "unsupported":
            raise SpecError(f"methods[{i}]: {m.name} does not support the {family.name} family: {support.reason}")
        if support is not None and not support.applicable:
            raise SpecError(f"methods[{i}]: {m.name} does not apply to the {family.name} family: {support.reason}")
    return family


def _label(axes: dict[str, Any], params: dict[str, Any]) -> str:
    shown = [k for k in axes if k in params] or list(params)[:1]
    return " ".join(f"{_SHORT.get(k, k)}={params[k]}" for k in shown) or "default"
