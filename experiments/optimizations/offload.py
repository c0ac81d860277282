"""Axis ``offload``: keep weights in host memory and move them to the accelerator when needed.

``model`` / ``sequential`` (accelerate) and ``group`` (diffusers, leaf level, streams on CUDA) move
weights between host memory and an accelerator: refused unless the run's device is CUDA
(``model``/``sequential`` also need ``accelerate``). Undo removes the hooks and moves every
component back to the device it was on.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from experiments import diffusers_internals as di
from experiments.optimizations.axis import Axis, register_axis

MODES = ("model", "sequential", "group")


def offload_problem(mode: Any, device: str, dtype: str = "float32") -> str | None:
    if mode not in MODES:
        return "is not an offload mode; expected one of none, model, sequential, group"
    if not str(device).startswith("cuda"):
        return ("CPU offloading moves weights between host memory and an accelerator; it needs CUDA "
                f"and this run's device is {device}")
    if mode in ("model", "sequential"):
        from diffusers.utils import is_accelerate_available

        if not is_accelerate_available():
            return f"enable_{mode}_cpu_offload needs the accelerate package (pip install accelerate)"
    return None


@contextlib.contextmanager
def offloaded(pipe: Any, mode: str) -> Iterator[None]:
    """Model / sequential (accelerate) or group (diffusers) offloading to the pipeline's device; undone after."""
    import torch

    device = torch.device(pipe._execution_device if hasattr(pipe, "_execution_device") else pipe.device)
    modules = {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}
    placed = {k: _device_of(v) for k, v in modules.items()}
    own_forward = {m for v in modules.values() for m in v.modules() if "forward" in m.__dict__}
    try:
        if mode == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif mode == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        elif mode == "group":
            pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                      offload_type="leaf_level", use_stream=device.type == "cuda")
        else:
            raise ValueError(f"offload must be none, model, sequential or group, got {mode!r}")
        yield
    finally:
        if mode in ("model", "sequential"):
            pipe.remove_all_hooks()
        else:
            names = di.group_offloading_hook_names()
            for module in modules.values():
                for sub in module.modules():
                    for name in names:
                        di.remove_hook(sub, name)
        for name, module in modules.items():
            for sub in module.modules():
                if sub not in own_forward:  # removing a hook leaves the plain bound forward behind
                    _drop_plain_forward(sub)
            if placed[name] is not None:
                module.to(placed[name])


def _apply(pipe: Any, value: Any, warm: Callable[[], None], info: dict) -> Any:
    return offloaded(pipe, value)


def _drop_plain_forward(module: Any) -> None:
    forward = module.__dict__.get("forward")
    if getattr(forward, "__self__", None) is module and getattr(forward, "__func__", None) is type(module).forward:
        del module.forward


def _device_of(module: Any) -> Any:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return None


AXIS = register_axis(Axis(
    name="offload", default="none", check=offload_problem, apply=_apply, apply_rank=30,
    choices=("none", *MODES), doc="CPU offloading (CUDA only)",
))
