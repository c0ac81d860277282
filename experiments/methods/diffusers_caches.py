"""The caches of ``diffusers.hooks``, applied and removed by the model's own ``enable_cache``.

MagCache's calibration runs in the hook's own calibration mode; the ratios are read from the
hook state per CFG branch (cache context), never parsed from what the hook prints.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from experiments.methods.registry import CacheMethod, register_method


def calibrate_mag_cache(transformer: Any, passes: list, num_inference_steps: int, params: dict) -> dict[str, list[float]]:
    """MagCache ratios per CFG branch, averaged step by step over the calibration passes.

    With further experts (Wan 2.2, inside the family adapter) each expert records its own steps; the
    ratios are joined in the order the experts run, one value per pipeline step.
    """
    from diffusers.hooks import MagCacheConfig

    from experiments import diffusers_internals as di
    from experiments.families.adapters import experts_of, pipeline_of
    from experiments.methods.registry import enable_cache

    transformers = [transformer, *experts_of(pipeline_of(transformer))]
    per_pass: list[dict[str, list[float]]] = []
    for run in passes:
        recorded: list[dict[str, list[float]]] = [{} for _ in transformers]
        disable = enable_cache(transformer, MagCacheConfig(calibrate=True, num_inference_steps=num_inference_steps))
        try:
            for t, ratios in zip(transformers, recorded):
                for hook in di.mag_cache_tail_hooks(t):
                    di.record_mag_calibration(hook, ratios)
            with contextlib.redirect_stdout(io.StringIO()):  # the hook prints the ratios; we keep them instead
                run()
        finally:
            disable()
        ratios = {branch: [v for r in recorded for v in r.get(branch, [])] for branch in recorded[0]}
        for branch, values in ratios.items():
            if len(values) != num_inference_steps:  # MagCache's ratios are per step: a partial record is unusable
                raise ValueError(f"MagCache calibration recorded {len(values)} ratios for {num_inference_steps} steps "
                                 f"in branch {branch!r}: the transformer is called on a different number of steps "
                                 f"(e.g. one expert of a two-stage model, or several calls per step in one context)")
        per_pass.append(ratios)
    return _mean_per_branch(per_pass)


def _mean_per_branch(per_pass: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for branch in per_pass[0] if per_pass else {}:
        runs = [p[branch] for p in per_pass if branch in p]
        out[branch] = [sum(v) / len(v) for v in zip(*runs)]
    return out


def mag_cache_for_expert(config: Any, first: int, steps: int) -> Any:
    """MagCache on a transformer that runs `steps` of the pipeline's steps from `first`: its step count and ratios."""
    import dataclasses

    ratios = None if config.mag_ratios is None else [float(r) for r in config.mag_ratios][first:first + steps]
    return dataclasses.replace(config, num_inference_steps=steps, mag_ratios=ratios)


def _diffusers(name: str, config: str, **options: Any) -> None:
    register_method(CacheMethod(name, f"diffusers.hooks:{config}", origin="diffusers", **options))


_diffusers("first_block_cache", "FirstBlockCacheConfig",
           key_params=("threshold",), nonnegative=("threshold",), no_op={"threshold": 0.0},
           probe={"threshold": 1.0})
_diffusers("mag_cache", "MagCacheConfig",
           key_params=("threshold", "retention_ratio", "max_skip_steps"),
           nonnegative=("threshold", "retention_ratio", "max_skip_steps"),
           wired=("num_inference_steps", "calibrate"), no_op={"threshold": 0.0},
           calibrated_field="mag_ratios", calibrate=calibrate_mag_cache, ranges={"retention_ratio": (0, 1)},
           expert_config=mag_cache_for_expert,
           probe={"threshold": 10.0, "retention_ratio": 0.0, "max_skip_steps": 2})
_diffusers("pyramid_attention_broadcast", "PyramidAttentionBroadcastConfig",
           key_params=("spatial_attention_block_skip_range", "cross_attention_block_skip_range",
                       "temporal_attention_block_skip_range"),
           nonnegative=("spatial_attention_block_skip_range", "cross_attention_block_skip_range",
                        "temporal_attention_block_skip_range"),
           wired=("current_timestep_callback",),
           ranges={k: (1, None) for k in ("spatial_attention_block_skip_range", "cross_attention_block_skip_range",
                                          "temporal_attention_block_skip_range")},
           probe={"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": (-1, 1001)})
_diffusers("faster_cache", "FasterCacheConfig",
           key_params=("spatial_attention_block_skip_range", "unconditional_batch_skip_range"),
           nonnegative=("spatial_attention_block_skip_range", "unconditional_batch_skip_range"),
           wired=("current_timestep_callback",),
           ranges={k: (1, None) for k in ("spatial_attention_block_skip_range", "temporal_attention_block_skip_range",
                                          "unconditional_batch_skip_range")},
           # the window starts after the first step: FasterCache cannot approximate from an empty cache
           probe={"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": (-1, 681)})
_diffusers("taylorseer_cache", "TaylorSeerCacheConfig",
           key_params=("cache_interval", "max_order", "disable_cache_before_step"),
           nonnegative=("cache_interval", "max_order", "disable_cache_before_step"), ranges={"cache_interval": (1, None)},
           probe={"cache_interval": 2, "disable_cache_before_step": 1})
_diffusers("sea_cache", "SeaCacheConfig",
           key_params=("threshold", "max_consecutive_cached"),
           nonnegative=("threshold", "retention_steps", "cache_end_steps", "max_consecutive_cached"),
           no_op={"threshold": 0.0}, probe={"threshold": 10.0})
# Lossless: the text key/value projections of each block are computed once per prompt and reused at every step
# (NucleusMoE-Image's blocks only); nothing to tune, nothing skipped in the attention or feed-forward sublayers.
_diffusers("text_kv_cache", "TextKVCacheConfig", key_params=(), no_op={}, probe={})
