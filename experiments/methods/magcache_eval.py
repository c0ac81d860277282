"""MagCache as its evaluation script ran it: the rule behind the paper's Table 1 (Ma et al., "MagCache: Fast
Video Generation with Magnitude-Aware Cache", 2025), project-owned because diffusers' MagCache differs.

Source: Zehong-Ma/MagCache ``eval/magcache/experiments/Wan2.1_EVAL/wan_magcache.py`` at commit 1a4c2d3
(``magcache_forward`` and ``generate``) and ``wan_eval.sh`` next to it (magcache-slow: ``--magcache_thresh
0.12 --magcache_K 2``; magcache-fast: ``--magcache_K 4``; ``--sample_shift 8 --sample_guide_scale 6
--sample_steps 50``). The model is called twice per step (cond, then uncond); ``self.t`` counts the
calls, ``num_steps = sample_steps*2``. From call ``skip_time = int(self.num_steps*0.2)`` on (the first
20% of the calls: retention 0.2), at call ``t`` of branch ``t%2``::

    cur_scale = self.ratio[self.t-10]             # one list, cond and uncond interleaved, from call 10 on
    accumulated_sim[t%2] *= cur_scale
    accumulated_steps[t%2] += 1
    accumulated_err[t%2] += np.abs(1-accumulated_sim[t%2])
    skip if accumulated_err[t%2] <= magcache_thresh and accumulated_steps[t%2] <= magcache_K
    else reset the three to 1.0, 0, 0

and ``ratio = np.array([...]) ** 0.5``: the square roots of its 90 hard-coded magnitude ratios. A skipped
call adds the branch's last residual (of the block stack) to its input. diffusers' MagCache instead
takes one array per branch by step, no square root, retention ``int(N*r + 0.5)`` steps.

Here: ``t = 2 * step + (1 for the "uncond" branch)``, ``mag_ratios`` is the per-call list starting at
call ``ratio_offset`` (10), raised to ``ratio_exponent`` (0.5) as the script does; retention, offset
and exponent other than the script's are deviations (:func:`deviations`). The residual is float32
(the official Wan residual stream is). Calibration records diffusers' per-branch ratios (the script's
own formula, ``mean(norm(r_t) / norm(r_{t-1}))``), interleaves them and drops the first 10 calls, so
calibrated lists follow the published list's convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from experiments.methods.registry import CacheMethod, register_method

HOOK = "repro_magcache_official_eval"
SOURCE = "Zehong-Ma/MagCache eval/magcache/experiments/Wan2.1_EVAL/wan_magcache.py@1a4c2d3"

#: The script's hard-coded magnitude ratios for Wan2.1-T2V-1.3B (calls 10..99 of 50 steps, cond/uncond
#: interleaved), as written; the script uses their square roots (``np.array([...])**(0.5)``).
WAN_13B_RATIOS = (
    0.99635, 0.99662, 0.99546, 0.99564, 0.99438, 0.9944, 0.99564, 0.99562, 0.9958, 0.99575, 0.9952, 0.99512,
    0.99539, 0.99531, 0.99554, 0.9955, 0.99542, 0.99539, 0.99545, 0.99544, 0.99495, 0.9949, 0.99515, 0.99512,
    0.99491, 0.99486, 0.99484, 0.99482, 0.99421, 0.99418, 0.99425, 0.99421, 0.99405, 0.99403, 0.99395, 0.99393,
    0.99359, 0.99356, 0.99315, 0.99312, 0.9928, 0.99277, 0.99237, 0.99237, 0.99183, 0.9918, 0.99145, 0.99143,
    0.99077, 0.99074, 0.99014, 0.99012, 0.98952, 0.98951, 0.98859, 0.98857, 0.98765, 0.98765, 0.98647, 0.98648,
    0.98511, 0.9851, 0.98367, 0.98365, 0.98206, 0.98207, 0.9798, 0.9798, 0.97721, 0.97723, 0.97412, 0.97412,
    0.9701, 0.97009, 0.96541, 0.96541, 0.95939, 0.95941, 0.95088, 0.95089, 0.94016, 0.94019, 0.92404, 0.92412,
    0.90251, 0.90264, 0.86845, 0.86891, 0.81871, 0.81975,
)
OFFICIAL = {"retention_ratio": 0.2, "ratio_offset": 10, "ratio_exponent": 0.5}


@dataclass
class MagCacheEvalConfig:
    """MagCache as MagCache's Wan2.1 evaluation script runs it (wan_magcache.py); defaults are the script's.

    Args:
        threshold: --magcache_thresh (Table 1: 0.12).
        max_skip_steps: --magcache_K, skipped calls of a branch in a row (Table 1: 2 slow, 4 fast).
        retention_ratio: calls before ``int(2N * retention_ratio)`` always run (the script: 0.2, hard-coded).
        mag_ratios: magnitude ratios per call, cond and uncond interleaved, starting at call ``ratio_offset``.
        ratio_offset: the call the first ratio belongs to (the script: ``self.ratio[self.t-10]``).
        ratio_exponent: the ratios are raised to this power (the script: 0.5, their square roots).
        num_inference_steps: the pipeline's step count (wired from the spec).
        calibrate: compute every call (calibration records the ratios instead).
    """

    threshold: float = 0.12
    max_skip_steps: int = 2
    retention_ratio: float = 0.2
    mag_ratios: tuple[float, ...] | None = None
    ratio_offset: int = 10
    ratio_exponent: float = 0.5
    num_inference_steps: int | None = None
    calibrate: bool = False

    def __post_init__(self):
        for name in ("threshold", "retention_ratio", "ratio_exponent"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}={value!r}: give a finite number >= 0")
        if self.retention_ratio > 1:
            raise ValueError(f"retention_ratio={self.retention_ratio!r}: give a fraction of the calls, 0 to 1")
        for name in ("max_skip_steps", "ratio_offset"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r}: give an integer >= 0")
        if self.calibrate:
            return
        if self.mag_ratios is None:
            raise ValueError("mag_ratios are missing: use Wan2.1-T2V-1.3B (the script's published ratios), give "
                             "params.mag_ratios, or let `repro calibrate` record them (calibrate: auto)")
        self.mag_ratios = tuple(float(r) for r in self.mag_ratios)
        if self.num_inference_steps is not None:
            calls = 2 * self.num_inference_steps
            first = int(calls * self.retention_ratio)
            if first < self.ratio_offset:
                raise ValueError(f"with {self.num_inference_steps} steps the script's rule starts at call "
                                 f"int({calls} * {self.retention_ratio}) = {first}, before the first ratio (call "
                                 f"{self.ratio_offset}); raise retention_ratio or lower ratio_offset")
            if len(self.mag_ratios) < calls - self.ratio_offset:
                raise ValueError(f"mag_ratios has {len(self.mag_ratios)} values; {self.num_inference_steps} steps "
                                 f"need {calls - self.ratio_offset} (calls {self.ratio_offset}..{calls - 1}, cond "
                                 f"and uncond interleaved)")


@dataclass
class MagCacheEvalState:
    """One CFG branch's accumulators (the script's ``accumulated_sim/steps/err[t%2]``)."""

    similarity: float = 1.0
    steps: int = 0
    error: float = 0.0


class MagCacheEvalPolicy:
    """The script's rule, one call at a time, with no model: ``decide(state, call)``; True: run the blocks."""

    def __init__(self, config: MagCacheEvalConfig):
        self.config = config

    def decide(self, state: MagCacheEvalState, call: int) -> tuple[bool, float | None, float | None]:
        """(compute, the ratio used, the accumulated error compared with the threshold) for call `call`."""
        c = self.config
        if c.calibrate or call < int(2 * c.num_inference_steps * c.retention_ratio):
            return True, None, None
        scale = c.mag_ratios[call - c.ratio_offset] ** c.ratio_exponent
        state.similarity *= scale
        state.steps += 1
        state.error += abs(1 - state.similarity)
        error = state.error
        if state.error <= c.threshold and state.steps <= c.max_skip_steps:
            return False, scale, error
        state.similarity, state.steps, state.error = 1.0, 0, 0.0
        return True, scale, error


class MagCacheEvalRun:
    def __init__(self, config: MagCacheEvalConfig):
        self.config = config
        self.policy = MagCacheEvalPolicy(config)
        self.trace: list[dict[str, Any]] = []

    def decide(self, state: Any, block: Any, args: tuple, kwargs: dict) -> bool:
        from experiments.instrumentation import record_decision

        call = 2 * state.step + (1 if state.branch == "uncond" else 0)
        compute, scale, error = self.policy.decide(state.policy, call)
        compute = compute or state.residual is None
        self.trace.append({"branch": state.branch, "step": state.step, "call": call, "ratio": scale,
                           "accumulated": error, "computed": compute})
        record_decision(state.branch, state.step, compute, scale, error)
        return compute


def apply(transformer: Any, config: MagCacheEvalConfig) -> None:
    from experiments.methods.residual_hooks import apply_block_stack_cache

    if config.num_inference_steps is None:
        raise ValueError("magcache_official_eval needs num_inference_steps (the script counts 2 calls per step)")
    run = MagCacheEvalRun(config)
    apply_block_stack_cache(transformer, HOOK, run.decide, MagCacheEvalState, float32_residual=True)
    transformer._repro_cache_run = run


def remove(transformer: Any) -> None:
    from experiments.methods.residual_hooks import remove_hooks

    remove_hooks(transformer, HOOK)
    transformer._repro_cache_run = None


def calibrate(transformer: Any, passes: list, num_inference_steps: int, params: dict) -> dict[str, list[float]]:
    """Per-call ratios in the script's convention: diffusers' per-branch ratios (the same formula), cond and
    uncond interleaved by call, averaged over the passes, the first ``ratio_offset`` calls dropped."""
    from experiments.methods.diffusers_caches import calibrate_mag_cache

    per_branch = calibrate_mag_cache(transformer, passes, num_inference_steps, params)
    cond = per_branch.get("cond") or next(iter(per_branch.values()))
    uncond = per_branch.get("uncond", cond)  # one branch (no CFG): both entries of a step are its ratio
    calls = [r for pair in zip(cond, uncond) for r in pair]
    offset = params.get("ratio_offset", OFFICIAL["ratio_offset"])
    return {"calls": calls[offset:]}


def published(model_id: str | None, params: dict | None = None) -> tuple[tuple[float, ...], str] | None:
    if model_id == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" and (params or {}).get("ratio_offset", 10) == 10:
        return WAN_13B_RATIOS, (f"{SOURCE} generate(): wan_t2v.model.__class__.ratio = np.array([...])**(0.5) "
                                f"(the values as written; the script takes their square roots)")
    return None


def deviations(params: dict, official: dict) -> list[str]:
    return [f"{name}={params[name]}: wan_magcache.py uses {value}" for name, value in OFFICIAL.items()
            if name in params and params[name] != value]


register_method(CacheMethod(
    "magcache_official_eval", MagCacheEvalConfig, apply, remove,
    key_params=("threshold", "max_skip_steps"), nonnegative=("threshold", "max_skip_steps", "retention_ratio"),
    # threshold 0 is no no-op here (the rule skips on <=: a ratio of exactly 1 adds no error); K = 0 is (with
    # retention 1 the rule never starts, so short runs need no ratios before call 10 either)
    wired=("num_inference_steps", "calibrate"), no_op={"max_skip_steps": 0, "retention_ratio": 1.0},
    probe={"threshold": 10.0, "retention_ratio": 0.9, "max_skip_steps": 2},
    calibrated_field="mag_ratios", calibrate=calibrate, published=published, calibration_params=("ratio_offset",),
    ranges={"retention_ratio": (0, 1)}, deviations=deviations, origin="project", aggressiveness="threshold",
    doc="MagCache as its Wan2.1 evaluation script (the source of the paper's Table 1) runs it: one interleaved "
        "cond/uncond ratio list from call 10, square roots of the ratios, skip on <=, retention int(2N*0.2) calls",
))
