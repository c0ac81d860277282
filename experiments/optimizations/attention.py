"""Axis ``attention_backend``: diffusers' attention dispatcher backends (``native`` = torch SDPA).

Refused at validation: a name that is not a value of diffusers' ``AttentionBackendName``; a backend
whose package is missing (diffusers' own requirement check: ``flash`` needs ``flash_attn``, ``sage``
needs ``sageattention``, ``*_hub`` need ``kernels``, ...); a backend that fails a probe (diffusers'
constraints for it plus one tiny attention call on the run's device in the transformer's dtype,
e.g. ``_native_flash`` in float32, ``_native_cudnn`` or ``_native_efficient`` on CPU). Hub backends
are not probed (that would download a kernel).

Apply: ``transformer.set_attention_backend(name)``; undo restores each processor's previous backend
and diffusers' process-wide active backend.
"""

from __future__ import annotations

import contextlib
import difflib
import warnings
from typing import Any, Callable, Iterator

from experiments import diffusers_internals as di
from experiments.optimizations.axis import Axis, register_axis
from experiments.optimizations.problems import one_line


def attention_backend_problem(name: Any, device: str, dtype: str = "float32") -> str | None:
    import torch
    from diffusers.models import attention_dispatch as ad

    valid = sorted(b.value for b in ad.AttentionBackendName)
    if str(name).lower() not in valid:
        near = difflib.get_close_matches(str(name).lower(), valid, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return f"is not a diffusers attention backend{hint} Valid names: {', '.join(valid)}"
    backend = ad.AttentionBackendName(str(name).lower())
    try:
        di.check_attention_backend_requirements(backend)
    except di.DiffusersInternalsChanged:
        raise
    except Exception as exc:  # diffusers raises RuntimeError naming the missing package
        return one_line(exc)
    if backend.value.endswith("_hub"):
        return None  # probing would download the kernel; a missing kernel fails that generation instead
    try:
        q = torch.randn(1, 8, 2, 16, device=device, dtype=getattr(torch, dtype))
        kwargs = dict(query=q, key=q, value=q, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False, _parallel_config=None)
        for check in di.attention_backend_constraints(backend):
            check(**kwargs)
        with warnings.catch_warnings():  # e.g. flex without compile: "unfused implementation" (fine for a probe)
            warnings.simplefilter("ignore")
            ad.dispatch_attention_fn(q, q, q, backend=backend)
    except Exception as exc:
        return f"a {dtype} attention call on {device} fails: {one_line(exc)}"
    return None


@contextlib.contextmanager
def attention_backend(transformer: Any, name: str) -> Iterator[None]:
    active = di.active_attention_backend()
    processors = [(p, p._attention_backend) for p in _processors(transformer)]
    try:
        with _quiet_diffusers():  # "Attention backends are an experimental feature" on every call
            transformer.set_attention_backend(str(name).lower())
        yield
    finally:
        for processor, backend in processors:
            processor._attention_backend = backend
        di.set_active_attention_backend(active)


def _apply(pipe: Any, value: Any, warm: Callable[[], None], info: dict) -> Any:
    return attention_backend(pipe.transformer, value)


def _processors(transformer: Any) -> list[Any]:
    seen, out = set(), []
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_attention_backend") and id(processor) not in seen:
            seen.add(id(processor))
            out.append(processor)
    return out


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        yield
    finally:
        dlogging.set_verbosity(level)


AXIS = register_axis(Axis(
    name="attention_backend", default="native", check=attention_backend_problem, apply=_apply, apply_rank=20,
    doc="a diffusers attention backend name (AttentionBackendName), e.g. native, flash, sage, flex",
))
