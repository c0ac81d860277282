"""The model-family registry: what each diffusers pipeline family needs, and its tiny offline twin.

Every module in this package (except the private helpers listed in ``_NOT_FAMILIES``) describes one
family and calls :func:`register_family` at import; the package finds them with
``pkgutil.iter_modules``, so adding a family means adding one file.

Importing this package is cheap: torch, diffusers and transformers are only imported inside each
family's ``build_tiny``.

Example::

    from experiments.families import get_family
    fam = get_family("wan")
    pipe = fam.build_tiny()
    frames = pipe("a cat", **fam.tiny_generation, generator=torch.Generator().manual_seed(0)).frames[0]
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from experiments.errors import SpecError
from experiments.methods.registry import builtin_names, library_names

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import DiffusionPipeline

__all__ = [
    "LIBRARY_METHODS",
    "METHODS",
    "Family",
    "MethodSupport",
    "STATUSES",
    "all_families",
    "family_for",
    "get_family",
    "register_family",
]

# Every built-in cache method (diffusers' six and the project's own) that each family states its
# support for: the method registry's names, so adding a method there asks every family about it.
METHODS = builtin_names()
# Methods of other caching libraries the project registers (cache-dit's): each family states them too.
LIBRARY_METHODS = library_names()

#: "n/a": the method is defined for another model (its official code is written for one architecture); it may
#: well run here, but what ran would not be the method, so a spec naming it is refused and the probe skips it
Status = Literal["supported", "unsupported", "untested", "n/a"]
STATUSES: tuple[str, ...] = ("supported", "unsupported", "untested", "n/a")


@dataclass(frozen=True)
class MethodSupport:
    """Whether a cache method works on a family, why not, and fixed params it needs there."""

    status: Status
    reason: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"MethodSupport.status must be one of {'/'.join(STATUSES)}, got {self.status!r}")
        if self.status != "supported" and not self.reason:
            raise ValueError(f"MethodSupport({self.status!r}) needs a reason")

    @property
    def applicable(self) -> bool:
        return self.status != "n/a"


def supported(reason: str = "", **extra: Any) -> MethodSupport:
    return MethodSupport("supported", reason, dict(extra))


def unsupported(reason: str, **extra: Any) -> MethodSupport:
    return MethodSupport("unsupported", reason, dict(extra))


def untested(reason: str, **extra: Any) -> MethodSupport:
    return MethodSupport("untested", reason, dict(extra))


def not_applicable(reason: str) -> MethodSupport:
    return MethodSupport("n/a", reason)


#: MagCache's evaluation script (magcache_official_eval) is written for Wan2.1 only
MAGCACHE_EVAL_WAN21_ONLY = not_applicable(
    "MagCache's evaluation script (the source of its Table 1) exists for Wan2.1 only: two transformer calls per "
    "step with one interleaved ratio list; on this model use mag_cache")

#: diffusers' lossless text K/V cache hooks one block class of one model (NucleusMoE-Image) only
TEXT_KV_CACHE_ONLY_NUCLEUS = unsupported(
    "TextKVCacheConfig hooks NucleusMoEImageTransformerBlock only (diffusers.hooks.text_kv_cache."
    "apply_text_kv_cache); this transformer has none, so it would run as a no-op")


def cache_dit_methods(pipeline: str, **overrides: MethodSupport) -> dict[str, MethodSupport]:
    """Every cache-dit method as supported through cache-dit's own block adapter for `pipeline` (overridable)."""
    found = {m: supported(f"cache-dit's block adapter for {pipeline}") for m in LIBRARY_METHODS}
    return {**found, **overrides}


@dataclass(frozen=True)
class Family:
    """One diffusers pipeline family: its real-model defaults, its cache support and its tiny twin."""

    name: str
    pipeline_class: str
    transformer_class: str
    output: Literal["image", "video"]
    # How classifier-free guidance runs: one batched transformer call per step, two separate calls
    # (cond, then uncond: MagCache calibration prints two ratio arrays), guidance-distilled, or none.
    cfg: Literal["batched", "separate", "distilled", "none"]
    hub_ids: tuple[str, ...]
    dtype: str
    component_dtypes: dict[str, str]
    defaults: dict
    tiny_generation: dict
    methods: dict[str, MethodSupport]
    build_tiny: Callable[[], "DiffusionPipeline"]
    # The pipeline sets `pipe.current_timestep` during denoising (PAB / FasterCache callbacks read it).
    current_timestep: bool = True
    notes: str = ""
    # Shape rules of the pipeline (its VAE and patch factors): height and width are multiples of
    # `spatial_multiple`; a video's num_frames is k * `frames_step` + 1 (the causal VAE's temporal factor).
    spatial_multiple: int = 16
    frames_step: int | None = None
    # What the pipeline does not provide to cache hooks, supplied around each call (experiments/families/adapters.py).
    adapter: Any = None

    def __post_init__(self):
        stated = (*METHODS, *LIBRARY_METHODS)
        missing = [m for m in stated if m not in self.methods]
        unknown = [m for m in self.methods if m not in stated]
        if missing or unknown:
            raise ValueError(f"family {self.name!r}: methods must cover exactly {stated}; missing {missing}, unknown {unknown}")
        if self.output not in ("image", "video"):
            raise ValueError(f"family {self.name!r}: output must be image or video")
        if self.cfg not in ("batched", "separate", "distilled", "none"):
            raise ValueError(f"family {self.name!r}: bad cfg {self.cfg!r}")
        if not self.hub_ids:
            raise ValueError(f"family {self.name!r}: give at least one hub id")

    @property
    def hub_id(self) -> str:
        """The default (first) hub repository."""
        return self.hub_ids[0]

    def supports(self, method: str) -> bool:
        ms = self.methods.get(method)
        return ms is not None and ms.status == "supported"


_REGISTRY: dict[str, Family] = {}
_NOT_FAMILIES = {"tiny_parts", "matrix"}
_discovered = False


def register_family(family: Family) -> Family:
    """Add (or replace) a family in the registry; returns it so modules can keep a handle."""
    _REGISTRY[family.name] = family
    return family


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _NOT_FAMILIES:
            continue
        importlib.import_module(f"{__name__}.{info.name}")


def all_families() -> dict[str, Family]:
    """Every registered family by name (sorted)."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_family(name: str) -> Family:
    """The family called `name`; an unknown name raises SpecError listing the known ones."""
    fams = all_families()
    if name in fams:
        return fams[name]
    key = name.strip().lower().replace("-", "_")
    if key in fams:
        return fams[key]
    known = sorted(fams)
    near = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise SpecError(f"unknown model family {name!r}{hint} Known families: {', '.join(known)}")


def family_for(pipeline_or_class_name: Any) -> Family | None:
    """The family whose pipeline class matches a pipeline object, a pipeline class or a class name."""
    obj = pipeline_or_class_name
    if isinstance(obj, str):
        names = [obj]
    else:
        cls = obj if isinstance(obj, type) else type(obj)
        names = [c.__name__ for c in cls.__mro__]
    fams = all_families()
    for n in names:
        found = [fam for fam in fams.values() if fam.pipeline_class == n]
        if len(found) > 1 and not isinstance(obj, (str, type)):
            # families sharing a pipeline class (Wan 2.1, Wan 2.2) differ by their further experts: the loaded
            # pipeline belongs to the one with the most experts it actually has
            def experts(fam: Family) -> tuple[str, ...]:
                return fam.adapter.experts if fam.adapter is not None else ()

            found = sorted((f for f in found if all(getattr(obj, e, None) is not None for e in experts(f))),
                           key=lambda f: -len(experts(f)))
        if found:
            return found[0]
    return None
