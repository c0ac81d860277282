"""Loading a diffusers pipeline from a spec: hub id, local folder, a tiny family built in code, or
the trained offline reference model shipped in ``experiments/reference``.

Hub ids resolve through the standard Hugging Face cache (``HF_HOME``) and honour
``HF_HUB_OFFLINE``; when the weights are not there, :class:`ModelUnavailable` says which
model is missing and how to fetch it. Remote code runs only when the spec sets
``model.trust_remote_code: true``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from experiments.errors import ModelUnavailable, SpecError

__all__ = ["ModelUnavailable", "load_pipeline", "resolve_device", "check_model_available", "fetch_model", "family_of"]


def resolve_device(name: str) -> str:
    """`auto` = cuda > mps > cpu; an explicit device that is absent is an error, not a silent fallback."""
    import torch

    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError("model.device: cuda was requested but no CUDA device is available (use auto or cpu)")
    if name == "mps" and not has_mps:
        raise SpecError("model.device: mps was requested but is not available (use auto or cpu)")
    return name


def load_pipeline(model: Any) -> Any:
    """Build or load the pipeline of `model` (a ModelSpec), cast per-component dtypes, move it to its device."""
    import torch

    device = resolve_device(model.device)
    if model.tiny:
        from experiments.families import get_family

        pipe = get_family(model.tiny).build_tiny()  # float32, random weights from a fixed seed
        if model.dtype != "float32":
            pipe = pipe.to(getattr(torch, model.dtype))
    elif model.reference:
        from experiments.reference import load_reference

        pipe = load_reference(model.reference)  # float32, trained weights checked against their manifest
        if model.dtype != "float32":
            pipe = pipe.to(getattr(torch, model.dtype))
    else:
        pipe = _from_pretrained(model)
    for component, dtype in model.component_dtypes.items():
        module = getattr(pipe, component, None)
        if not isinstance(module, torch.nn.Module):
            names = sorted(k for k, v in pipe.components.items() if isinstance(v, torch.nn.Module))
            raise SpecError(f"model.component_dtypes: pipeline has no component {component!r}; components: {', '.join(names)}")
        module.to(getattr(torch, dtype))
    if model.scheduler:
        pipe.scheduler = scheduler_with(pipe.scheduler, model.scheduler)
    if model.vae_tiling and hasattr(pipe, "vae") and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def scheduler_with(scheduler: Any, overrides: dict[str, Any]) -> Any:
    """A new scheduler of the same class with `overrides` applied to its config (e.g. {"flow_shift": 5.0})."""
    settings = {k for k in scheduler.config if not k.startswith("_")}
    unknown = sorted(set(overrides) - settings)
    if unknown:
        import difflib

        near = difflib.get_close_matches(unknown[0], sorted(settings), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else "."
        raise SpecError(f"model.scheduler: {type(scheduler).__name__} has no setting {unknown[0]!r}{hint} "
                        f"Its settings: {', '.join(sorted(settings))}")
    return type(scheduler).from_config(scheduler.config, **overrides)


def pipeline_class(name: str | None) -> Any:
    import diffusers

    if name is None:
        return diffusers.DiffusionPipeline
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise SpecError(f"model.pipeline_class: diffusers has no pipeline class {name!r} (e.g. WanPipeline, FluxPipeline)")
    return cls


def _from_pretrained(model: Any) -> Any:
    import torch

    cls = pipeline_class(model.pipeline_class)
    kwargs: dict[str, Any] = {_dtype_kwarg(): getattr(torch, model.dtype)}
    if model.revision:
        kwargs["revision"] = model.revision
    if model.trust_remote_code:
        kwargs["trust_remote_code"] = True
    if model.path:
        path = Path(model.path)
        if not (path / "model_index.json").is_file():
            raise SpecError(f"model.path: {path} is not a diffusers pipeline folder (no model_index.json)")
        return cls.from_pretrained(str(path), local_files_only=True, **kwargs)
    try:
        return cls.from_pretrained(model.id, **kwargs)
    except Exception as exc:
        hub = _hub_error(exc)
        if hub is None:
            raise  # not the hub's: a broken snapshot, a bad component, ... surfaces as itself
        from huggingface_hub import errors as hub_errors

        if isinstance(hub, hub_errors.RevisionNotFoundError):
            raise SpecError(f"model.revision: {model.revision!r} does not exist for {model.id!r} on the hub") from exc
        if isinstance(hub, hub_errors.RepositoryNotFoundError):
            raise SpecError(f"model.id: {model.id!r} is not a model on the hub (check the spelling; a private or "
                            f"gated model needs `hf auth login`)") from exc
        raise ModelUnavailable(missing_model_message(model.id, model.revision)) from exc


def _dtype_kwarg() -> str:
    # diffusers renamed `torch_dtype` to `dtype` (0.40); older releases only know the former
    from importlib.metadata import version

    from packaging.version import Version

    return "dtype" if Version(version("diffusers")) >= Version("0.40") else "torch_dtype"


def missing_model_message(model_id: str, revision: str | None = None) -> str:
    offline = _hub_offline()
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
    why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub could not be reached"
    refs = Path(os.path.expanduser(cache)) / f"models--{model_id.replace('/', '--')}" / "refs"
    cached = sorted(p.name for p in refs.iterdir()) if refs.is_dir() else []
    if revision and cached:  # the model is here, the revision is not: say so (it may be a typo)
        return (f"model.revision: {revision!r} of {model_id!r} is not in the Hugging Face cache ({cache}); cached "
                f"revisions: {', '.join(cached)}; and {why}. Check the revision, or fetch it on a machine with "
                f"internet: `hf download {model_id} --revision {revision}`, then point HF_HOME at that cache.")
    return (
        f"model {model_id!r} is not in the Hugging Face cache ({cache}) and {why}. "
        f"Fetch it on a machine with internet: `repro fetch-weights SPEC` (or `hf download {model_id}`), "
        f"then point HF_HOME at that cache."
    )


def _hub_offline() -> bool:
    # one parser for the whole project, in metrics (which may not import experiments; the reverse is fine)
    from metrics.weights import offline

    return offline()


def check_model_available(model: Any) -> None:
    """Raise ModelUnavailable early when a hub model is not cached and the hub is switched off,
    or when the shipped reference weights do not match their manifest.

    Catches the common offline case before a run directory is made; anything else
    (a hub that cannot be reached, a broken snapshot) still surfaces when the pipeline loads.
    """
    if model.reference:
        from experiments.reference import ReferenceUnavailable, check_weights

        try:
            check_weights(model.reference)
        except ReferenceUnavailable as exc:
            raise ModelUnavailable(str(exc)) from None
        return
    if not model.id or not _hub_offline():
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(model.id, "model_index.json", revision=model.revision), str):
        raise ModelUnavailable(missing_model_message(model.id, model.revision))


def _hub_error(exc: BaseException) -> BaseException | None:
    """The huggingface_hub error behind `exc` (diffusers wraps it in an OSError), if the hub is the cause:
    offline and not cached, hub unreachable, repository or revision not found. None for anything else, so
    only the hub's own "not here" errors become ModelUnavailable (exit 3)."""
    from huggingface_hub import errors as hub_errors

    kinds = (hub_errors.OfflineModeIsEnabled, hub_errors.LocalEntryNotFoundError,
             hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError)
    # the hub cannot be reached (connect, timeout, proxy): the HTTP client's transport errors
    http_client = importlib.import_module(hub_errors.HfHubHTTPError.__mro__[1].__module__.partition(".")[0])
    kinds = (*kinds, *[getattr(http_client, "TransportError")] * hasattr(http_client, "TransportError"))
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, kinds):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def fetch_model(model: Any) -> str:
    """Download a hub model into the standard cache ahead of time; returns the local snapshot folder."""
    if model.reference:
        from experiments.reference import RETRAIN, reference_folder

        return (f"{reference_folder(model.reference)} (reference:{model.reference}: shipped in the repository or "
                f"trained by `{RETRAIN}`, nothing to fetch)")
    if not model.id:
        return model.path or f"tiny:{model.tiny} (built in code, nothing to fetch)"
    from huggingface_hub import snapshot_download

    return snapshot_download(model.id, revision=model.revision)


def family_of(model: Any, pipe: Any = None) -> Any:
    """The registered family of a model spec (tiny name, pipeline class, hub id or loaded pipeline), or None."""
    from experiments.families import all_families, family_for, get_family

    if model.tiny:
        return get_family(model.tiny)
    if model.reference:
        from experiments.reference import reference_family

        return get_family(reference_family(model.reference))
    if model.pipeline_class:
        found = family_for(model.pipeline_class)
        if found:
            return found
    if model.id:
        for family in all_families().values():
            if model.id in family.hub_ids:
                return family
    return family_for(pipe) if pipe is not None else None
