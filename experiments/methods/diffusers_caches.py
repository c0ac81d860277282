"""The caches of ``diffusers.hooks``, applied and removed by the model's own ``enable_cache``.

MagCache's calibration runs in the hook's own calibration mode; the ratios are read from the
hook state per CFG branch (cache context), never parsed from what the hook prints.

Fidelity to the originals (docs/fidelity.md has the details and sources):

* MagCache: diffusers' hook (diffusers/hooks/mag_cache.py) differs from Zehong-Ma/MagCache:
  one ``mag_ratios`` array for every CFG branch, indexed by the branch's step (the original
  MagCache4Wan2.1/magcache_generate.py@1a66b6d indexes one list that interleaves cond and uncond,
  per call); retention ``int(N * r + 0.5)`` steps per branch (the original ``int(2N * r)`` calls:
  6 + 5 vs 6 + 6 steps at N = 28, r = 0.2); skip while ``accumulated_err <= threshold``
  (magcache_generate.py: ``<``). MagCache's Table 1 was made by its evaluation script
  (eval/magcache/experiments/Wan2.1_EVAL/wan_magcache.py@1a4c2d3: square roots of the ratios,
  ``<=``, ratios indexed from call 10): ``magcache_official_eval`` reproduces that script.
* First Block Cache: diffusers (hooks/first_block_cache.py) computes while ``diff > threshold``,
  i.e. skips on ``diff <= threshold``; ParaAttention (chengzeyi/ParaAttention
  src/para_attn/first_block_cache/utils.py ``are_two_tensors_similar``: ``diff < threshold``) skips
  on ``<`` only and has a ``warmup_steps`` option diffusers lacks. The FBC table this project ships
  (diffusers PR 11180) was made with diffusers' own hook, so its rows are comparable.
"""

from __future__ import annotations

import contextlib
import io
import math
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


def decision_reader(transformer: Any, method: str | None = None) -> Any:
    """For diffusers' First Block Cache or MagCache enabled on `transformer`: a function to call after each
    transformer call that records the call's decision (``experiments.instrumentation.record_decision``) from
    the hook's state, per cache context; None for any other cache (the project's and cache-dit's report their
    own). `method`: the cache enabled (default: the one ``enable_cache`` noted on `transformer`; a further
    expert such as Wan 2.2's ``transformer_2`` carries the cache without that note)."""
    from experiments import diffusers_internals as di
    from experiments.instrumentation import record_decision

    method = method or getattr(transformer, "_repro_cache_method", None)
    leader = di.cache_leader_hook(transformer, method) if method in ("first_block_cache", "mag_cache") else None
    if leader is None:
        return None
    steps: dict[str, int] = {}
    config = getattr(leader, "config", None)
    retention = int(config.retention_ratio * config.num_inference_steps + 0.5) if method == "mag_cache" else 0

    def read() -> None:
        context = leader.state_manager._context
        if context is None:
            return
        state = leader.state_manager.get_state()
        branch = context.name
        step = steps.get(branch, 0)  # this transformer's own step (an expert's MagCache indexes its ratios so)
        steps[branch] = step + 1
        # recorded at the branch's step in the pipeline call (None: counted there), the same on one transformer
        if method == "first_block_cache":  # its difference is computed and dropped inside the hook
            record_decision(branch, None, state.should_compute)
            return
        ratios = config.mag_ratios
        used = retention <= step < len(ratios)  # the ratio MagCache's rule multiplied in at this step
        record_decision(branch, None, state.should_compute, float(ratios[step]) if used else None,
                        None if state.should_compute else state.accumulated_err)

    return read


def mag_cache_deviations(params: dict, official: dict) -> list[str]:
    """diffusers' MagCache is not Zehong-Ma/MagCache's code: what a point run with it does differently."""
    return ["mag_cache is diffusers' MagCache hook, not Zehong-Ma/MagCache's code: one mag_ratios array for every "
            "CFG branch indexed by step (MagCache4Wan2.1/magcache_generate.py: one interleaved cond/uncond list "
            "indexed by call), retention int(N*r + 0.5) steps per branch (original: int(2N*r) calls), skip on "
            "accumulated error <= threshold (magcache_generate.py: <); the paper's Table 1 came from its evaluation "
            "script (square roots of the ratios): magcache_official_eval runs that"]


class _PostInit:
    """Transcriptions of the ``__post_init__`` checks of diffusers 0.42.1's hook configs, so a spec is checked
    without importing diffusers (experiments/library_facts.py). Each is used only while the installed method's
    source hashes to the sha256 beside it; tests replay both on the same values (test_library_facts.py)."""

    # diffusers 0.42.1 src/diffusers/hooks/mag_cache.py, MagCacheConfig.__post_init__ (lines 117-137)
    MAG_CACHE = "f963f7ae718c0be92d8b96e6ae007589061a12c166ddfce3b6ef3cfbb6665c4e"
    # diffusers 0.42.1 src/diffusers/hooks/sea_cache.py, SeaCacheConfig.__post_init__ (lines 91-113)
    SEA_CACHE = "789026037598992d8b0a4e42f91ecacf5b5a242199f261779840f9e3f464be2b"

    @staticmethod
    def mag_cache(self: Any) -> None:
        from experiments.library_facts import LibraryNeeded

        if self.mag_ratios is None and not self.calibrate:
            raise ValueError(
                " `mag_ratios` must be provided for MagCache inference because these ratios are model-dependent.\n"
                "To get them for your model:\n"
                "1. Initialize `MagCacheConfig(calibrate=True, ...)`\n"
                "2. Run inference on your model once.\n"
                "3. Copy the printed ratios array and pass it to `mag_ratios` in the config.\n"
                "For Flux models, you can import `FLUX_MAG_RATIOS` from `diffusers.hooks.mag_cache`."
            )
        if not self.calibrate and self.mag_ratios is not None:
            # torch.tensor(list) then nearest_interp to num_inference_steps: a list of finite numbers (the
            # field's type) converts, and interpolates unless it is empty (indexing an empty tensor raises) or
            # holds an integer beyond int64 (torch's overflow error): those are the library's to word
            ratios = self.mag_ratios
            if len(ratios) == 0 and self.num_inference_steps != 1 or \
                    any(isinstance(v, int) and not -2**63 <= v < 2**63 for v in ratios):
                raise LibraryNeeded

    @staticmethod
    def sea_cache(self: Any) -> None:
        if not math.isfinite(self.threshold) or self.threshold < 0:
            raise ValueError(f"`threshold` must be non-negative, got {self.threshold}.")
        if self.residual_order not in (0, 1):
            raise ValueError(f"`residual_order` must be 0 or 1, got {self.residual_order}.")
        if self.retention_steps < 0:
            raise ValueError(f"`retention_steps` must be non-negative, got {self.retention_steps}.")
        if self.cache_end_steps < 0:
            raise ValueError(f"`cache_end_steps` must be non-negative, got {self.cache_end_steps}.")
        if (
            isinstance(self.max_consecutive_cached, bool)
            or not isinstance(self.max_consecutive_cached, int)
            or self.max_consecutive_cached < 0
        ):
            raise ValueError(
                f"`max_consecutive_cached` must be a non-negative integer, got {self.max_consecutive_cached!r}."
            )
        if not math.isfinite(self.power_exp) or self.power_exp <= 0:
            raise ValueError(f"`power_exp` must be positive, got {self.power_exp}.")
        for name in ("raw_vision_callback",):
            callback = getattr(self, name)
            if callback is not None and not callable(callback):
                raise TypeError(f"`{name}` must be callable or `None`.")


def _diffusers(name: str, config: str, **options: Any) -> None:
    register_method(CacheMethod(name, f"diffusers.hooks:{config}", origin="diffusers", **options))


_diffusers("first_block_cache", "FirstBlockCacheConfig",
           key_params=("threshold",), nonnegative=("threshold",), no_op={"threshold": 0.0},
           probe={"threshold": 1.0}, aggressiveness="threshold",
           doc="diffusers' First Block Cache (the hook of diffusers PR 11180). Differs from ParaAttention's: skips on "
               "relative difference <= threshold (ParaAttention: <), no warm-up option")
_diffusers("mag_cache", "MagCacheConfig",
           key_params=("threshold", "retention_ratio", "max_skip_steps"),
           nonnegative=("threshold", "retention_ratio", "max_skip_steps"),
           wired=("num_inference_steps", "calibrate"), no_op={"threshold": 0.0},
           calibrated_field="mag_ratios", calibrate=calibrate_mag_cache, ranges={"retention_ratio": (0, 1)},
           expert_config=mag_cache_for_expert,
           probe={"threshold": 10.0, "retention_ratio": 0.0, "max_skip_steps": 2}, deviations=mag_cache_deviations,
           aggressiveness="threshold", post_init=(_PostInit.MAG_CACHE, _PostInit.mag_cache),
           doc="diffusers' MagCache. Differs from Zehong-Ma/MagCache: one ratio array for both CFG branches (original: "
               "interleaved per call), retention int(N*r+0.5) steps (original: int(2N*r) calls), skip on <= "
               "(magcache_generate.py: <); Table 1 used the evaluation script: see magcache_official_eval")
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
           no_op={"threshold": 0.0}, probe={"threshold": 10.0}, aggressiveness="threshold",
           post_init=(_PostInit.SEA_CACHE, _PostInit.sea_cache))
# Lossless: the text key/value projections of each block are computed once per prompt and reused at every step
# (NucleusMoE-Image's blocks only); nothing to tune, nothing skipped in the attention or feed-forward sublayers.
_diffusers("text_kv_cache", "TextKVCacheConfig", key_params=(), no_op={}, probe={},
           doc="diffusers' lossless text K/V cache: each block's text key/value projections once per prompt; "
               "hooks NucleusMoE-Image's blocks only")
