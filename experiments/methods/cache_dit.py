"""cache-dit's caches (vipshop/cache-dit, PyPI ``cache-dit``) as methods of the registry.

cache-dit's Dual Block Cache (DBCache) runs the first ``Fn_compute_blocks`` blocks of every
transformer call, compares their residual with the one of the last computed step of the same CFG
branch (relative L1: ``mean|R_t - R_prev| / mean|R_prev|``) and, below ``residual_diff_threshold``,
skips the middle blocks, adds their cached residual and runs the last ``Bn_compute_blocks``; the
first ``max_warmup_steps`` steps always compute (``cache_dit/caching/cache_contexts/cache_manager.py``
``can_cache``, ``similarity``; ``cache_blocks/pattern_base.py`` ``forward``). The registered methods:

==================== ===========================================================================
dbcache              DBCache (``DBCacheConfig``)
dbprune              Dynamic Block Prune (``DBPruneConfig``): the same test per block, pruning blocks
dbcache_taylorseer   DBCache whose reused residual is forecast by TaylorSeer (``TaylorSeerCalibratorConfig``)
dbcache_foca         DBCache with the FoCa calibrator (``FoCaCalibratorConfig``)
dbcache_scm          DBCache under a step computation mask (``steps_computation_mask`` from
                     ``cache_dit.steps_mask(compute_bins, cache_bins, total_steps, mask_policy)``)
==================== ===========================================================================

Each method's settings class is built from cache-dit's own config classes (every field, its
type and default, minus the ones the method fixes: ``cache_type``, ``calibrator_type``, the
free-form ``calibrator_kwargs``), so a spec is checked field by field against cache-dit's
classes with the project's strict types; building a setting then constructs cache-dit's config
objects and its ``CachedContext`` / ``PrunedContext``, whose own checks run. The step count is
filled from the spec.

cache-dit wraps a whole pipeline (``cache_dit.enable_cache(pipe, ...)`` replaces
``type(pipe).__call__`` and each transformer's ``forward``, both restored by
``cache_dit.disable_cache(pipe)``), so these methods act on the pipeline. Compute is counted by
the project's own counters on the attention and feed-forward sublayers (cache-dit calls the same
block modules); cache-dit's statistics (``cache_dit.summary``) are kept beside them, and a
forward hook reads each call's decision from cache-dit's context right after it is made and reports
it in the project's one decision record (``experiments.instrumentation.Decision``), as every method does.

cache-dit is an optional dependency: ``pip install 'diffusion-cache-repro[cache-dit]'``. Importing
this module does not import cache-dit (a spec that names none of these methods never loads it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

from experiments.methods.registry import CacheMethod, register_method

INSTALL = "pip install 'diffusion-cache-repro[cache-dit]'"
#: cache-dit's fields a method fixes (the cache type and calibrator type are the method) or that cannot
#: come from a spec (a free-form dict of calibrator arguments)
FIXED = ("cache_type", "calibrator_type", "calibrator_kwargs")
#: the step computation mask belongs to dbcache_scm, which builds it with cache_dit.steps_mask
SCM_FIELDS = ("steps_computation_mask", "steps_computation_policy")
#: string fields of cache-dit's configs and the values its code accepts
CHOICES = {
    "steps_computation_policy": ("dynamic", "static"),  # cache_manager.py get_steps_computation_policy
    "force_refresh_step_policy": ("once", "repeat"),  # cache_config.py
    "calibrator_cache_type": ("residual", "hidden_states"),  # cache_config.py CalibratorConfig
    "mask_policy": ("slow", "medium", "fast", "ultra"),  # cache_interface.py steps_mask
}

# settings class -> (method, cache config class, calibrator config class or None, SCM fields?)
KINDS: dict[str, tuple[str, str, str | None, bool]] = {
    "DBCache": ("dbcache", "DBCacheConfig", None, False),
    "DBPrune": ("dbprune", "DBPruneConfig", None, False),
    "DBCacheTaylorSeer": ("dbcache_taylorseer", "DBCacheConfig", "TaylorSeerCalibratorConfig", False),
    "DBCacheFoCa": ("dbcache_foca", "DBCacheConfig", "FoCaCalibratorConfig", False),
    "DBCacheSCM": ("dbcache_scm", "DBCacheConfig", None, True),
}


def _cache_dit() -> Any:
    """cache-dit, imported on first use; its routine INFO lines stay off unless the user asked for them."""
    from experiments.errors import SpecError

    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "warning")
    try:
        import cache_dit
    except ImportError:
        raise SpecError(f"cache-dit is not installed: {INSTALL}") from None
    return cache_dit


@contextlib.contextmanager
def _quiet():
    """cache-dit logs a line per enable and disable (on stdout); keep them out of the sweep's output."""
    import logging

    from cache_dit import logger as cache_dit_logger

    handler = cache_dit_logger._default_handler
    level = handler.level if handler is not None else None
    if handler is not None:
        handler.setLevel(logging.ERROR)
    try:
        yield
    finally:
        if handler is not None:
            handler.setLevel(level)


def _settings_class(name: str) -> type:
    """The settings dataclass of one method, made from cache-dit's config classes (fields, types, defaults)."""
    import typing

    cache_dit = _cache_dit()
    method, cache_name, calibrator_name, scm = KINDS[name]
    sources = [getattr(cache_dit, cache_name)] + ([getattr(cache_dit, calibrator_name)] if calibrator_name else [])
    fields = []
    for source in sources:
        hints = typing.get_type_hints(source)
        for f in dataclasses.fields(source):
            if f.name in FIXED or f.name in SCM_FIELDS:
                continue
            default = (dataclasses.field(default=f.default) if f.default is not dataclasses.MISSING
                       else dataclasses.field(default_factory=f.default_factory))
            fields.append((f.name, hints[f.name], default))
    if scm:
        # cache_dit.steps_mask's arguments; the mask itself is built for the spec's step count
        fields += [("steps_computation_policy", str, dataclasses.field(default="dynamic")),
                   ("mask_policy", typing.Optional[str], dataclasses.field(default="medium")),
                   ("compute_bins", typing.Optional[typing.List[int]], dataclasses.field(default=None)),
                   ("cache_bins", typing.Optional[typing.List[int]], dataclasses.field(default=None))]
    doc = (f"{method}: cache-dit's {cache_name}" + (f" with {calibrator_name}" if calibrator_name else "")
           + (" and a step computation mask" if scm else "") + f" (cache-dit {_version()}); fields as there.")
    return dataclasses.make_dataclass(name, fields, namespace={
        "__post_init__": _check, "__doc__": doc, "__module__": __name__, "cache_dit_configs": cache_dit_configs,
        "method": method})


def __getattr__(name: str) -> type:  # the settings classes are made on first use (module __getattr__, PEP 562)
    if name not in KINDS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = _settings_class(name)
    globals()[name] = cls
    return cls


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cache-dit")
    except PackageNotFoundError:
        return "not installed"


def cache_dit_configs(settings: Any) -> tuple[Any, Any]:
    """cache-dit's own (cache config, calibrator config or None) for these settings."""
    cache_dit = _cache_dit()
    _, cache_name, calibrator_name, scm = KINDS[type(settings).__name__]
    values = dataclasses.asdict(settings)
    cache_cls = getattr(cache_dit, cache_name)
    cache_fields = {f.name for f in dataclasses.fields(cache_cls)}
    cache = cache_cls(**{k: v for k, v in values.items() if k in cache_fields})
    if scm:
        if settings.num_inference_steps is None:
            raise ValueError("a step computation mask needs the step count (num_inference_steps)")
        try:
            cache.steps_computation_mask = cache_dit.steps_mask(
                compute_bins=settings.compute_bins, cache_bins=settings.cache_bins,
                total_steps=settings.num_inference_steps, mask_policy=settings.mask_policy)
        except AssertionError as exc:
            raise ValueError(f"cache_dit.steps_mask refused the bins: {exc}") from None
        cache.steps_computation_policy = settings.steps_computation_policy
    calibrator = None
    if calibrator_name:
        calibrator_cls = getattr(cache_dit, calibrator_name)
        calibrator_fields = {f.name for f in dataclasses.fields(calibrator_cls)}
        calibrator = calibrator_cls(**{k: v for k, v in values.items() if k in calibrator_fields})
    return cache, calibrator


def _check(settings: Any) -> None:
    """Values cache-dit's code accepts, then cache-dit's own checks (its context asserts on bad combinations)."""
    for key, allowed in CHOICES.items():
        value = getattr(settings, key, allowed[0])
        if value is not None and value not in allowed:
            raise ValueError(f"{key}={value!r}: allowed are {', '.join(allowed)}")
    if getattr(settings, "compute_bins", None) is not None and getattr(settings, "cache_bins", None) is None \
            or getattr(settings, "cache_bins", None) is not None and getattr(settings, "compute_bins", None) is None:
        raise ValueError("give compute_bins and cache_bins together (or neither, for mask_policy)")
    from cache_dit.caching.cache_contexts.cache_context import CachedContext
    from cache_dit.caching.cache_contexts.prune_context import PrunedContext

    if settings.num_inference_steps is None and KINDS[type(settings).__name__][3]:
        return  # the mask is built once the step count is known
    cache, calibrator = settings.cache_dit_configs()
    context = PrunedContext if type(settings).__name__ == "DBPrune" else CachedContext
    try:
        context(name="check", cache_config=cache, calibrator_config=calibrator)
    except AssertionError as exc:
        raise ValueError(f"cache-dit refuses this combination: {exc}") from None


class CacheDiTRun:
    """One enabled cache-dit method: each call's decision, read from cache-dit's context right after the call
    and reported as the project's decision record (``experiments.instrumentation.record_decision``)."""

    def __init__(self, pipe: Any, settings: Any):
        self.pipe = pipe
        self.settings = settings
        self.own_forward = {id(t): "forward" in t.__dict__ for t in transformers_of(pipe)}
        self._handles: list[Any] = []

    def install(self, transformers: list[Any]) -> None:
        for transformer in transformers:
            self._handles.append(transformer.register_forward_hook(lambda module, args, output: self._record(module)))

    def uninstall(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _record(self, transformer: Any) -> None:
        """One decision per call: reused where any block list cache-dit wraps (Flux: two, each with its own
        context) reused its cache or DBPrune pruned a block; the signal is the first block list's residual
        difference (None where it compared nothing: warm-up, a step the mask computes; DBPrune: the first
        block it tested). The step is the branch's count in the pipeline call (cache-dit's contexts count per
        transformer: Wan 2.2's second expert starts again at 0). Per block list and per block, cache-dit's own
        statistics (``stats``) keep the detail."""
        from experiments.instrumentation import record_decision

        manager = getattr(transformer, "_context_manager", None)
        computed, signal, branch = True, None, None
        for blocks, name in enumerate(getattr(transformer, "_context_names", ())):
            context = manager.get_context(name)
            step = context.get_current_step()
            cfg = context.is_separate_cfg_step()
            cached = context.cfg_cached_steps if cfg else context.cached_steps
            pruned = getattr(context, "cfg_pruned_blocks" if cfg else "pruned_blocks", None)
            if pruned is not None:  # DBPrune decides per block: this call pruned pruned[-1] of them
                computed = computed and (not pruned or pruned[-1] == 0)
            else:
                computed = computed and step not in cached
            if blocks == 0:
                branch = _branch(context, cfg)
                signal = (context.cfg_residual_diffs if cfg else context.residual_diffs).get(str(step))
                if isinstance(signal, (list, tuple)):  # DBPrune: one difference per block tested; the first
                    signal = signal[0] if signal else None
        if branch is not None:
            record_decision(branch, None, computed, signal)

    def stats(self) -> dict[str, Any]:
        """cache-dit's own statistics of the last pipeline call (``cache_dit.summary``), as plain data."""
        cache_dit = _cache_dit()
        keep = ("cached_steps", "cfg_cached_steps", "residual_diffs", "cfg_residual_diffs", "accumulated_cached_steps",
                "cfg_accumulated_cached_steps", "accumulated_executed_steps", "accumulated_transformer_executed_steps",
                "pruned_steps", "pruned_blocks", "actual_blocks", "pruned_ratio", "cfg_pruned_steps",
                "cfg_pruned_blocks", "cfg_actual_blocks", "cfg_pruned_ratio")
        cache, calibrator = self.settings.cache_dit_configs()
        stats = cache_dit.summary(self.pipe, logging=False)
        config = cache.strify() + (f"_{calibrator.strify()}" if calibrator is not None else "")
        return {"library": "cache-dit", "version": _version(), "config": config,
                "contexts": [{k: _plain(getattr(s, k)) for k in keep} for s in stats if s.cache_options]}


def _branch(context: Any, cfg_step: bool) -> str:
    """cache-dit's non-CFG / CFG calls as the pipelines name them: with separate CFG the first call of a step is
    the conditional one unless cfg_compute_first; with one call per step, that call carries every branch."""
    config = context.cache_config
    if not config.enable_separate_cfg:
        return "all"
    return "uncond" if cfg_step != bool(config.cfg_compute_first) else "cond"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def transformers_of(pipe: Any) -> list[Any]:
    """The transformers cache-dit caches on this pipeline (Wan 2.2: both experts)."""
    return [t for t in (pipe.transformer, getattr(pipe, "transformer_2", None)) if t is not None]


def _check_blocks(pipe: Any, cache: Any) -> None:
    """Fn + Bn compute blocks must fit in each block list cache-dit wraps (its own assert says less)."""
    adapter = _cache_dit().get_adapter(pipe)
    blocks = adapter.blocks if isinstance(adapter.blocks, list) else [adapter.blocks]
    for stack in blocks:
        for one in (stack if isinstance(stack, list) else [stack]):
            if cache.Fn_compute_blocks + cache.Bn_compute_blocks > len(one):
                raise ValueError(f"Fn_compute_blocks={cache.Fn_compute_blocks} + Bn_compute_blocks="
                                 f"{cache.Bn_compute_blocks} exceed the {len(one)} blocks of "
                                 f"{type(pipe.transformer).__name__}; lower them")


def apply(pipe: Any, settings: Any) -> None:
    cache_dit = _cache_dit()
    cache, calibrator = settings.cache_dit_configs()
    if not cache_dit.BlockAdapterRegister.is_supported(pipe):
        raise ValueError(f"cache-dit {_version()} has no block adapter for {type(pipe).__name__}")
    run = CacheDiTRun(pipe, settings)  # before enable_cache: it notes which transformer had a forward of its own
    with _quiet():
        _check_blocks(pipe, cache)
        try:
            cache_dit.enable_cache(pipe, cache_config=cache, calibrator_config=calibrator)
        except BaseException:
            _disable(pipe, run)
            raise
    run.install(transformers_of(pipe))
    pipe.transformer._repro_cache_run = run


def remove(pipe: Any) -> None:
    run = getattr(pipe.transformer, "_repro_cache_run", None)
    if run is not None:
        run.uninstall()
    _disable(pipe, run)
    pipe.transformer._repro_cache_run = None


def _disable(pipe: Any, run: CacheDiTRun | None) -> None:
    with _quiet():
        _cache_dit().disable_cache(pipe)
    for transformer in transformers_of(pipe):
        # cache-dit puts the original forward back as an instance attribute; where there was none, drop it
        if run is not None and not run.own_forward.get(id(transformer), True):
            transformer.__dict__.pop("forward", None)


def call_text(name: str, params: dict, num_inference_steps: int | None) -> str:
    """cache-dit's own lines for a point, pasted after building `pipe`."""
    cache_dit = _cache_dit()
    _, cache_name, calibrator_name, scm = KINDS[name]
    cache_fields = {f.name for f in dataclasses.fields(getattr(cache_dit, cache_name))}
    cache = {k: v for k, v in params.items() if k in cache_fields}
    if num_inference_steps is not None:
        cache["num_inference_steps"] = num_inference_steps
    args = [", ".join(f"{k}={v!r}" for k, v in cache.items())]
    if scm:
        mask = {k: params[k] for k in ("compute_bins", "cache_bins", "mask_policy") if k in params}
        mask.setdefault("mask_policy", "medium")
        args.append("steps_computation_mask=cache_dit.steps_mask("
                    + ", ".join([f"total_steps={num_inference_steps!r}", *(f"{k}={v!r}" for k, v in mask.items())])
                    + ")")
    lines = ["import cache_dit", f"from cache_dit import {cache_name}" + (f", {calibrator_name}" if calibrator_name else "")]
    call = f"cache_dit.enable_cache(pipe, cache_config={cache_name}({', '.join(a for a in args if a)})"
    if calibrator_name:
        calibrator_fields = {f.name for f in dataclasses.fields(getattr(cache_dit, calibrator_name))}
        calibrator = ", ".join(f"{k}={v!r}" for k, v in params.items() if k in calibrator_fields)
        call += f", calibrator_config={calibrator_name}({calibrator})"
    return "\n".join([*lines, call + ")"])


#: the lossless setting: a threshold of 0 never reuses (cache_manager.py similarity: "0.0 means the threshold is
#: disabled"); F1B0 so that it runs on models with fewer blocks than cache-dit's default Fn_compute_blocks=8
_NO_OP = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "residual_diff_threshold": 0.0}


def _register(name: str, key_params: tuple[str, ...], probe: dict, doc: str, no_op: dict | None = None,
              **options: Any) -> None:
    nonnegative = ("residual_diff_threshold", "Bn_compute_blocks", "max_warmup_steps", "taylorseer_order")
    ranges = {"Fn_compute_blocks": (1, None), "warmup_interval": (1, None),
              "max_cached_steps": (-1, None), "max_continuous_cached_steps": (-1, None)}
    register_method(CacheMethod(
        KINDS[name][0], f"{__name__}:{name}", apply, remove, key_params=key_params, nonnegative=nonnegative,
        ranges=ranges, wired=("num_inference_steps",), no_op=no_op if no_op is not None else dict(_NO_OP),
        probe=probe, origin="cache-dit", doc=doc, acts_on="pipeline", requires="cache_dit", install=INSTALL,
        # a higher residual-difference threshold reuses (DBPrune: prunes) more: `repro tune` bisects along it
        aggressiveness="residual_diff_threshold",
        call_text=lambda params, steps: call_text(name, params, steps), **options))


# Probe settings (the method x family matrix): first block decides, no warm-up beyond the first step, a
# threshold that caches whenever the residual moved by less than its own size.
_PROBE = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "residual_diff_threshold": 0.9, "max_warmup_steps": 1}
_register("DBCache", ("residual_diff_threshold", "Fn_compute_blocks", "Bn_compute_blocks", "max_warmup_steps"),
          _PROBE, "cache-dit DBCache: first Fn blocks decide by residual change, last Bn blocks refine")
_register("DBPrune", ("residual_diff_threshold", "Fn_compute_blocks", "Bn_compute_blocks", "max_warmup_steps"),
          _PROBE, "cache-dit Dynamic Block Prune: per-block residual change prunes blocks")
_register("DBCacheTaylorSeer", ("residual_diff_threshold", "taylorseer_order", "Fn_compute_blocks", "max_warmup_steps"),
          _PROBE, "cache-dit DBCache with the TaylorSeer calibrator forecasting the reused residual")
_register("DBCacheFoCa", ("residual_diff_threshold", "Fn_compute_blocks", "max_warmup_steps"),
          _PROBE, "cache-dit DBCache with the FoCa calibrator (BDF2 predictor, Heun corrector)")
# SCM: "static" caches every masked step; the no-op is a mask that computes every step
_register("DBCacheSCM", ("mask_policy", "steps_computation_policy", "residual_diff_threshold"),
          {**_PROBE, "mask_policy": "fast", "steps_computation_policy": "static"},
          "cache-dit DBCache under a step computation mask (cache_dit.steps_mask)",
          no_op={**_NO_OP, "steps_computation_policy": "dynamic"})
