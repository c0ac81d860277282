"""Cache methods: the registry (``registry.py``), diffusers' caches (``diffusers_caches.py``),
the project's own TeaCache (``teacache.py``) and EasyCache (``easycache.py``), the residual-reuse
hooks they share (``residual_hooks.py``), cache-dit's methods (``cache_dit.py``, optional), and
methods from the user's code (``plugins.py``).

A method is a config dataclass plus ``apply(transformer, config)`` / ``remove(transformer)``;
:func:`enable_cache` is the one path that turns any of them on and back off.
"""

from experiments.methods.plugins import load_plugins
from experiments.methods.registry import (
    METHODS,
    CacheMethod,
    all_methods,
    builtin_names,
    check_method_spec,
    enable_cache,
    expand_grid,
    get_method,
    register_method,
)

__all__ = ["METHODS", "CacheMethod", "all_methods", "builtin_names", "check_method_spec", "enable_cache",
           "expand_grid", "get_method", "load_plugins", "register_method"]
