"""EasyCache (Zhou et al., "Less is Enough: Training-Free Video Diffusion Acceleration via Runtime-Adaptive Caching", 2025).

No offline calibration: the method watches the transformer at run time. After each fully
computed call it estimates the *transformation rate* ``k = mean|v_i - v_j| / mean|x_i - x_j|``
between the two most recent computed calls ``j < i`` (``x``: the transformer's input latent,
``v``: its output). At a later call ``t`` it predicts the relative output change from the input
change alone, ``k * mean|x_t - x_{t-1}| / mean|v_i|``, and accumulates it; while the sum stays
under ``threshold`` the transformer is skipped and returns ``x_t + (v_i - x_i)``, the cached
input-to-output residual; at the threshold it runs again and the sum restarts from 0. The first
``warmup_steps`` steps (which also provide the first rate) and the last ``final_steps`` always run.

Written from the paper's description; this file holds no code of the EasyCache repository.
Choice where the paper is loose: the rate is measured between the last two *computed* calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from experiments.methods.registry import CacheMethod, register_method

HOOK = "repro_easycache"


@dataclass
class EasyCacheConfig:
    """EasyCache settings.

    Args:
        threshold: skip while the accumulated predicted output change is below this; 0 never skips.
        warmup_steps: first steps of each CFG branch that always run (EasyCache4HunyuanVideo uses 5).
        final_steps: last steps that always run.
        num_inference_steps: the pipeline's step count (wired from the spec).
    """

    threshold: float = 0.05
    warmup_steps: int = 5
    final_steps: int = 1
    num_inference_steps: int | None = None

    def __post_init__(self):
        if not isinstance(self.threshold, (int, float)) or isinstance(self.threshold, bool) or self.threshold < 0:
            raise ValueError(f"threshold={self.threshold!r}: give a number >= 0 (0 never skips)")
        for name in ("warmup_steps", "final_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r}: give an integer >= 0")


@dataclass
class EasyCacheState:
    previous_input: Any = None  # x of the previous call of this branch (computed or not)
    computed_input: Any = None  # x_i, v_i of the last computed call
    computed_output: Any = None
    rate: float | None = None  # k
    accumulated: float = 0.0


def decide(config: EasyCacheConfig, state: EasyCacheState, step: int, change: float | None) -> bool:
    """One EasyCache decision (True: run); `change` = mean|x_t - x_{t-1}| / mean|v_i|, None when unknown."""
    steps = config.num_inference_steps
    forced = (change is None or state.rate is None or step < config.warmup_steps
              or (steps is not None and step >= steps - config.final_steps))
    if not forced:
        state.accumulated += state.rate * change
        if state.accumulated < config.threshold:
            return False
    state.accumulated = 0.0
    return True


def _mean_abs_diff(a: Any, b: Any) -> float:
    return float((a.float() - b.float()).abs().mean())


class EasyCacheRun:
    """What one enabled EasyCache saw: per call (branch, step, change, rate, accumulated, computed)."""

    def __init__(self, config: EasyCacheConfig):
        self.config = config
        self.trace: list[dict[str, Any]] = []

    def decide(self, state: Any, x: Any) -> bool:
        policy: EasyCacheState = state.policy
        change = None
        if policy.previous_input is not None and policy.computed_output is not None:
            norm = float(policy.computed_output.float().abs().mean())
            change = _mean_abs_diff(x, policy.previous_input) / norm if norm > 0 else None
        policy.previous_input = x
        compute = decide(self.config, policy, state.step, change)
        self.trace.append({"branch": state.branch, "step": state.step, "change": change, "rate": policy.rate,
                           "accumulated": policy.accumulated, "computed": compute})
        return compute

    def computed(self, state: Any, x: Any, v: Any) -> None:
        policy: EasyCacheState = state.policy
        if policy.computed_input is not None:
            moved = _mean_abs_diff(x, policy.computed_input)
            if moved > 0:
                policy.rate = _mean_abs_diff(v, policy.computed_output) / moved
        policy.computed_input, policy.computed_output = x, v


def apply(transformer: Any, config: EasyCacheConfig) -> None:
    from experiments.methods.residual_hooks import apply_transformer_cache

    cfg = getattr(transformer, "config", None)
    inputs, outputs = getattr(cfg, "in_channels", None), getattr(cfg, "out_channels", None)
    if inputs is not None and outputs is not None and inputs != outputs:
        raise ValueError(f"easycache reuses the transformer's input-to-output residual, so it needs in_channels == "
                         f"out_channels; {type(transformer).__name__} has {inputs} -> {outputs}")
    run = EasyCacheRun(config)
    apply_transformer_cache(transformer, HOOK, run.decide, run.computed, EasyCacheState)
    transformer._repro_cache_run = run


def remove(transformer: Any) -> None:
    from experiments.methods.residual_hooks import remove_hooks

    remove_hooks(transformer, HOOK)
    transformer._repro_cache_run = None


register_method(CacheMethod(
    "easycache", EasyCacheConfig, apply, remove,
    key_params=("threshold", "warmup_steps"), nonnegative=("threshold", "warmup_steps", "final_steps"),
    wired=("num_inference_steps",), no_op={"threshold": 0.0}, probe={"threshold": 5.0, "warmup_steps": 2},
    origin="project", aggressiveness="threshold",
    doc="EasyCache: runtime transformation-rate estimate; skips the whole transformer reusing its residual",
))
