"""Axis ``layerwise_casting``: weights stored in fp8, upcast per layer for its forward.

Refused at validation when a probe fails (a Linear layer stored in the fp8 dtype, upcast on the
run's device). On CPU it works (torch 2.14: fp8 storage + upcast is supported; it saves memory, it is
not faster), so it is allowed there.

Apply: ``transformer.enable_layerwise_casting(storage_dtype=fp8, compute_dtype=<the transformer's
dtype>)``. Undo: the casting hooks are removed (diffusers itself refuses to undo them, so their
deinitialize step is skipped) and every tensor that changed dtype gets its original values back
from a copy kept on the CPU (an alias when the model is on the CPU): fp8 is lossy, so casting back
would not restore the weights.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from experiments import diffusers_internals as di
from experiments.optimizations.axis import Axis, register_axis
from experiments.optimizations.problems import one_line

STORAGE_DTYPES = ("float8_e4m3fn", "float8_e5m2")


def layerwise_casting_problem(storage: Any, device: str, dtype: str = "float32") -> str | None:
    import torch

    storage_dtype = getattr(torch, str(storage), None)
    if not isinstance(storage_dtype, torch.dtype):
        return f"this torch ({torch.__version__}) has no dtype {storage}"
    try:
        from diffusers.hooks.layerwise_casting import apply_layerwise_casting_hook

        layer = torch.nn.Linear(16, 16).to(device=device, dtype=getattr(torch, dtype))
        apply_layerwise_casting_hook(layer, storage_dtype, getattr(torch, dtype), False)
        out = layer(torch.randn(2, 16, device=device, dtype=getattr(torch, dtype)))
        if not torch.isfinite(out).all():
            return f"a layer stored in {storage} gives non-finite output on {device}"
    except Exception as exc:
        return f"storing weights in {storage} and upcasting to {dtype} fails on {device}: {one_line(exc)}"
    return None


@contextlib.contextmanager
def layerwise_casting(transformer: Any, storage: str) -> Iterator[None]:
    """fp8 storage, upcast per layer; undo restores the exact original tensors (kept on the CPU)."""
    import torch

    names = di.layerwise_casting_hook_names()
    if any(di.hook(m, names[0]) for m in transformer.modules()):
        raise RuntimeError("layerwise casting is already enabled on this transformer; load it without it")
    originals = {name: (t.detach() if t.device.type == "cpu" else t.detach().to("cpu", copy=True))
                 for name, t in _named_tensors(transformer)}
    try:
        transformer.enable_layerwise_casting(storage_dtype=getattr(torch, storage), compute_dtype=transformer.dtype)
        originals = {n: t for n, t in originals.items() if _tensor(transformer, n).dtype != t.dtype}
        yield
    finally:
        for module in transformer.modules():
            for name in reversed(names):  # the PEFT autocast hook first, then the casting hook
                di.remove_hook(module, name, undo_state=False)  # fp8 -> original is lossy; restored below
        for name, original in originals.items():
            tensor = _tensor(transformer, name)
            if tensor.dtype != original.dtype:
                tensor.data = original.to(tensor.device)


def _apply(pipe: Any, value: Any, warm: Callable[[], None], info: dict) -> Any:
    return layerwise_casting(pipe.transformer, value)


def _named_tensors(module: Any) -> Iterator[tuple[str, Any]]:
    yield from module.named_parameters(remove_duplicate=False)
    yield from module.named_buffers(remove_duplicate=False)


def _tensor(root: Any, name: str) -> Any:
    owner_name, _, attr = name.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    return owner._parameters[attr] if attr in owner._parameters else owner._buffers[attr]


AXIS = register_axis(Axis(
    name="layerwise_casting", default="none", check=layerwise_casting_problem, apply=_apply, apply_rank=10,
    choices=("none", *STORAGE_DTYPES), doc="fp8 weight storage with per-layer upcast",
))
