"""The cache-method registry over ``diffusers.hooks``.

Each entry names a config dataclass in ``diffusers.hooks`` and says which of its fields
are filled from the pipeline (``current_timestep_callback``, MagCache's step count and
ratios), which params must be non-negative, and which params label a point. Adding a
method is one ``register_method(...)`` call here.

Example::

    method = get_method("first_block_cache")
    config = method.build_config({"threshold": 0.1}, pipe=pipe, num_inference_steps=8)
    pipe.transformer.enable_cache(config)
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

from experiments.errors import SpecError


@dataclass(frozen=True)
class CacheMethod:
    """How to turn sweep params into a ``diffusers.hooks`` config for one cache method."""

    name: str
    config_class_name: str
    #: params that identify a point in labels and figures, most important first
    key_params: tuple[str, ...]
    #: numeric params that must be >= 0 (a negative threshold is a spec error, not a silent no-op)
    nonnegative: tuple[str, ...] = ()
    #: fields filled from the pipeline at run time; a spec may not set them
    wired: tuple[str, ...] = ()
    #: params that make the method compute every block (used to test bit-exactness)
    no_op: dict[str, Any] = field(default_factory=dict)
    #: MagCache needs calibrated ratios per (model, scheduler, steps, resolution)
    needs_calibration: bool = False

    @property
    def config_class(self) -> type:
        import diffusers.hooks as hooks

        cls = getattr(hooks, self.config_class_name, None)
        if cls is None:
            raise SpecError(
                f"cache method {self.name!r} needs diffusers.hooks.{self.config_class_name}, which the installed "
                f"diffusers does not have; upgrade diffusers (pip install -U diffusers)"
            )
        return cls

    def fields(self) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(self.config_class) if not f.name.startswith("_")}

    def settable(self) -> list[str]:
        return sorted(n for n in self.fields() if n not in self.wired)

    def build_config(self, params: dict[str, Any], pipe: Any = None, num_inference_steps: int | None = None,
                     mag_ratios: list[float] | None = None) -> Any:
        """The diffusers config for `params`, with pipeline-dependent fields wired in."""
        kwargs = {k: _coerce(self.fields()[k], v) for k, v in params.items()}
        for name in self.wired:
            if name == "current_timestep_callback":
                kwargs[name] = _timestep_callback(pipe)
            elif name == "num_inference_steps":
                kwargs[name] = num_inference_steps
            elif name == "mag_ratios" and "mag_ratios" not in params:
                if mag_ratios is None:
                    kwargs["calibrate"] = True
                else:
                    kwargs["mag_ratios"] = list(mag_ratios)
        return self.config_class(**kwargs)

    def python_call(self, params: dict[str, Any]) -> str:
        """The line a user pastes into their own script to reproduce a point."""
        args = ", ".join(f"{k}={v!r}" for k, v in params.items())
        wired = [w for w in self.wired if w not in params]
        note = f"  # also set: {', '.join(wired)}" if wired else ""
        return (f"from diffusers.hooks import {self.config_class_name}\n"
                f"pipe.transformer.enable_cache({self.config_class_name}({args})){note}")


METHODS: dict[str, CacheMethod] = {}


def register_method(method: CacheMethod) -> CacheMethod:
    METHODS[method.name] = method
    return method


register_method(CacheMethod(
    name="first_block_cache", config_class_name="FirstBlockCacheConfig",
    key_params=("threshold",), nonnegative=("threshold",), no_op={"threshold": 0.0},
))
register_method(CacheMethod(
    name="mag_cache", config_class_name="MagCacheConfig",
    key_params=("threshold", "retention_ratio", "max_skip_steps"),
    nonnegative=("threshold", "retention_ratio", "max_skip_steps"),
    wired=("num_inference_steps", "mag_ratios", "calibrate"),
    no_op={"threshold": 0.0}, needs_calibration=True,
))
register_method(CacheMethod(
    name="pyramid_attention_broadcast", config_class_name="PyramidAttentionBroadcastConfig",
    key_params=("spatial_attention_block_skip_range", "cross_attention_block_skip_range",
                "temporal_attention_block_skip_range"),
    nonnegative=("spatial_attention_block_skip_range", "cross_attention_block_skip_range",
                 "temporal_attention_block_skip_range"),
    wired=("current_timestep_callback",),
))
register_method(CacheMethod(
    name="faster_cache", config_class_name="FasterCacheConfig",
    key_params=("spatial_attention_block_skip_range", "unconditional_batch_skip_range"),
    nonnegative=("spatial_attention_block_skip_range", "unconditional_batch_skip_range"),
    wired=("current_timestep_callback",),
))
register_method(CacheMethod(
    name="taylorseer_cache", config_class_name="TaylorSeerCacheConfig",
    key_params=("cache_interval", "max_order", "disable_cache_before_step"),
    nonnegative=("cache_interval", "max_order", "disable_cache_before_step"),
))
register_method(CacheMethod(
    name="sea_cache", config_class_name="SeaCacheConfig",
    key_params=("threshold", "max_consecutive_cached"),
    nonnegative=("threshold", "retention_steps", "cache_end_steps", "max_consecutive_cached"),
    no_op={"threshold": 0.0},
))


def enable_cache(transformer: Any, config: Any) -> Callable[[], None]:
    """Enable `config` on `transformer`; returns the function that removes it again.

    Models with diffusers' CacheMixin use `enable_cache`; others (e.g. SD3's transformer)
    get the hooks through the matching `apply_*` function and the same removal code.
    """
    if hasattr(transformer, "enable_cache"):
        transformer.enable_cache(config)
        return transformer.disable_cache
    import diffusers.hooks as hooks
    from diffusers.models.cache_utils import CacheMixin

    method = next((m for m in METHODS.values() if isinstance(config, m.config_class)), None)
    apply_name = "apply_" + (method.name if method else "")
    if method is None or not hasattr(hooks, apply_name):
        raise TypeError(f"{type(transformer).__name__} has no enable_cache and no diffusers.hooks.{apply_name}")
    getattr(hooks, apply_name)(transformer, config)

    def disable() -> None:
        transformer._cache_config = config  # CacheMixin.disable_cache only reads this and the hook registry
        try:
            CacheMixin.disable_cache(transformer)
        finally:
            del transformer._cache_config

    return disable


def get_method(name: str) -> CacheMethod:
    if name not in METHODS:
        near = difflib.get_close_matches(name, METHODS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else "."
        raise SpecError(f"unknown cache method {name!r}{hint} Known methods: {', '.join(METHODS)}")
    return METHODS[name]


def expand_grid(params: dict[str, Any], sweep: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of the sweep axes, each merged over the fixed params (axis order kept)."""
    keys = list(sweep)
    return [{**params, **dict(zip(keys, combo))} for combo in itertools.product(*(sweep[k] for k in keys))]


def check_method_spec(method_spec: Any, where: str, generation: Any = None) -> None:
    """Validate a spec's method entry against the diffusers config dataclass, without loading a model."""
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
            if key in method.wired and not (key == "mag_ratios" and method.name == "mag_cache"):
                raise SpecError(f"{where}: {group}.{key} is set automatically from the pipeline; remove it")
            if key not in fields:
                near = difflib.get_close_matches(key, settable, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else "."
                raise SpecError(
                    f"{where}: unknown parameter {key!r} for {method.name} ({method.config_class_name}){hint} "
                    f"Valid parameters: {', '.join(settable)}"
                )
    if method.name == "mag_cache" and "mag_ratios" not in method_spec.params and method_spec.calibrate == "never":
        raise SpecError(f"{where}: mag_cache needs params.mag_ratios or calibrate: auto")
    steps = getattr(generation, "num_inference_steps", None) or 28
    for point in expand_grid(method_spec.params, method_spec.sweep):
        for key in method.nonnegative:
            value = point.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise SpecError(f"{where}: {key}={value} is negative; {key} must be >= 0")
        try:
            method.build_config(point, pipe=None, num_inference_steps=steps, mag_ratios=[1.0] * steps)
        except SpecError:
            raise
        except Exception as exc:  # the config's own __post_init__ checks, e.g. SeaCache's residual_order
            raise SpecError(f"{where}: {method.config_class_name}({_fmt(point)}) is invalid: {exc}") from None


def _fmt(point: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in point.items())


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """YAML has no tuples or dtypes: turn lists into tuples and dtype names into torch dtypes where the field wants them."""
    hint = str(f.type)
    if isinstance(value, list) and ("tuple" in hint or isinstance(f.default, tuple)):
        return tuple(value)
    if isinstance(value, str) and "dtype" in hint:
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

