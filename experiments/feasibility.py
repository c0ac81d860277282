"""Can this spec run, here? The checks that need the model family or the machine, done at validation.

:class:`~experiments.spec.Spec` checks what a spec says on its own (types, ranges, maxima). This
module checks it against the rest of the world, before any run directory exists:

- the family's shape rules (height/width multiples of the VAE x patch factor, a video's
  ``num_frames`` = k * temporal factor + 1) and the pipeline's own call arguments;
- the devices (``model.device``, ``metrics.device``) exist on this machine;
- ``model.path`` is a diffusers pipeline folder; ``model.pipeline_class`` is a diffusers pipeline
  class and, for a tiny model, the class that model is built with (never silently ignored);
- a lower bound on the memory one generation needs (its decoded frames alone) fits the device.

Example::

    check_feasible(spec, where="configs/wan.yaml")
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from experiments.errors import SpecError
from experiments.untrusted_text import shorten


def check_feasible(spec: Any, where: str) -> None:
    from experiments.pipelines import family_of

    check_model_source(spec.model, where)
    family = family_of(spec.model)
    if family is not None:
        check_shapes(spec.generation, family, where)
    check_pipeline_arguments(spec, family, where)
    device = check_device(spec.model.device, "model.device", where)
    check_device(spec.metrics.device, "metrics.device", where)
    check_memory(spec, family, device, where)


def check_model_source(model: Any, where: str) -> None:
    if model.pipeline_class is not None:
        from experiments.pipelines import check_pipeline_class

        try:
            check_pipeline_class(model.pipeline_class)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None
        if model.tiny:
            from experiments.families import get_family

            built = get_family(model.tiny).pipeline_class
            if model.pipeline_class != built:
                raise SpecError(f"{where}: model.pipeline_class: {shorten(model.pipeline_class)} does not apply to "
                                f"model.tiny {model.tiny!r}, which is built as {built}; remove pipeline_class "
                                f"or set it to {built}")
    if model.tiny:
        from experiments.families import get_family

        try:
            get_family(model.tiny)
        except SpecError as exc:
            raise SpecError(f"{where}: model.tiny: {exc}") from None
    if model.path:
        path = Path(model.path).expanduser()
        if not path.is_dir():
            raise SpecError(f"{where}: model.path: {shorten(model.path)} is not a folder on this machine")
        if not (path / "model_index.json").is_file():
            raise SpecError(f"{where}: model.path: {shorten(model.path)} is not a diffusers pipeline folder "
                            f"(no model_index.json in it)")


def check_shapes(generation: Any, family: Any, where: str) -> None:
    k = family.spatial_multiple
    for name in ("height", "width"):
        value = getattr(generation, name)
        if value is not None and value % k:
            raise SpecError(f"{where}: generation.{name}: {value} is not a multiple of {k} ({family.name}: VAE x "
                            f"patch factor); use {max(k, value // k * k)} or {value // k * k + k}")
    frames = generation.num_frames
    if frames is not None:
        if family.output != "video":
            raise SpecError(f"{where}: generation.num_frames: {family.name} makes images; remove num_frames")
        step = family.frames_step
        if step and frames % step != 1:
            below = max(1, (frames - 1) // step * step + 1)
            raise SpecError(f"{where}: generation.num_frames: {frames} is not k*{step}+1 ({family.name}'s VAE "
                            f"compresses {step} frames into one); use {below} or {below + step}")


def check_pipeline_arguments(spec: Any, family: Any, where: str) -> None:
    """Every generation key must be an argument of the pipeline's __call__ (when the class is known)."""
    from experiments import library_facts

    name = family.pipeline_class if family is not None else spec.model.pipeline_class
    if name is None:
        return
    facts = library_facts.pipeline(name)  # read from diffusers once per installed version (no import here)
    if not facts["exists"] or facts["params"] is None:
        return
    params = facts["params"]
    if facts["var_keyword"]:
        return
    for key in spec.generation.pipeline_kwargs():
        if key not in params:
            accepted = sorted(p for p in params if p not in ("self", "prompt", "generator", "output_type",
                                                            "callback_on_step_end", "return_dict"))
            near = difflib.get_close_matches(key, accepted, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise SpecError(f"{where}: generation.{shorten(key)[1:-1]}: {name} takes no such argument{hint} "
                            f"Accepted: {', '.join(accepted)}"[:900])


def check_device(name: str, field: str, where: str) -> str:
    """The concrete device `name` means here; a device this machine lacks is refused."""
    from experiments.library_facts import cuda_available, mps_available, torch_version

    has_mps = mps_available()
    if name == "auto":
        return "cuda" if cuda_available() else "mps" if has_mps else "cpu"
    if name == "cuda" and not cuda_available():
        raise SpecError(f"{where}: {field}: cuda, but this machine has no CUDA device (torch "
                        f"{torch_version()}); use auto or cpu")
    if name == "mps" and not has_mps:
        raise SpecError(f"{where}: {field}: mps, but MPS is not available here; use auto or cpu")
    return name


def device_memory_bytes(device: str) -> int:
    """Total memory of `device`: the GPU's own, or this machine's RAM for cpu/mps."""
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(spec: Any, family: Any, device: str, where: str) -> None:
    """Refuse a generation whose decoded frames alone cannot fit (a lower bound: weights and activations come on top)."""
    g = spec.generation
    defaults = family.defaults if family is not None else {}
    height, width = g.height or defaults.get("height"), g.width or defaults.get("width")
    if height is None or width is None:
        return
    video = family is not None and family.output == "video"
    frames = g.num_frames or (defaults.get("num_frames", 1) if video else 1)
    pixels = frames * height * width * 3
    # float32 frames on the device (the VAE's output), float32 numpy on the host, one uint8 copy per timed repeat
    on_device = pixels * 4
    on_host = pixels * (4 + spec.timing.repeats) + (on_device if device != "cuda" else 0)
    budgets = [("RAM", on_host, device_memory_bytes("cpu"))]
    if device == "cuda":
        budgets.append(("GPU memory", on_device, device_memory_bytes("cuda")))
    for what, need, have in budgets:
        if need > have:
            raise SpecError(f"{where}: generation: {frames} frame(s) of {height}x{width} need at least {_gib(need)} "
                            f"of {what} for the decoded frames alone, and this machine has {_gib(have)}; lower "
                            f"num_frames, height or width")


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"
