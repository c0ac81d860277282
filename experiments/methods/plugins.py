"""Cache methods from the user's own code: spec ``plugins: [module, ...]`` and the ``repro.methods`` entry points.

Nothing is imported unless a spec or the command line names it. A plugin module registers its
methods at import with :func:`experiments.methods.register_method` (a config dataclass plus
``apply(transformer, config)`` / ``remove(transformer)``, the contract of the built-in methods).
An installed distribution may declare, in its ``pyproject.toml``::

    [project.entry-points."repro.methods"]
    my_cache = "my_package.my_cache"

``repro methods`` lists such entry points without importing them; the module is imported the
first time a spec uses a method of that name.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from contextvars import ContextVar
from typing import Any, Iterator

from experiments.errors import SpecError

GROUP = "repro.methods"
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

_origin: ContextVar[str | None] = ContextVar("repro_plugin_origin", default=None)
_loaded: dict[str, str] = {}  # module -> origin, for `repro methods`


def current_origin() -> str | None:
    """The origin that methods registered right now get (set while a plugin is being imported)."""
    return _origin.get()


@contextlib.contextmanager
def _registering_as(origin: str) -> Iterator[None]:
    token = _origin.set(origin)
    try:
        yield
    finally:
        _origin.reset(token)


def load_plugins(modules: list[str] | tuple[str, ...], where: str = "plugins") -> None:
    """Import each named module (once), so that it registers its methods."""
    for i, module in enumerate(modules):
        if not isinstance(module, str) or not MODULE_NAME.match(module):
            raise SpecError(f"{where}[{i}]: {module!r} is not a Python module name (e.g. my_package.my_cache)")
        if module in _loaded:
            continue
        with _registering_as(f"plugin {module}"):
            try:
                importlib.import_module(module)
            except SpecError as exc:
                raise SpecError(f"{where}[{i}] ({module}): {exc}") from None
            except ImportError as exc:
                raise SpecError(f"{where}[{i}]: cannot import plugin module {module!r}: {exc}. Install it or put "
                                f"its folder on PYTHONPATH") from None
            except Exception as exc:  # the user's module failed at import: say where
                raise SpecError(f"{where}[{i}]: plugin module {module!r} failed at import: "
                                f"{type(exc).__name__}: {exc}") from None
        _loaded[module] = f"plugin {module}"


def entry_points() -> list[dict[str, str]]:
    """Installed ``repro.methods`` entry points: name, target and distribution; nothing is imported."""
    from importlib.metadata import entry_points as installed

    out = []
    for ep in installed(group=GROUP):
        dist = getattr(ep, "dist", None)
        out.append({"name": ep.name, "value": ep.value, "dist": getattr(dist, "name", None) or "?"})
    return sorted(out, key=lambda e: e["name"])


def load_entry_point(name: str) -> bool:
    """Import the entry point called `name`, if one is installed; True if it was found."""
    from importlib.metadata import entry_points as installed

    from experiments.methods.registry import METHODS, CacheMethod, register_method

    for ep in installed(group=GROUP):
        if ep.name != name:
            continue
        dist = getattr(getattr(ep, "dist", None), "name", None) or ep.value
        with _registering_as(f"entry point {dist}"):
            try:
                target: Any = ep.load()
            except Exception as exc:
                raise SpecError(f"cache method {name!r}: its entry point {ep.value!r} ({dist}) failed to load: "
                                f"{type(exc).__name__}: {exc}") from None
            if isinstance(target, CacheMethod):
                register_method(target)
            elif callable(target) and not isinstance(target, type):
                made = target()
                if isinstance(made, CacheMethod):
                    register_method(made)
        if name not in METHODS:
            raise SpecError(f"entry point {name!r} ({ep.value}, {dist}) registered no method called {name!r}")
        return True
    return False

