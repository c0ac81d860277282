"""The six caches of ``diffusers.hooks``, applied and removed by the model's own ``enable_cache``.

MagCache's calibration runs in the hook's own calibration mode; the ratios are read from the
hook state per CFG branch (cache context), never parsed from what the hook prints.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from experiments.methods.registry import CacheMethod, register_method


def calibrate_mag_cache(transformer: Any, passes: list, num_inference_steps: int, params: dict) -> dict[str, list[float]]:
    """MagCache ratios per CFG branch, averaged step by step over the calibration passes."""
    from diffusers.hooks import MagCacheConfig

    from experiments import diffusers_internals as di
    from experiments.methods.registry import enable_cache

    per_pass: list[dict[str, list[float]]] = []
    for run in passes:
        ratios: dict[str, list[float]] = {}
        disable = enable_cache(transformer, MagCacheConfig(calibrate=True, num_inference_steps=num_inference_steps))
        try:
            for hook in di.mag_cache_tail_hooks(transformer):
                di.record_mag_calibration(hook, ratios)
            with contextlib.redirect_stdout(io.StringIO()):  # the hook prints the ratios; we keep them instead
                run()
        finally:
            disable()
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


def _diffusers(name: str, config: str, **options: Any) -> None:
    register_method(CacheMethod(name, f"diffusers.hooks:{config}", origin="diffusers", **options))


_diffusers("first_block_cache", "FirstBlockCacheConfig",
           key_params=("threshold",), nonnegative=("threshold",), no_op={"threshold": 0.0},
           probe={"threshold": 1.0}, aggressiveness="threshold")
_diffusers("mag_cache", "MagCacheConfig",
           key_params=("threshold", "retention_ratio", "max_skip_steps"),
           nonnegative=("threshold", "retention_ratio", "max_skip_steps"),
           wired=("num_inference_steps", "calibrate"), no_op={"threshold": 0.0},
           calibrated_field="mag_ratios", calibrate=calibrate_mag_cache, ranges={"retention_ratio": (0, 1)},
           probe={"threshold": 10.0, "retention_ratio": 0.0, "max_skip_steps": 2}, aggressiveness="threshold")
_diffusers("pyramid_attention_broadcast", "PyramidAttentionBroadcastConfig",
           key_params=("spatial_attention_block_skip_range", "cross_attention_block_skip_range",
                       "temporal_attention_block_skip_range"),
           nonnegative=("spatial_attention_block_skip_range", "cross_attention_block_skip_range",
                        "temporal_attention_block_skip_range"),
           wired=("current_timestep_callback",),
           ranges={k: (1, None) for k in ("spatial_attention_block_skip_range", "cross_attention_block_skip_range",
                                          "temporal_attention_block_skip_range")},
           probe={"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": (-1, 1001)},
           aggressiveness="spatial_attention_block_skip_range")
_diffusers("faster_cache", "FasterCacheConfig",
           key_params=("spatial_attention_block_skip_range", "unconditional_batch_skip_range"),
           nonnegative=("spatial_attention_block_skip_range", "unconditional_batch_skip_range"),
           wired=("current_timestep_callback",),
           ranges={k: (1, None) for k in ("spatial_attention_block_skip_range", "temporal_attention_block_skip_range",
                                          "unconditional_batch_skip_range")},
           # the window starts after the first step: FasterCache cannot approximate from an empty cache
           probe={"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": (-1, 681)},
           aggressiveness="spatial_attention_block_skip_range")
_diffusers("taylorseer_cache", "TaylorSeerCacheConfig",
           key_params=("cache_interval", "max_order", "disable_cache_before_step"),
           nonnegative=("cache_interval", "max_order", "disable_cache_before_step"), ranges={"cache_interval": (1, None)},
           probe={"cache_interval": 2, "disable_cache_before_step": 1}, aggressiveness="cache_interval")
_diffusers("sea_cache", "SeaCacheConfig",
           key_params=("threshold", "max_consecutive_cached"),
           nonnegative=("threshold", "retention_steps", "cache_end_steps", "max_consecutive_cached"),
           no_op={"threshold": 0.0}, probe={"threshold": 10.0}, aggressiveness="threshold")
