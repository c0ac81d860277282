"""What a pipeline must provide for a cache hook, supplied where a diffusers pipeline does not.

diffusers' caches read everything about "where the denoising loop is" from the pipeline: a cache
context per CFG branch (``transformer.cache_context("cond")``), the step index, sigma and step
count inside it (SeaCache), ``pipe.current_timestep`` (Pyramid Attention Broadcast, FasterCache),
and blocks whose input is named ``hidden_states`` (First Block Cache). Several pipelines leave
some of it out, so a cache that would work on the model never gets the chance. A family declares
a :class:`PipelineAdapter` naming what its pipeline lacks; :func:`adapted` supplies it around every
transformer call for as long as a cache (or its calibration) runs, without copying the pipeline:

* ``branches``: the pipeline enters no cache context (SD3, Kandinsky 5): each transformer call
  gets one, named by its place within the step (``("cond", "uncond")``).
* ``step_metadata``: the context carries no step index, sigma or step count (Flux, CogView4,
  HunyuanVideo, LTX): they are added, read from the scheduler, the same values WanPipeline passes
  (``pipeline_wan.py``: ``step_index=i, sigma=float(self.scheduler.sigmas[i]),
  num_inference_steps=self._num_timesteps``).
* ``current_timestep``: the pipeline keeps no ``current_timestep`` (SD3, Kandinsky 5): it is set to
  the scheduler's timestep of the step for the duration of each transformer call.
* ``hidden_states_alias``: a block names its input otherwise (Kandinsky 5's ``visual_embed``) and a
  hook asks for ``"hidden_states"`` by name (diffusers' First Block Cache does): the name is aliased
  to the input's position in diffusers' block metadata.
* ``encoder_passthrough``: a block returns ``None`` for the text stream it no longer needs (SD3's last
  ``JointTransformerBlock``, ``context_pre_only``) where block-skipping hooks expect a tensor to take
  a residual of: the block's text input is returned instead (the transformer discards it after the
  last block, so the output is unchanged).
* ``experts``: further transformers the pipeline switches to (Wan 2.2's ``transformer_2``, the
  low-noise expert); :func:`experiments.methods.registry.enable_cache` enables the same cache on them.

Everything is undone when the last :func:`adapted` exits; a pipeline without an adapter is left alone.
Importing this module is cheap (torch and diffusers are imported inside the functions).

Example::

    disable = enable_cache(pipe.transformer, config, pipe=pipe)  # enters adapted(pipe) until disable()
    pipe(prompt, ...)
    disable()
    with adapted(pipe):  # around a calibration, whose passes enable the cache themselves
        values = method.calibrate(pipe.transformer, passes, num_inference_steps, params)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class PipelineAdapter:
    """What one family's pipeline does not provide to cache hooks (see the module docstring)."""

    branches: tuple[str, ...] = ()
    step_metadata: bool = False
    current_timestep: bool = False
    hidden_states_alias: tuple[str, ...] = ()  # block classes as "module:Class"
    encoder_passthrough: tuple[str, ...] = ()  # block classes as "module:Class"
    experts: tuple[str, ...] = ()  # pipeline attributes of further transformers
    #: ``expert_steps(pipe, num_inference_steps) -> [steps of pipe.transformer, steps of each expert]``, in the
    #: order the pipeline runs them (a cache that counts steps itself runs once per expert over its own share)
    expert_steps: Callable[[Any, int], list[int]] | None = None

    @property
    def wraps_calls(self) -> bool:
        return bool(self.branches or self.step_metadata or self.current_timestep)


def adapter_of(pipe: Any) -> PipelineAdapter | None:
    from experiments.families import family_for

    family = family_for(pipe)
    return family.adapter if family is not None else None


def experts_of(pipe: Any) -> list[Any]:
    """The further transformers a cache on `pipe.transformer` is also enabled on (Wan 2.2's low-noise expert)."""
    adapter = adapter_of(pipe) if pipe is not None else None
    return [t for name in (adapter.experts if adapter else ()) if (t := getattr(pipe, name, None)) is not None]


def pipeline_of(transformer: Any) -> Any:
    """The pipeline whose :func:`adapted` is active around `transformer` (None outside one)."""
    return getattr(transformer, "_repro_pipeline", None)


def wan_expert_steps(pipe: Any, num_inference_steps: int) -> list[int]:
    """Wan 2.2's split: `transformer` runs the steps with t >= boundary_ratio * num_train_timesteps, then
    `transformer_2` the rest (pipeline_wan.py, the denoising loop); counted on a copy of the scheduler."""
    import copy

    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(num_inference_steps, device="cpu")
    boundary = pipe.config.boundary_ratio * scheduler.config.num_train_timesteps
    high = int(sum(float(t) >= boundary for t in scheduler.timesteps))
    return [high, len(scheduler.timesteps) - high]


def step_position(scheduler: Any) -> tuple[int, int, float | None, Any]:
    """(step index, step count, sigma, timestep) of the step the denoising loop is in, from the scheduler.

    Schedulers count their own steps: ``step_index`` is None until the first ``step()`` (then the
    loop is at ``begin_index``, 0 unless the pipeline set one) and advances by one per ``step()``.
    """
    timesteps = scheduler.timesteps
    index = scheduler.step_index
    if index is None:
        index = getattr(scheduler, "begin_index", None) or 0
    sigmas = getattr(scheduler, "sigmas", None)
    sigma = float(sigmas[index]) if sigmas is not None and index < len(sigmas) else None
    return int(index), len(timesteps), sigma, timesteps[index] if index < len(timesteps) else None


class _CallContexts:
    """Forward hooks on one transformer that set the cache context (and current timestep) of each call."""

    def __init__(self, pipe: Any, adapter: PipelineAdapter):
        self.pipe = pipe
        self.adapter = adapter
        self.step: int | None = None
        self.calls_in_step = 0
        self.saved: list[tuple[Any, Any]] = []

    def before(self, module: Any, args: tuple, kwargs: dict) -> None:
        from experiments import diffusers_internals as di

        index, steps, sigma, timestep = step_position(self.pipe.scheduler)
        self.calls_in_step = self.calls_in_step + 1 if index == self.step else 0
        self.step = index
        previous = di.current_cache_context(module)
        if previous is not None:
            name = previous.name  # the pipeline's own branch name ("cond", "cond_uncond")
        else:
            k = self.calls_in_step
            name = self.adapter.branches[k] if k < len(self.adapter.branches) else f"call{k}"
        # a context of our own where the pipeline set none, or the pipeline's with the loop's position added
        changes = (previous is None and bool(self.adapter.branches)) or (previous is not None and self.adapter.step_metadata)
        if changes:
            fields = dict(step_index=index, sigma=sigma, num_inference_steps=steps, timestep=timestep) \
                if self.adapter.step_metadata else {}
            di.set_cache_context(module, di.cache_context_class()(name, **fields))
        old_timestep = self.pipe.__dict__.get("_current_timestep", _MISSING)
        if self.adapter.current_timestep:
            self.pipe._current_timestep = timestep
        self.saved.append((changes, previous, old_timestep))

    def after(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        from experiments import diffusers_internals as di

        if not self.saved:
            return
        changed, previous, old_timestep = self.saved.pop()
        if changed:
            di.set_cache_context(module, previous)  # the pipeline's context back (or none, as before the call)
        if self.adapter.current_timestep:
            if old_timestep is _MISSING:
                self.pipe.__dict__.pop("_current_timestep", None)
            else:
                self.pipe._current_timestep = old_timestep


_MISSING = object()


def _block_class(path: str) -> type:
    import importlib

    module_name, _, name = path.partition(":")
    return getattr(importlib.import_module(module_name), name)


class _EncoderPassthrough:
    """A block's ``forward`` that returns its text input where the block returns None for it."""

    def __init__(self, block: Any, forward: Callable):
        from experiments import diffusers_internals as di

        self.forward = forward
        self.__wrapped__ = forward  # inspect.signature stays the block's (hooks read argument names from it)
        self.meta = di.block_metadata(type(block))

    def __call__(self, *args, **kwargs):
        output = self.forward(*args, **kwargs)
        index = self.meta.return_encoder_hidden_states_index
        if isinstance(output, tuple) and index is not None and output[index] is None:
            encoder = self.meta._get_parameter_from_args_kwargs(self.meta.encoder_hidden_states_argument_name,
                                                                args, kwargs)
            output = tuple(encoder if i == index else o for i, o in enumerate(output))
        return output


def _pass_encoder_through(transformers: list[Any], class_paths: tuple[str, ...]) -> Callable[[], None]:
    """Wrap the matching blocks' forward (before any cache hook wraps it in turn); returns the undo."""
    classes = tuple(_block_class(p) for p in class_paths)
    wrapped = []
    for transformer in transformers:
        for block in transformer.modules():
            if isinstance(block, classes):
                previous = block.__dict__.get("forward", _MISSING)
                block.forward = _EncoderPassthrough(block, block.forward)
                wrapped.append((block, previous))

    def restore() -> None:
        for block, previous in reversed(wrapped):
            if previous is _MISSING:
                del block.forward
            else:
                block.forward = previous

    return restore


def _alias_hidden_states(class_names: tuple[str, ...]) -> Callable[[], None]:
    """Let hooks that ask for "hidden_states" by name find a block's differently named input; returns the undo."""
    import inspect

    from experiments import diffusers_internals as di

    undo = []
    for path in class_names:
        cls = _block_class(path)
        meta = di.block_metadata(cls)
        params = list(inspect.signature(cls.forward).parameters)[1:]  # without self
        indices = {p: i for i, p in enumerate(params)}
        if "hidden_states" in indices:
            continue
        indices["hidden_states"] = indices[meta.hidden_states_argument_name]
        undo.append((meta, meta._cached_parameter_indices))
        meta._cached_parameter_indices = indices  # diffusers' own lookup table of argument positions

    def restore() -> None:
        for meta, old in undo:
            meta._cached_parameter_indices = old

    return restore


@contextlib.contextmanager
def adapted(pipe: Any):
    """Supply what `pipe`'s family adapter names around every transformer call; re-entrant; undone on exit."""
    adapter = adapter_of(pipe)
    if adapter is None or getattr(pipe, "_repro_adapted", 0):
        if adapter is not None:
            pipe._repro_adapted += 1
        try:
            yield adapter
        finally:
            if adapter is not None:
                pipe._repro_adapted -= 1
        return
    pipe._repro_adapted = 1
    with contextlib.ExitStack() as undo:
        undo.callback(lambda: pipe.__dict__.pop("_repro_adapted", None))
        for transformer in [pipe.transformer, *experts_of(pipe)]:  # enable_cache finds the pipeline from here
            transformer._repro_pipeline = pipe
            undo.callback(transformer.__dict__.pop, "_repro_pipeline", None)
        if adapter.hidden_states_alias:
            undo.callback(_alias_hidden_states(adapter.hidden_states_alias))
        if adapter.encoder_passthrough:
            undo.callback(_pass_encoder_through([pipe.transformer, *experts_of(pipe)], adapter.encoder_passthrough))
        if adapter.wraps_calls:
            for transformer in [pipe.transformer, *experts_of(pipe)]:
                calls = _CallContexts(pipe, adapter)
                for handle in (transformer.register_forward_pre_hook(calls.before, with_kwargs=True),
                               transformer.register_forward_hook(calls.after, with_kwargs=True, always_call=True)):
                    undo.callback(handle.remove)
        yield adapter


# -- SeaCache's raw vision latents per family (SeaCacheConfig.raw_vision_callback) ----------------------
# SeaCache filters "the visual latents forming the generated output, each with shape (C, T, H, W)"
# (diffusers.hooks.sea_cache.SeaCacheConfig); diffusers ships the rule for Wan and Cosmos 3 only.
# Each rule below turns the transformer's input into that layout the way the family's pipeline unpacks
# its latents, one entry per batch element (with CFG batched, the two halves are the same latents).


def _bound(module: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    import inspect

    from diffusers.utils.torch_utils import unwrap_module

    module = unwrap_module(module)
    return inspect.signature(type(module).forward).bind_partial(module, *args, **kwargs).arguments


def image_raw_vision(module: Any, args: tuple, kwargs: dict) -> list | None:
    """SD3, CogView4: hidden_states is the latent image (B, C, H, W): one frame each."""
    hidden = _bound(module, args, kwargs).get("hidden_states")
    if hidden is None or hidden.ndim != 4:
        return None
    return [x.unsqueeze(1) for x in hidden.unbind(0)]


def video_raw_vision(module: Any, args: tuple, kwargs: dict) -> list | None:
    """HunyuanVideo: hidden_states is the latent video (B, C, T, H, W), as Wan's (diffusers' Wan rule)."""
    hidden = _bound(module, args, kwargs).get("hidden_states")
    if hidden is None or hidden.ndim != 5:
        return None
    return list(hidden.unbind(0))


def flux_raw_vision(module: Any, args: tuple, kwargs: dict) -> list | None:
    """Flux: packed 2x2 patches (B, h*w, 4C) with positions img_ids (row, col); unpacked as
    FluxPipeline._unpack_latents does (view (B, h, w, C, 2, 2), permute (0, 3, 1, 4, 2, 5))."""
    bound = _bound(module, args, kwargs)
    hidden, ids = bound.get("hidden_states"), bound.get("img_ids")
    if hidden is None or ids is None or hidden.ndim != 3:
        return None
    ids = ids[0] if ids.ndim == 3 else ids
    h, w = int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1
    b, n, c = hidden.shape
    if h * w != n or c % 4:
        return None
    latents = hidden.view(b, h, w, c // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c // 4, h * 2, w * 2)
    return [x.unsqueeze(1) for x in latents.unbind(0)]


def ltx_raw_vision(module: Any, args: tuple, kwargs: dict) -> list | None:
    """LTX-Video: packed tokens (B, F*H*W, C*pt*p*p) with the latent num_frames, height, width passed to the
    transformer; unpacked as LTXPipeline._unpack_latents does."""
    from diffusers.utils.torch_utils import unwrap_module

    bound = _bound(module, args, kwargs)
    hidden = bound.get("hidden_states")
    f, h, w = bound.get("num_frames"), bound.get("height"), bound.get("width")
    if hidden is None or None in (f, h, w) or hidden.ndim != 3 or hidden.shape[1] != f * h * w:
        return None
    config = unwrap_module(module).config
    p, pt = config.patch_size, config.patch_size_t
    b = hidden.shape[0]
    latents = hidden.reshape(b, f, h, w, -1, pt, p, p)
    latents = latents.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)
    return list(latents.unbind(0))


def kandinsky5_raw_vision(module: Any, args: tuple, kwargs: dict) -> list | None:
    """Kandinsky 5: hidden_states (B, T, H, W, C) holds the latents, then (visual_cond) the conditioning
    frames and mask; the output is the first out_visual_dim channels (Kandinsky5T2VPipeline keeps those)."""
    from diffusers.utils.torch_utils import unwrap_module

    hidden = _bound(module, args, kwargs).get("hidden_states")
    if hidden is None or hidden.ndim != 5:
        return None
    channels = unwrap_module(module).config.out_visual_dim
    return [x[..., :channels].permute(3, 0, 1, 2) for x in hidden.unbind(0)]
