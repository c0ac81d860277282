"""diffusers ``ModelHook`` plumbing for caches that skip work and reuse a cached residual.

Two shapes, each with the decision left to a method's policy (``teacache.py``, ``easycache.py``):

* :func:`apply_block_stack_cache` hooks every transformer block (as First Block Cache does). The
  first block asks ``decide(state, block, args, kwargs)``; when it says skip, every block passes
  its input through and the first returns ``input + residual`` cached at the last computed call,
  so the whole stack is skipped. The last block stores ``output - input of the first block``.
* :func:`apply_transformer_cache` hooks the transformer's forward: a skipped call returns
  ``input + residual`` of the last computed call without running anything.

State is per cache context (the pipeline's ``cache_context("cond" | "uncond")``), so CFG branches
run as separate calls keep separate caches; diffusers resets it at the end of every pipeline call.
``float32_residual``: the residual is kept in float32 and added in float32 (then cast back), as the
official Wan scripts do, whose residual stream is float32 (diffusers' runs in the model's dtype);
otherwise both happen in the model's dtype, as the official FLUX and HunyuanVideo scripts do.
Imports diffusers: only ``apply`` functions import this module.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager
from diffusers.utils.torch_utils import unwrap_module

from experiments import diffusers_internals as di

# private diffusers names, through the shim that checks the release they were written for
_ALL_TRANSFORMER_BLOCK_IDENTIFIERS = di.transformer_block_identifiers()
TransformerBlockRegistry = di.private("diffusers.hooks._helpers", "TransformerBlockRegistry")

Decide = Callable[[Any, torch.nn.Module, tuple, dict], bool]


class CacheState(BaseState):
    """One CFG branch's cache: the residual to reuse plus the policy's own fields (``policy``)."""

    def __init__(self, policy_state: Callable[[], Any]):
        self._policy_state = policy_state
        self.reset()

    def reset(self, *args, **kwargs) -> None:
        self.branch = ""  # the cache context's name ("cond", "uncond"), set on its first call
        self.step = 0  # calls of this branch so far in the current pipeline call
        self.compute = True
        self.head_input: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.residual: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.policy = self._policy_state()


def transformer_blocks(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    blocks = []
    for name, child in transformer.named_children():
        if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, torch.nn.ModuleList):
            blocks.extend((f"{name}.{i}", b) for i, b in enumerate(child))
    return blocks


def check_blocks(transformer: torch.nn.Module, method: str) -> list[tuple[str, torch.nn.Module]]:
    """The blocks a block-stack cache hooks; a clear error when the model has none it knows."""
    blocks = transformer_blocks(transformer)
    if not blocks:
        raise ValueError(f"{method}: {type(transformer).__name__} has no transformer block list "
                         f"({', '.join(_ALL_TRANSFORMER_BLOCK_IDENTIFIERS)})")
    for name, block in blocks:
        try:
            TransformerBlockRegistry.get(unwrap_module(block).__class__)
        except ValueError:
            raise ValueError(f"{method}: block {name} ({type(block).__name__}) is not one diffusers knows the "
                             f"inputs and outputs of (diffusers.hooks._helpers.TransformerBlockRegistry)") from None
    return blocks


class _BlockHook(ModelHook):
    _is_stateful = True

    def __init__(self, state_manager: StateManager, role: str, decide: Decide | None,
                 observe: Callable[[Any, torch.Tensor], None] | None, float32_residual: bool = False):
        super().__init__()
        self.state_manager = state_manager
        self.role = role  # "head", "middle", "tail" or "only" (a single block is head and tail)
        self.decide = decide
        self.observe = observe
        self.float32_residual = float32_residual
        self._metadata = None

    def initialize_hook(self, module):
        self._metadata = TransformerBlockRegistry.get(unwrap_module(module).__class__)
        return module

    def _inputs(self, args, kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        meta = self._metadata
        hidden = meta._get_parameter_from_args_kwargs(meta.hidden_states_argument_name, args, kwargs)
        encoder = None
        if meta.return_encoder_hidden_states_index is not None:
            encoder = meta._get_parameter_from_args_kwargs(meta.encoder_hidden_states_argument_name, args, kwargs)
        return hidden, encoder

    def _pack(self, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Any:
        meta = self._metadata
        if meta.return_encoder_hidden_states_index is None:
            return hidden
        out = [None, None]
        out[meta.return_hidden_states_index] = hidden
        out[meta.return_encoder_hidden_states_index] = encoder
        return tuple(out)

    def _unpack(self, output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        meta = self._metadata
        if not isinstance(output, tuple):
            return output, None
        encoder = output[meta.return_encoder_hidden_states_index] if meta.return_encoder_hidden_states_index is not None else None
        return output[meta.return_hidden_states_index], encoder

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state: CacheState = self.state_manager.get_state()
        hidden, encoder = self._inputs(args, kwargs)
        if self.role in ("head", "only"):
            state.branch = self.state_manager.context.name
            state.compute = self.decide(state, module, args, kwargs) or state.residual is None
            state.step += 1
            if state.compute:
                state.head_input = (hidden, encoder)
            else:
                res_h, res_e = state.residual
                reused_encoder = None if encoder is None or res_e is None else _add(encoder, res_e)
                return self._pack(_add(hidden, res_h), reused_encoder)
        if not state.compute:
            return self._pack(hidden, encoder)  # skipped: pass the first block's reused output through
        output = self.fn_ref.original_forward(*args, **kwargs)
        if self.role in ("tail", "only"):
            out_h, out_e = self._unpack(output)
            in_h, in_e = state.head_input
            residual = _subtract(out_h, in_h, self.float32_residual)
            if self.observe is not None:
                self.observe(state, residual)
            state.residual = (residual, None if out_e is None or in_e is None
                              else _subtract(out_e, in_e, self.float32_residual))
            state.head_input = None
        return output

    def reset_state(self, module):
        self.state_manager.reset()
        return module


def apply_block_stack_cache(transformer: torch.nn.Module, hook_name: str, decide: Decide,
                            policy_state: Callable[[], Any],
                            observe: Callable[[Any, torch.Tensor], None] | None = None,
                            float32_residual: bool = False) -> None:
    blocks = check_blocks(transformer, hook_name)
    observe = torch.compiler.disable(observe) if observe is not None else None
    manager = StateManager(CacheState, (policy_state,))
    for i, (_, block) in enumerate(blocks):
        role = "only" if len(blocks) == 1 else "head" if i == 0 else "tail" if i == len(blocks) - 1 else "middle"
        hook = _BlockHook(manager, role, torch.compiler.disable(decide) if role in ("head", "only") else None,
                          observe if role in ("tail", "only") else None, float32_residual)
        HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, hook_name)
    HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()


class _TransformerHook(ModelHook):
    _is_stateful = True

    def __init__(self, state_manager: StateManager, decide: Callable[[Any, torch.Tensor], bool],
                 computed: Callable[[Any, torch.Tensor, torch.Tensor], None], float32_residual: bool = False):
        super().__init__()
        self.state_manager = state_manager
        self.decide = decide
        self.computed = computed
        self.float32_residual = float32_residual
        self._hidden_index: int | None = None

    def initialize_hook(self, module):
        names = list(inspect.signature(unwrap_module(module).__class__.forward).parameters)[1:]
        self._hidden_index = names.index("hidden_states") if "hidden_states" in names else 0
        return module

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state: CacheState = self.state_manager.get_state()
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[self._hidden_index]
        state.branch = self.state_manager.context.name
        compute = self.decide(state, x) or state.residual is None
        state.step += 1
        state.compute = compute
        if not compute:
            template, residual = state.residual
            return _with_sample(template, _add(x, residual))
        output = self.fn_ref.original_forward(*args, **kwargs)
        v = _sample(output)
        if v.shape != x.shape:
            raise ValueError(f"{type(module).__name__} maps hidden_states {tuple(x.shape)} to {tuple(v.shape)}; "
                             f"a cache that reuses the transformer's input-to-output residual needs equal shapes")
        self.computed(state, x, v)
        state.residual = (output, _subtract(v, x, self.float32_residual))
        return output

    def reset_state(self, module):
        self.state_manager.reset()
        return module


def apply_transformer_cache(transformer: torch.nn.Module, hook_name: str,
                            decide: Callable[[Any, torch.Tensor], bool],
                            computed: Callable[[Any, torch.Tensor, torch.Tensor], None],
                            policy_state: Callable[[], Any], float32_residual: bool = False) -> None:
    manager = StateManager(CacheState, (policy_state,))
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    # decisions read scalars (.item()): kept out of compiled graphs, as First Block Cache does
    registry.register_hook(_TransformerHook(manager, torch.compiler.disable(decide), torch.compiler.disable(computed),
                                            float32_residual), hook_name)
    registry.invalidate_child_registries_cache()


def remove_hooks(transformer: torch.nn.Module, hook_name: str) -> None:
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.remove_hook(hook_name, recurse=True)
    registry.invalidate_child_registries_cache()


def rel_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """mean |current - previous| / mean |previous| (TeaCache's relative L1 distance), computed as the official
    scripts do: in the tensors' own dtype, a zero denominator giving inf (or NaN for 0 / 0) like torch."""
    return float((current - previous).abs().mean() / previous.abs().mean())


def _subtract(a: torch.Tensor, b: torch.Tensor, float32: bool) -> torch.Tensor:
    return a.float() - b.float() if float32 else a - b


def _add(x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """x + residual, in the residual's precision when it is wider (a float32 residual), returned in x's dtype."""
    if residual.dtype == x.dtype:
        return x + residual
    return (x.to(residual.dtype) + residual).to(x.dtype)


def _sample(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple):
        return output[0]
    return output.sample


def _with_sample(template: Any, sample: torch.Tensor) -> Any:
    """`template` (a tensor, a tuple or a diffusers output object) with its sample replaced."""
    if isinstance(template, torch.Tensor):
        return sample
    if isinstance(template, tuple):
        return (sample, *template[1:])
    return type(template)(sample=sample)
