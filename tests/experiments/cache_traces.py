"""Helpers for the TeaCache / EasyCache tests: tiny engines and independent recordings of what a call saw."""

from __future__ import annotations

from typing import Any

import torch

from experiments.families import get_family
from experiments.runner import Engine
from experiments.spec import Spec

PROMPT = "a red fox in snow"


def reference_engine(steps: int = 10, **generation: Any) -> Engine:
    """The trained reference Wan model (experiments/reference), as configs/tiny.yaml runs it."""
    gen = {"height": 32, "width": 32, "num_frames": 5, "num_inference_steps": steps, "guidance_scale": 2.0,
           "max_sequence_length": 16, **generation}
    spec = Spec.model_validate({
        "name": "t-reference", "model": {"reference": "wan", "device": "cpu"}, "generation": gen,
        "prompts": ["a red diamond moving left on a gray background"], "seeds": [0],
        "methods": [{"name": "first_block_cache"}], "timing": {"warmup": 0, "repeats": 1},
    })
    return Engine(spec)


def tiny_engine(family: str, steps: int = 6, **generation: Any) -> Engine:
    fam = get_family(family)
    gen = {**fam.tiny_generation, "num_inference_steps": steps, **generation}
    if family in ("wan", "hunyuan_video"):  # their twins also run at 16x16: faster
        gen.update(height=16, width=16)
    spec = Spec.model_validate({
        "name": f"t-{family}", "model": {"tiny": family, "device": "cpu"}, "generation": gen,
        "prompts": [PROMPT], "seeds": [0], "methods": [{"name": "first_block_cache"}],
        "timing": {"warmup": 0, "repeats": 1},
    })
    return Engine(spec)


class CallRecorder:
    """Per transformer call: the first block's inputs, and whether the first block's attention really ran.

    Uses plain torch hooks, which fire around the (diffusers-wrapped) forward, so they see every call
    whether or not the cache skipped it. On Wan it also keeps the condition embedder's outputs of each
    call, ``e`` (``temb``) and ``e0`` (``timestep_proj``): TeaCache4Wan2.1's two signals.
    """

    def __init__(self, transformer: torch.nn.Module):
        from experiments.methods.residual_hooks import transformer_blocks

        self.calls: list[dict[str, Any]] = []
        first = transformer_blocks(transformer)[0][1]
        attention = next(m for n, m in first.named_modules() if n.startswith("attn"))
        self.handles = [
            transformer.register_forward_pre_hook(self._transformer_in, with_kwargs=True),
            transformer.register_forward_hook(self._transformer_out, with_kwargs=True),
            first.register_forward_pre_hook(self._first_block, with_kwargs=True),
            attention.register_forward_pre_hook(self._attention),
        ]
        embedder = getattr(transformer, "condition_embedder", None)
        if embedder is not None:
            self.handles.append(embedder.register_forward_hook(self._condition))
        self.first = first

    def _condition(self, module, args, output):
        temb, timestep_proj = output[0], output[1]
        self.calls[-1]["e"], self.calls[-1]["e0"] = temb.detach().clone(), timestep_proj.detach().clone()

    def _transformer_in(self, module, args, kwargs):
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        self.calls.append({"x": x.detach().clone(), "ran": False})

    def _transformer_out(self, module, args, kwargs, output):
        sample = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        self.calls[-1]["v"] = sample.detach().clone()

    def _first_block(self, module, args, kwargs):
        names = ["hidden_states", "encoder_hidden_states", "temb"]
        got = {n: kwargs[n] if n in kwargs else args[i] for i, n in enumerate(names) if n in kwargs or i < len(args)}
        self.calls[-1]["block"] = {k: v.detach().clone() for k, v in got.items()}

    def _attention(self, module, args):
        self.calls[-1]["ran"] = True

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def branches(self, cfg_separate: bool) -> dict[str, list[dict[str, Any]]]:
        return split_branches(self.calls, cfg_separate)


def split_branches(calls: list, cfg_separate: bool) -> dict[str, list]:
    """Calls per CFG branch: a pipeline with separate CFG passes calls cond, then uncond, every step."""
    if not cfg_separate:
        return {"cond": calls}
    return {"cond": calls[0::2], "uncond": calls[1::2]}
