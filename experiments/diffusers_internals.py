"""Every private diffusers name this project relies on, in one place, checked against the release it was written for.

diffusers' public API (``enable_cache``, ``enable_layerwise_casting``, ``set_attention_backend``,
``enable_group_offload``) applies things but cannot always undo them, read their state, or probe
them without a model. What we need beyond it (the hook registry on each module, hook names,
MagCache's calibration step, the attention backend registry, block identifiers) lives here, so a
diffusers upgrade breaks one module with one clear message instead of many call sites silently.

:data:`TESTED` is the range the test suite covers (``pyproject.toml`` pins the same range). Outside
it, :func:`check_version` warns once; a private name that has moved raises
:class:`DiffusersInternalsChanged` naming it. Nothing here imports diffusers at module import.

Example::

    from experiments import diffusers_internals as di
    hook = di.hook(module, di.layerwise_casting_hook_names()[0])
"""

from __future__ import annotations

import functools
import importlib
import warnings
from typing import Any

#: The diffusers releases this module (and the suite) was written and tested against.
TESTED = (">=0.42.1", "<0.43")


class DiffusersInternalsChanged(RuntimeError):
    """A private diffusers name this project uses is missing from the installed release."""


@functools.lru_cache(maxsize=1)
def check_version() -> str:
    """The installed diffusers version; warns once when it is outside :data:`TESTED`."""
    from importlib.metadata import version

    from packaging.specifiers import SpecifierSet

    installed = version("diffusers")
    if installed not in SpecifierSet(",".join(TESTED)):
        warnings.warn(f"diffusers {installed} is outside the tested range {','.join(TESTED)}; hook internals "
                      "(experiments/diffusers_internals.py) may have changed", RuntimeWarning, stacklevel=3)
    return installed


def private(module: str, name: str) -> Any:
    """`module.name` from diffusers, or DiffusersInternalsChanged saying which name moved."""
    check_version()
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise DiffusersInternalsChanged(
            f"{module}.{name} is not in diffusers {check_version()} (this project was written for "
            f"diffusers{','.join(TESTED)}); install a tested release: pip install 'diffusers{','.join(TESTED)}'"
        ) from None


# -- the hook registry on each module ---------------------------------------------------------------


def hook_registry(module: Any) -> Any:
    """The module's diffusers HookRegistry, or None (diffusers stores it as `_diffusers_hook`)."""
    return getattr(module, "_diffusers_hook", None)


def hook(module: Any, name: str) -> Any:
    registry = hook_registry(module)
    return registry.get_hook(name) if registry is not None else None


def remove_hook(module: Any, name: str, undo_state: bool = True) -> None:
    """Remove one hook from `module` only; `undo_state=False` skips the hook's own deinitialize (which
    diffusers' layerwise casting refuses: fp8 -> original is lossy, the caller restores weights itself)."""
    h = hook(module, name)
    if h is None:
        return
    if not undo_state:
        h.deinitalize_hook = lambda m: m  # (sic: diffusers' spelling)
    hook_registry(module).remove_hook(name, recurse=False)




# -- names of hooks and block kinds -------------------------------------------------------------------


def layerwise_casting_hook_names() -> tuple[str, str]:
    mod = "diffusers.hooks.layerwise_casting"
    return private(mod, "_LAYERWISE_CASTING_HOOK"), private(mod, "_PEFT_AUTOCAST_DISABLE_HOOK")


def group_offloading_hook_names() -> tuple[str, str]:
    mod = "diffusers.hooks.group_offloading"
    return private(mod, "_LAZY_PREFETCH_GROUP_OFFLOADING"), private(mod, "_GROUP_OFFLOADING")


def transformer_block_identifiers() -> tuple[str, ...]:
    return tuple(private("diffusers.hooks._common", "_ALL_TRANSFORMER_BLOCK_IDENTIFIERS"))


def sublayer_classes() -> tuple[type, ...]:
    """Attention and feed-forward classes diffusers' caches treat as units of work."""
    mod = "diffusers.hooks._common"
    return (*private(mod, "_ATTENTION_CLASSES"), *private(mod, "_FEEDFORWARD_CLASSES"))


# -- attention backends -------------------------------------------------------------------------------


def attention_backend_registry() -> Any:
    return private("diffusers.models.attention_dispatch", "_AttentionBackendRegistry")


def check_attention_backend_requirements(backend: Any) -> None:
    """diffusers' own check that a backend's package is installed (raises RuntimeError naming it)."""
    private("diffusers.models.attention_dispatch", "_check_attention_backend_requirements")(backend)


def attention_backend_constraints(backend: Any) -> list[Any]:
    return list(attention_backend_registry()._constraints.get(backend, []))


def active_attention_backend() -> Any:
    return attention_backend_registry()._active_backend


def set_active_attention_backend(backend: Any) -> None:
    attention_backend_registry().set_active_backend(backend)


# -- MagCache calibration -----------------------------------------------------------------------------


def mag_cache_tail_hooks(transformer: Any) -> list[Any]:
    """The MagCache block hooks that end a step (where calibration records a ratio)."""
    name = private("diffusers.hooks.mag_cache", "_MAG_CACHE_BLOCK_HOOK")
    out = []
    for module in transformer.modules():
        h = hook(module, name)
        if h is not None and getattr(h, "is_tail", False):
            out.append(h)
    return out


def record_mag_calibration(h: Any, ratios: dict[str, list[float]]) -> None:
    """Wrap a tail hook's `_perform_calibration_step` to keep each ratio under its CFG branch's context name."""
    if not hasattr(h, "_perform_calibration_step"):
        raise DiffusersInternalsChanged(f"MagCache's block hook has no _perform_calibration_step in diffusers "
                                        f"{check_version()} (written for diffusers{','.join(TESTED)})")
    original = h._perform_calibration_step

    def perform(state, residual):
        original(state, residual)
        context = h.state_manager._context
        ratios.setdefault(context.name if context else "inference", []).append(float(state.calibration_ratios[-1]))

    h._perform_calibration_step = perform


# -- cache contexts (what a pipeline's `transformer.cache_context(...)` sets) --------------------------


def cache_context_class() -> Any:
    """diffusers' CacheContext: the name of a denoising call plus where the loop is (step, sigma, timestep)."""
    return private("diffusers.hooks.hooks", "CacheContext")


def current_cache_context(module: Any) -> Any:
    """The cache context the pipeline set for this call (read from the first stateful hook's state), or None."""
    state_manager = private("diffusers.hooks.hooks", "StateManager")
    registry = hook_registry(module)
    if registry is None:
        return None
    for child in (registry, *registry._get_child_registries()):  # the registries _set_cache_context walks
        for h in child.hooks.values():
            for attr in vars(h).values():
                if isinstance(attr, state_manager) and attr._context is not None:
                    return attr._context
    return None


def set_cache_context(module: Any, context: Any) -> None:
    """Set (None: clear) the cache context on every stateful hook under `module`, as `cache_context` does;
    works on models that are not a CacheMixin (SD3's transformer has no `cache_context`)."""
    private("diffusers.hooks.hooks", "_set_cache_context")(module, context)


def block_metadata(block_class: type) -> Any:
    """diffusers' TransformerBlockMetadata of a block class (raises ValueError if diffusers does not know it)."""
    return private("diffusers.hooks._helpers", "TransformerBlockRegistry").get(block_class)


# -- reading the decisions of diffusers' caches ---------------------------------------------------------


def cache_leader_hook(transformer: Any, method: str) -> Any:
    """The leader (first block) hook of diffusers' First Block Cache or MagCache on `transformer`, or None.

    Its ``state_manager`` holds the per-cache-context state (``should_compute``; MagCache also
    ``accumulated_err``), which is how the decisions of these caches are read after each call."""
    names = {"first_block_cache": ("diffusers.hooks.first_block_cache", "_FBC_LEADER_BLOCK_HOOK"),
             "mag_cache": ("diffusers.hooks.mag_cache", "_MAG_CACHE_LEADER_BLOCK_HOOK")}
    if method not in names:
        return None
    name = private(*names[method])
    for module in transformer.modules():
        h = hook(module, name)
        if h is not None:
            return h
    return None
