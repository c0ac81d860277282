"""The cache-method registry: one :class:`CacheMethod` per method, whoever wrote it.

A method is a config dataclass plus ``apply(transformer, config)`` / ``remove(transformer)``.
The ``diffusers.hooks`` caches use diffusers' own ``enable_cache`` / ``disable_cache``
(``diffusers_caches.py``); the project's TeaCache and EasyCache (``teacache.py``,
``easycache.py``) and any plugin register their own pair; cache-dit's methods (``cache_dit.py``,
an optional extra) act on the whole pipeline: ``apply(pipe, config)`` / ``remove(pipe)``. The registry also says which
params label a point, which must be non-negative, which are filled from the pipeline, which
setting is a no-op (for the bit-exactness test) and how the method calibrates, if it does.

Importing this module is cheap (no torch, no diffusers): config classes of diffusers are named
by string and resolved on first use.

Example::

    method = get_method("first_block_cache")
    config = method.build_config({"threshold": 0.1}, pipe=pipe, num_inference_steps=8)
    disable = enable_cache(pipe.transformer, config)
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import itertools
import math
import types
from dataclasses import dataclass, field
from typing import Any, Callable

from experiments.errors import SpecError

#: ``calibrate(transformer, passes, num_inference_steps, params) -> {branch: values}``; ``passes``
#: are callables, one uncached generation each, run by the engine that generates the sweep;
#: ``params`` are the family's fixed params for the method plus the entry's ``calibration_params``.
Calibrator = Callable[[Any, list, int, dict], dict]


@dataclass(frozen=True)
class CacheMethod:
    """One cache method: its config class, how to apply and remove it, and what the sweep needs to know."""

    name: str
    #: the config dataclass, or "module:Name" resolved on first use (keeps imports light)
    config: type | str
    #: ``apply(transformer, config)``; None: diffusers' CacheMixin.enable_cache (or the matching apply_*)
    apply: Callable[[Any, Any], None] | None = None
    #: ``remove(transformer)``, undoing ``apply`` exactly
    remove: Callable[[Any], None] | None = None
    #: params that identify a point in labels and figures, most important first
    key_params: tuple[str, ...] = ()
    #: numeric params that must be >= 0 (a negative threshold is a spec error, not a silent no-op)
    nonnegative: tuple[str, ...] = ()
    #: fields filled from the pipeline at run time; a spec may not set them
    wired: tuple[str, ...] = ()
    #: params that make the method compute every block (used to test bit-exactness)
    no_op: dict[str, Any] = field(default_factory=dict)
    #: the config field a calibration fills (MagCache's mag_ratios, TeaCache's coefficients)
    calibrated_field: str | None = None
    calibrate: Calibrator | None = None
    #: calibrate over the spec's first prompt ("first", MagCache) or every prompt ("all", TeaCache)
    calibrate_over: str = "first"
    #: published calibration for a hub model id and the entry's ``calibration_params``, with its citation:
    #: ``published(model_id, params) -> (values, source)`` or None
    published: Callable[[str | None, dict], tuple[tuple[float, ...], str] | None] | None = None
    #: params a calibration depends on (TeaCache: its signal, mode and target): part of the calibration's key,
    #: handed to ``calibrate`` and ``published``; a sweep may not vary them within one entry
    calibration_params: tuple[str, ...] = ()
    #: ``deviations(params, official) -> [line, ...]``: every setting of a point that differs from the method's
    #: official code, each line saying what and why (``official``: the family's fixed params for the method);
    #: None where the method has no official code of its own to differ from
    deviations: Callable[[dict, dict], list[str]] | None = None
    #: a small positive setting that should skip work on a tiny model (the method x family probe)
    probe: dict[str, Any] = field(default_factory=dict)
    #: where the method comes from: "diffusers", "project", "plugin <module>", "entry point <dist>"
    origin: str = "project"
    doc: str = ""
    #: allowed [low, high] of numeric params beyond ">= 0" (None: open-ended)
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    #: the param that makes the method skip more work, and lose quality, as it grows (monotone up to noise):
    #: `repro tune` bisects along it. None: no such structure is claimed, and tune samples with optuna instead
    aggressiveness: str | None = None
    #: for a config named "module:Name" whose class has a ``__post_init__``: (sha256 of that method's source, a
    #: transcription of it taking the field values as attributes), so a spec is checked without importing the
    #: class's library (experiments/library_facts.py); another source version is checked by the class itself
    post_init: tuple[str, Callable[[Any], None]] | None = None
    #: "transformer": ``apply(transformer, config)``; "pipeline": ``apply(pipe, config)`` / ``remove(pipe)`` for
    #: libraries that wrap the whole pipeline (cache-dit wraps ``pipe.__call__`` and every transformer)
    acts_on: str = "transformer"
    #: the distribution an optional method needs (its import name) and how to install it; None: always there
    requires: str | None = None
    install: str = ""
    #: ``expert_config(config, first_step, steps)``: the config for a transformer that runs `steps` of the
    #: pipeline's steps from `first_step` (Wan 2.2's experts), for a method that counts the steps itself;
    #: None: such a method caches the first transformer only
    expert_config: Callable[[Any, int, int], Any] | None = None
    #: ``call_text(params, num_inference_steps)``: the library's own lines for a point (cache-dit's
    #: ``cache_dit.enable_cache(pipe, ...)``), instead of the registry's ``enable_cache`` call
    call_text: Callable[[dict, int | None], str] | None = None

    def missing(self) -> str | None:
        """How to install what this method needs when it is not installed; None when it can run."""
        import importlib.util

        if self.requires is None or importlib.util.find_spec(self.requires) is not None:
            return None
        return f"not installed: {self.install or f'pip install {self.requires}'}"

    @property
    def config_class(self) -> type:
        if not isinstance(self.config, str):
            return self.config
        if self.missing():
            raise SpecError(f"cache method {self.name!r} needs the {self.requires} package, which is "
                            f"{self.missing()}")
        module_name, _, attr = self.config.partition(":")
        cls = getattr(importlib.import_module(module_name), attr, None)
        if cls is None:
            raise SpecError(
                f"cache method {self.name!r} needs {module_name}.{attr}, which the installed package does not "
                f"have; upgrade it (pip install -U {module_name.split('.')[0]})"
            )
        return cls

    @property
    def config_class_name(self) -> str:
        return self.config.partition(":")[2] if isinstance(self.config, str) else self.config.__name__

    def facts(self) -> Any:
        """The config's fields as ``experiments.library_facts`` knows them without importing its library (a config
        named "module:Name"); None where the class itself is read (a class, REPRO_LIBRARY_FACTS=import, or a type
        the snapshot cannot stand in for)."""
        from experiments import library_facts

        if not isinstance(self.config, str) or library_facts.importing():
            return None
        facts = library_facts.config(self.config)
        return facts if facts is not None and facts.exact else None

    def fields(self) -> dict[str, Any]:
        """Public fields by name (``dataclasses.Field``, or ``library_facts.ConfigField``: name, type, default)."""
        facts = self.facts()
        found = facts.fields.values() if facts is not None else dataclasses.fields(self.config_class)
        return {f.name: f for f in found if not f.name.startswith("_")}

    def settable(self) -> list[str]:
        return sorted(n for n in self.fields() if n not in self.wired)

    def field_types(self) -> dict[str, Any]:
        import typing

        facts = self.facts()
        if facts is not None:
            return dict(facts.hints or {})
        try:
            return typing.get_type_hints(self.config_class)
        except Exception:  # a plugin's annotations that cannot be resolved: its own checks decide
            return {}

    def is_integer(self, key: str) -> bool:
        """Whether `key` takes integers only (a range over it is a grid of integers)."""
        from experiments.param_types import type_problem

        hint = self.field_types().get(key, Any)
        return type_problem(1, hint) is None and type_problem(0.5, hint) is not None

    def axis_values(self, key: str, axis: Any) -> list[Any]:
        """The values a sweep axis stands for: its list, or its range's grid (spec.SweepRange)."""
        return list(axis) if isinstance(axis, list) else axis.grid(integer=self.is_integer(key))

    def check_param(self, key: str, value: Any) -> str | None:
        """What is wrong with `key=value` (its type against the config field, then its range), or None."""
        from experiments.param_types import range_problem, type_problem

        problem = type_problem(value, self.field_types().get(key, Any))
        if problem:
            return f"must be {problem}"
        low, high = self.ranges.get(key, (0, None) if key in self.nonnegative else (None, None))
        problem = range_problem(value, low, high)
        if problem and low == 0 and value < 0:
            return f"is negative; {key} must be >= 0"
        return f"must be {problem}" if problem else None

    def build_config(self, params: dict[str, Any], pipe: Any = None, num_inference_steps: int | None = None,
                     calibration: list[float] | None = None) -> Any:
        """The config for `params`, with pipeline-dependent fields and the calibrated values wired in."""
        # every field, private ones included: a family may fix one (FasterCache's batched-input names on SD3)
        fields = {f.name: f for f in dataclasses.fields(self.config_class)}
        kwargs = {k: _coerce(fields[k], v) for k, v in params.items()}
        self._wire(kwargs, fields, params, pipe, num_inference_steps, calibration)
        # without values the config refuses (never a silent switch into calibration mode)
        return self.config_class(**kwargs)

    def _wire(self, values: dict[str, Any], fields: dict[str, Any], params: dict[str, Any], pipe: Any,
              num_inference_steps: int | None, calibration: list[float] | None, stand_in: bool = False) -> None:
        """Fill in what the pipeline decides (wired fields) and the calibrated values the user did not set."""
        for name in self.wired:
            if name == "current_timestep_callback":
                values[name] = _timestep_callback(pipe)
            elif name == "num_inference_steps":
                values[name] = num_inference_steps
        target = self.calibrated_field
        if target and target not in params and calibration is not None:
            values[target] = _coerce(fields[target], list(calibration), stand_in=stand_in)

    def check_config(self, params: dict[str, Any], num_inference_steps: int | None = None,
                     calibration: list[float] | None = None) -> None:
        """Raise what :meth:`build_config` raises for `params`, without importing the config's library where the
        snapshot knows its fields and its ``__post_init__`` is none or the one `post_init` transcribes."""
        from experiments.library_facts import MISSING, LibraryNeeded

        facts = self.facts()
        rule = self.post_init
        if facts is None or facts.post_init is not None and (rule is None or rule[0] != facts.post_init):
            self.build_config(params, None, num_inference_steps, calibration)
            return
        fields = self.fields()
        values = {name: f.default for name, f in facts.fields.items()}
        values.update({k: _coerce(fields[k], v, stand_in=True) for k, v in params.items()})
        self._wire(values, fields, params, None, num_inference_steps, calibration, stand_in=True)
        try:
            if any(v is MISSING for v in values.values()):
                raise LibraryNeeded  # a required field left out: the class's own TypeError says which
            if rule is not None:
                rule[1](types.SimpleNamespace(**values))
        except LibraryNeeded:
            self.build_config(params, None, num_inference_steps, calibration)

    def python_call(self, params: dict[str, Any], num_inference_steps: int | None = None) -> str:
        """The lines a user pastes after building `pipe` to reproduce a point; they run as printed.

        Wired fields are written out: the step count and the timestep callback PAB/FasterCache read; the
        calibrated values (MagCache's ratios, TeaCache's coefficients) are in `params` once calibrated.
        """
        if self.call_text is not None:
            return self.call_text(params, num_inference_steps)
        fields = self.fields()
        items = [f"{k}={_coerce(fields[k], v, stand_in=True)!r}" if k in fields else f"{k}={v!r}"
                 for k, v in params.items()]
        for name in self.wired:
            if name in params:
                continue
            if name == "current_timestep_callback":
                items.append("current_timestep_callback=lambda: pipe.current_timestep")
            elif name == "num_inference_steps" and num_inference_steps is not None:
                items.append(f"num_inference_steps={num_inference_steps}")
        missing = self.calibrated_field and self.calibrated_field not in params
        args = ", ".join(items)
        imports = "import torch\n" if "torch." in args else ""  # a dtype param reprs as torch.<dtype>
        note = f"  # also set: {self.calibrated_field} (not calibrated yet: repro calibrate SPEC)" if missing else ""
        module = self.config.partition(":")[0] if isinstance(self.config, str) else self.config.__module__
        if self.apply is None:  # diffusers: the model's own enable_cache
            module = "diffusers.hooks" if module.startswith("diffusers.hooks") else module
            return (f"{imports}from {module} import {self.config_class_name}\n"
                    f"pipe.transformer.enable_cache({self.config_class_name}({args})){note}")
        return (f"{imports}from experiments.methods import enable_cache\nfrom {module} import {self.config_class_name}\n"
                f"disable = enable_cache(pipe.transformer, {self.config_class_name}({args})){note}")

    def spec_snippet(self, params: dict[str, Any], num_inference_steps: int | None = None,
                     optimization: dict[str, Any] | None = None, label: str | None = None) -> str:
        """The YAML to merge into a spec: its `methods` entry, plus the step count and optimizations the point ran with."""
        import yaml

        doc: dict[str, Any] = {}
        if "num_inference_steps" in self.wired and num_inference_steps is not None:
            doc["generation"] = {"num_inference_steps": num_inference_steps}
        if optimization:
            doc["optimizations"] = {k: [v] for k, v in optimization.items()}
        entry: dict[str, Any] = {"name": self.name}
        if label and label != self.name:
            entry["label"] = label
        entry["params"] = dict(params)
        doc["methods"] = [entry]
        return yaml.safe_dump(doc, sort_keys=False, width=10_000).rstrip()


METHODS: dict[str, CacheMethod] = {}
#: Most points one method entry may expand to (the cartesian product of its sweep axes).
MAX_POINTS = 10_000


def register_method(method: CacheMethod | str, config: type | str | None = None,
                    apply: Callable[[Any, Any], None] | None = None, remove: Callable[[Any], None] | None = None,
                    **options: Any) -> CacheMethod:
    """Add a method to the registry; returns it.

    Either a ready :class:`CacheMethod`, or its parts: ``register_method("my_cache", MyConfig,
    apply, remove, key_params=("period",))``. A name already taken by another method is refused
    (a plugin cannot silently replace a built-in method).
    """
    if not isinstance(method, CacheMethod):
        if config is None or apply is None or remove is None:
            raise TypeError(f"register_method({method!r}, ...) needs a config dataclass, apply and remove")
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"register_method({method!r}, ...): {config!r} is not a dataclass")
        from experiments.methods import plugins

        options.setdefault("origin", plugins.current_origin() or f"plugin {config.__module__}")
        options.setdefault("key_params", tuple(f.name for f in dataclasses.fields(config))[:1])
        method = CacheMethod(method, config, apply, remove, **options)
    old = METHODS.get(method.name)
    if old is not None and (old.origin, old.config_class_name) != (method.origin, method.config_class_name):
        raise SpecError(f"cache method {method.name!r} from {method.origin} clashes with the one from "
                        f"{old.origin}; give the new method another name")
    METHODS[method.name] = method
    return method


def builtin_names() -> tuple[str, ...]:
    """The methods this project ships (diffusers' caches and its own), in registration order."""
    _load_builtins()
    return tuple(n for n, m in METHODS.items() if m.origin in ("diffusers", "project"))


def library_names() -> tuple[str, ...]:
    """The methods of other caching libraries the project registers (cache-dit's), in registration order."""
    _load_builtins()
    return tuple(n for n, m in METHODS.items() if m.origin == "cache-dit")


def all_methods() -> dict[str, CacheMethod]:
    _load_builtins()
    return dict(METHODS)


def get_method(name: str) -> CacheMethod:
    _load_builtins()
    if name not in METHODS:
        from experiments.methods import plugins

        plugins.load_entry_point(name)  # an installed package's method, imported only when named
    if name not in METHODS:
        near = difflib.get_close_matches(name, METHODS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else "."
        raise SpecError(f"unknown cache method {name!r}{hint} Known methods: {', '.join(METHODS)} "
                        f"(a method from your own code: list its module under `plugins:` in the spec)")
    return METHODS[name]


def method_of_config(config: Any) -> CacheMethod | None:
    _load_builtins()
    return next((m for m in METHODS.values() if _is_instance(config, m)), None)


def enable_cache(transformer: Any, config: Any, pipe: Any = None) -> Callable[[], None]:
    """Enable `config` on `transformer`; returns the function that removes it again.

    The one path for every method: the registered ``apply``/``remove`` pair, or for diffusers'
    caches the model's ``enable_cache`` (models without diffusers' CacheMixin, e.g. SD3's
    transformer, get the matching ``diffusers.hooks.apply_*`` and the same removal code).

    `pipe` (the pipeline `transformer` belongs to) lets the family's adapter supply what its
    pipeline does not provide to the hooks (``experiments/families/adapters.py``) and enables the
    cache on the pipeline's further experts (Wan 2.2's ``transformer_2``); a method that acts on
    the whole pipeline (cache-dit's) needs it.
    """
    method = method_of_config(config)
    if method is None:
        raise TypeError(f"{type(config).__name__} is not the config of a registered cache method")
    if getattr(transformer, "_repro_cache_method", None) is not None:
        raise RuntimeError(f"cache {transformer._repro_cache_method} is already enabled on this transformer; "
                           f"disable it first")
    pipe = pipe if pipe is not None else _pipeline_of(transformer)
    with contextlib.ExitStack() as stack:
        if method.acts_on == "pipeline":
            if pipe is None or pipe.transformer is not transformer:
                raise TypeError(f"{method.name} acts on the whole pipeline: call "
                                f"enable_cache(pipe.transformer, config, pipe=pipe)")
            method.apply(pipe, config)
            stack.callback(method.remove, pipe)
        else:
            from experiments.families.adapters import adapted, experts_of

            experts = experts_of(pipe) if pipe is not None else []
            if pipe is not None:
                stack.enter_context(adapted(pipe))
            if experts and method.expert_config is not None:  # one run per expert over its own steps
                first = 0
                for t, steps in zip([transformer, *experts], _expert_steps(pipe, config)):
                    stack.callback(_enable_on(t, method.expert_config(config, first, steps), method))
                    first += steps
            else:
                stack.callback(_enable_on(transformer, config, method))
                # a cache that counts the pipeline's steps itself would count each expert's share as the whole run
                if "num_inference_steps" not in method.wired:
                    for expert in experts:
                        stack.callback(_enable_on(expert, config, method))
        transformer._repro_cache_method = method.name
        stack.callback(setattr, transformer, "_repro_cache_method", None)
        undo = stack.pop_all()
    return undo.close


def _pipeline_of(transformer: Any) -> Any:
    from experiments.families.adapters import pipeline_of

    return pipeline_of(transformer)


def _expert_steps(pipe: Any, config: Any) -> list[int]:
    from experiments.families.adapters import adapter_of

    adapter = adapter_of(pipe)
    if adapter is None or adapter.expert_steps is None:
        raise TypeError(f"{type(pipe).__name__} has further experts but its family adapter does not say how many "
                        f"steps each runs (PipelineAdapter.expert_steps)")
    return adapter.expert_steps(pipe, config.num_inference_steps)


def _enable_on(transformer: Any, config: Any, method: CacheMethod) -> Callable[[], None]:
    if method.apply is not None:
        method.apply(transformer, config)
        return lambda: method.remove(transformer)
    remove = _diffusers_enable(transformer, config, method)
    return lambda: remove(transformer)


def _diffusers_enable(transformer: Any, config: Any, method: CacheMethod) -> Callable[[Any], None]:
    if hasattr(transformer, "enable_cache"):
        transformer.enable_cache(config)
        return lambda t: t.disable_cache()
    import diffusers.hooks as hooks
    from diffusers.models.cache_utils import CacheMixin

    apply_name = "apply_" + method.name
    if not hasattr(hooks, apply_name):
        raise TypeError(f"{type(transformer).__name__} has no enable_cache and no diffusers.hooks.{apply_name}")
    getattr(hooks, apply_name)(transformer, config)

    def remove(t: Any) -> None:
        t._cache_config = config  # CacheMixin.disable_cache only reads this and the hook registry
        try:
            CacheMixin.disable_cache(t)
        finally:
            del t._cache_config

    return remove


def expand_grid(params: dict[str, Any], sweep: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of the sweep axes, each merged over the fixed params (axis order kept)."""
    keys = list(sweep)
    return [{**params, **dict(zip(keys, combo))} for combo in itertools.product(*(sweep[k] for k in keys))]


def check_method_spec(method_spec: Any, where: str, generation: Any = None) -> None:
    """Validate a spec's method entry against the method's config dataclass, without loading a model."""
    try:
        method = get_method(method_spec.name)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    fields = method.fields()
    settable = method.settable()
    both = set(method_spec.params) & set(method_spec.sweep)
    if both:
        raise SpecError(f"{where}: {sorted(both)} appear in both params and sweep; put each in one of them")
    for group in ("params", "sweep"):
        for key in getattr(method_spec, group):
            if key in method.wired:
                raise SpecError(f"{where}: {group}.{key} is set automatically from the pipeline; remove it")
            if key not in fields:
                near = difflib.get_close_matches(key, settable, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else "."
                raise SpecError(
                    f"{where}: unknown parameter {key!r} for {method.name} ({method.config_class_name}){hint} "
                    f"Valid parameters: {', '.join(settable)}"
                )
    target = method.calibrated_field
    if target and target not in method_spec.params and getattr(method_spec, "calibrate", "auto") == "never" \
            and method.published is None:
        raise SpecError(f"{where}: {method.name} needs params.{target} or calibrate: auto")
    from experiments.untrusted_text import shorten

    for group in ("params", "sweep"):
        for key, given in getattr(method_spec, group).items():
            ranged = group == "sweep" and not isinstance(given, list)  # a range: its ends and step are checked
            for value in ([given.min, given.max] if ranged else given if group == "sweep" else [given]):
                problem = method.check_param(key, value)
                if problem:
                    what = "a range's end " if ranged else ""
                    raise SpecError(f"{where}: {group}.{key}: {what}{key}={shorten(value)} {problem} "
                                    f"({method.config_class_name}.{key})")
            if ranged and method.is_integer(key) and given.step is not None and not isinstance(given.step, int):
                raise SpecError(f"{where}: sweep.{key}: step={shorten(given.step)} must be an integer "
                                f"({method.config_class_name}.{key} takes integers)")
    axes = {k: method.axis_values(k, v) for k, v in method_spec.sweep.items()}
    n_points = math.prod(len(v) for v in axes.values())
    if n_points > MAX_POINTS:
        raise SpecError(f"{where}: the sweep grid has {n_points:,} points; at most {MAX_POINTS:,} per method entry "
                        f"(each point is a generation per prompt and seed)")
    steps = getattr(generation, "num_inference_steps", None) or 28
    for point in expand_grid(method_spec.params, axes):
        try:
            # a stand-in calibration, long enough for per-call lists too (magcache_official_eval: 2 per step)
            method.check_config(point, num_inference_steps=steps, calibration=[1.0] * (2 * steps) if target else None)
        except SpecError:
            raise
        except Exception as exc:  # the config's own __post_init__ checks, e.g. SeaCache's residual_order
            raise SpecError(f"{where}: {method.config_class_name}({shorten(point)}) is invalid: "
                            f"{shorten(str(exc))[1:-1]}") from None


_BUILTIN_MODULES = ("experiments.methods.diffusers_caches", "experiments.methods.teacache",
                    "experiments.methods.easycache", "experiments.methods.magcache_eval",
                    "experiments.methods.cache_dit")


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)  # each registers its methods once, at import


def _is_instance(config: Any, method: CacheMethod) -> bool:
    if isinstance(method.config, str):  # avoid importing diffusers just to compare class names
        module_name, _, attr = method.config.partition(":")
        if type(config).__name__ != attr:
            return False
    return isinstance(config, method.config_class)


def _coerce(f: Any, value: Any, stand_in: bool = False) -> Any:
    """YAML has no tuples or dtypes: turn lists into tuples and dtype names into torch dtypes where the field wants
    them (`stand_in`: a dtype known by name, ``library_facts.DtypeName``, which checks and reprs the same)."""
    hint = str(f.type)
    if isinstance(value, list) and ("tuple" in hint or isinstance(f.default, tuple)):
        return tuple(value)
    if isinstance(value, str) and "dtype" in hint:
        from experiments import library_facts

        if stand_in and not library_facts.importing():
            dtype = library_facts.torch_dtype(value)
            if dtype is None:
                raise SpecError(f"{f.name}={value!r} is not a torch dtype name (e.g. float32, bfloat16)")
            return dtype
        import torch

        dtype = getattr(torch, value, None)
        if not isinstance(dtype, torch.dtype):
            raise SpecError(f"{f.name}={value!r} is not a torch dtype name (e.g. float32, bfloat16)")
        return dtype
    return value


def _timestep_callback(pipe: Any) -> Callable[[], Any]:
    # PAB and FasterCache decide per timestep; diffusers pipelines expose it as `current_timestep`.
    def current_timestep():
        t = getattr(pipe, "current_timestep", None)
        if t is None:
            t = getattr(pipe, "_current_timestep", None)
        return -1 if t is None else t

    return current_timestep
