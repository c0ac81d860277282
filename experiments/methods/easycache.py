"""EasyCache (Zhou et al., "Less is Enough: Training-Free Video Diffusion Acceleration via Runtime-Adaptive Caching", 2025).

No offline calibration: the method watches the transformer at run time. After each fully computed
call it estimates the *transformation rate* ``k = mean|v_i - v_j| / mean|x_i - x_j|`` between the two
most recent computed calls ``j < i`` (``x``: the transformer's input latent, ``v``: its output). At a
later call ``t`` it predicts the relative output change from the input change alone,
``k * (mean|x_t - x_{t-1}| / mean|v_i|)``, and accumulates it; while the sum stays under
``threshold`` the transformer is skipped and returns ``x_t + (v_i - x_i)``, the cached
input-to-output residual; at the threshold it runs again and the sum restarts from 0. The first
``warmup_steps`` steps and the last ``final_steps`` always run.

Official behaviour (H-EmbodVis/EasyCache; issue 29 reviewed commit 5127804):

* ``EasyCache4Wan2.1/easycache_generate.py`` ``easycache_forward`` (the same rule is in
  ``EasyCache4Wan2.2/easycache_generate.py`` at commit 3149a41, read here): CFG runs as two calls per
  step, cond (even ``cnt``) then uncond (odd). **Only the cond call decides**: it keeps the rate ``k``,
  the accumulator and the previous input, and sets ``should_calc_current_pair``; the uncond call
  follows that decision and, when skipping, reuses *its own* cached residual (``cache_odd``).
  Forced: ``cnt < ret_steps or cnt >= num_steps*2 - 2`` with ``ret_steps = 10 * 2`` hard-coded in the
  Wan2.1 script (10 warm-up steps; its ``--ret_steps`` flag is parsed and not used) and the last step.
  ``k`` is a float32 tensor ``output_change / input_change`` (a zero input change gives inf or NaN, and
  a NaN accumulator never skips); the cache is ``output - raw_input`` of float32 tensors.
* ``EasyCache4HunyuanVideo/easycache_sample_video.py`` ``easycache_forward`` (commit 313ae5f, read
  here): one call per step, the same rule; ``ret_steps = 5``, the last step forced, threshold 0.025.

The family's fixed params carry the official warm-up (Wan 10, HunyuanVideo 5). Options that deviate
(named, recorded with the point, listed by ``repro compare``; see :func:`deviations`):
``per_branch_decisions`` (every CFG branch runs the rule on its own state, the project's earlier
behaviour), ``warmup_steps`` / ``final_steps`` other than the script's. Families without an
official EasyCache script (FLUX, LTX-Video, CogView4) run the HunyuanVideo script's rule; compare
says so.

Written from the official scripts' rule and the paper; no code of the EasyCache repository is copied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from experiments.methods.registry import CacheMethod, register_method

HOOK = "repro_easycache"
LEADER = "cond"  # the CFG branch whose call decides for its step (EasyCache4Wan2.1: the even, conditional call)
#: Official warm-up steps by the script's model, for messages (the family's fixed params carry them).
OFFICIAL_WARMUP = {"EasyCache4Wan2.1": 10, "EasyCache4HunyuanVideo": 5}


@dataclass
class EasyCacheConfig:
    """EasyCache settings; the family's fixed params set the official warm-up.

    Args:
        threshold: skip while the accumulated predicted output change is below this; 0 never skips.
        warmup_steps: first steps that always run (EasyCache4Wan2.1: 10, EasyCache4HunyuanVideo: 5).
        final_steps: last steps that always run (official: 1).
        per_branch_decisions: project option, not the official rule: every CFG branch decides on its own
            rate and accumulator (official: the cond call decides for both, the uncond call follows).
        num_inference_steps: the pipeline's step count (wired from the spec).
    """

    threshold: float = 0.05
    warmup_steps: int = 5
    final_steps: int = 1
    per_branch_decisions: bool = False
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
    """One CFG branch's rule state (a follower branch only uses ``has_output``)."""

    previous_input: Any = None  # x of this branch's previous call (computed or not)
    previous_output: Any = None  # v of the last computed call
    computed_input: Any = None  # x of the last computed call (the official prev_prev_raw_input)
    rate: Any = None  # k, a 0-dim float32 tensor
    accumulated: Any = 0.0


def _mean_abs_diff(a: Any, b: Any) -> Any:
    return (a.float() - b.float()).abs().mean()


@dataclass
class EasyCachePolicy:
    """The decision rule, one call at a time, with no model: ``decide`` then, on a computed call, ``computed``.

    The hook feeds the transformer's input and output; the replay tests feed recorded or synthetic ones.
    Arithmetic is on 0-dim float32 tensors, as the official code's (a NaN or infinite rate behaves as there).
    """

    config: EasyCacheConfig
    pair: dict[int, bool] = field(default_factory=dict)  # step -> the leader's decision (should_calc_current_pair)

    def forced(self, step: int) -> bool:
        steps = self.config.num_inference_steps
        return step < self.config.warmup_steps or (steps is not None and step >= steps - self.config.final_steps)

    def decide(self, state: EasyCacheState, branch: str, step: int, x: Any,
               has_cache: bool) -> tuple[bool, float | None, float | None]:
        """(compute, predicted change, accumulated value compared with the threshold) for one call."""
        if not self.config.per_branch_decisions and branch != LEADER and step in self.pair:
            return self.pair[step] or not has_cache, None, None  # the follower: the cond call decided
        compute, signal, compared = True, None, None
        if self.forced(step):
            state.accumulated = 0.0
        elif state.previous_input is not None and state.previous_output is not None and state.rate is not None:
            signal = state.rate * (_mean_abs_diff(x, state.previous_input) / state.previous_output.float().abs().mean())
            state.accumulated = state.accumulated + signal
            compared = state.accumulated
            if compared < self.config.threshold:
                compute = False
            else:
                state.accumulated = 0.0
        state.previous_input = x
        if branch == LEADER:
            self.pair[step] = compute
        return compute or not has_cache, _float(signal), _float(compared)

    def computed(self, state: EasyCacheState, branch: str, step: int, x: Any, v: Any) -> None:
        """After a computed call: the rate between it and the branch's previous computed call."""
        if not self.config.per_branch_decisions and branch != LEADER and step in self.pair:
            state.previous_output = v  # a follower keeps only its own residual (the hook stores it)
            return
        if state.previous_output is not None and state.computed_input is not None:
            state.rate = _mean_abs_diff(v, state.previous_output) / _mean_abs_diff(x, state.computed_input)
        state.computed_input, state.previous_output = x, v


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


class EasyCacheRun:
    """One enabled EasyCache: its policy and what it saw per call (branch, step, signal, accumulated, computed)."""

    def __init__(self, config: EasyCacheConfig):
        self.config = config
        self.policy = EasyCachePolicy(config)
        self.trace: list[dict[str, Any]] = []

    def decide(self, state: Any, x: Any) -> bool:
        from experiments.instrumentation import record_decision

        if state.step == 0 and state.branch == LEADER:
            self.policy.pair.clear()  # a new pipeline call (diffusers resets the branch states at its end)
        compute, signal, compared = self.policy.decide(state.policy, state.branch, state.step, x,
                                                       state.residual is not None)
        self.trace.append({"branch": state.branch, "step": state.step, "change": signal, "accumulated": compared,
                           "computed": compute})
        record_decision(state.branch, state.step, compute, signal, compared)
        return compute

    def computed(self, state: Any, x: Any, v: Any) -> None:
        self.policy.computed(state.policy, state.branch, state.step - 1, x, v)


def apply(transformer: Any, config: EasyCacheConfig) -> None:
    from experiments.methods.residual_hooks import apply_transformer_cache

    cfg = getattr(transformer, "config", None)
    inputs, outputs = getattr(cfg, "in_channels", None), getattr(cfg, "out_channels", None)
    if inputs is not None and outputs is not None and inputs != outputs:
        raise ValueError(f"easycache reuses the transformer's input-to-output residual, so it needs in_channels == "
                         f"out_channels; {type(transformer).__name__} has {inputs} -> {outputs}")
    run = EasyCacheRun(config)
    # float32 residual: the official Wan scripts cache output - raw_input of float32 tensors
    apply_transformer_cache(transformer, HOOK, run.decide, run.computed, EasyCacheState, float32_residual=True)
    transformer._repro_cache_run = run


def remove(transformer: Any) -> None:
    from experiments.methods.residual_hooks import remove_hooks

    remove_hooks(transformer, HOOK)
    transformer._repro_cache_run = None


def deviations(params: dict, official: dict) -> list[str]:
    """What in `params` differs from the official script of the family (`official`: its fixed params)."""
    out = []
    if "warmup_steps" not in official:
        out.append("easycache has no official script for this family; the rule of EasyCache4HunyuanVideo "
                   "(5 warm-up steps, the last step forced) is used")
    elif params.get("warmup_steps", official["warmup_steps"]) != official["warmup_steps"]:
        out.append(f"warmup_steps={params['warmup_steps']}: the official script for this family runs "
                   f"{official['warmup_steps']} (EasyCache4Wan2.1 hard-codes ret_steps = 10*2; "
                   f"EasyCache4HunyuanVideo ret_steps = 5)")
    if params.get("final_steps", 1) != 1:
        out.append(f"final_steps={params['final_steps']}: the official scripts force the last step only")
    if params.get("per_branch_decisions"):
        out.append("per_branch_decisions=True: every CFG branch decides on its own rate and accumulator; "
                   "officially the cond call decides for both and the uncond call follows")
    return out


register_method(CacheMethod(
    "easycache", EasyCacheConfig, apply, remove,
    key_params=("threshold", "warmup_steps"), nonnegative=("threshold", "warmup_steps", "final_steps"),
    wired=("num_inference_steps",), no_op={"threshold": 0.0}, probe={"threshold": 5.0, "warmup_steps": 2},
    deviations=deviations, origin="project", aggressiveness="threshold",
    doc="EasyCache: runtime transformation-rate estimate; skips the whole transformer reusing its residual. "
        "Official rule of EasyCache4Wan2.1 (the cond call decides for both CFG branches, 10 warm-up steps) and "
        "EasyCache4HunyuanVideo (5); deviations only by name: per_branch_decisions, warmup_steps/final_steps "
        "other than the script's",
))
