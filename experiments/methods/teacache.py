"""TeaCache (Liu et al., "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model", CVPR 2025).

At every transformer call TeaCache measures how much the first block's timestep-modulated input
moved since the previous call (relative L1: ``mean|m_t - m_{t-1}| / mean|m_{t-1}|``), maps that
through a per-model polynomial (the *rescaling*: input change -> expected output change) and adds
it to an accumulator. While the accumulator stays under ``threshold`` the whole block stack is
skipped and the residual of the last computed call (output of the last block minus input of the
first) is added to the input instead; when it reaches the threshold the blocks run and the
accumulator restarts from 0. The first ``warmup_steps`` and last ``final_steps`` steps always run.

The modulated input depends on the family's block: ``norm1`` is ``block.norm1(hidden_states,
emb=temb)[0]`` (FLUX, HunyuanVideo: AdaLayerNormZero), ``temb`` is the timestep projection the
block receives (Wan: ``e0``, as TeaCache4Wan2.1 with ``use_ret_steps``). Coefficients come from
the spec, from the published table below (by hub id), or from ``repro calibrate``, which fits
``numpy.polyfit`` of the block-stack residual's relative change against the modulated input's
relative change over uncached calibration passes (stored and reused like MagCache ratios).

Written from the paper's description; this file holds no code of the TeaCache repository.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from experiments.methods.registry import CacheMethod, register_method

HOOK = "repro_teacache"
DEGREE = 4  # the published fits are degree-4 polynomials

#: Published rescaling polynomials (highest power first) by hub id, with where they were published.
PUBLISHED: dict[str, tuple[tuple[float, ...], str]] = {
    "black-forest-labs/FLUX.1-dev": (
        (4.98651651e+02, -2.83781631e+02, 5.58554382e+01, -3.82021401e+00, 2.64230861e-01),
        "TeaCache4FLUX (ali-vilab/TeaCache); the same values are welltop-cn/ComfyUI-TeaCache nodes.py "
        "SUPPORTED_MODELS_COEFFICIENTS['flux']",
    ),
    "hunyuanvideo-community/HunyuanVideo": (
        (7.33226126e+02, -4.01131952e+02, 6.75869174e+01, -3.14987800e+00, 9.61237896e-02),
        "TeaCache4HunyuanVideo (ali-vilab/TeaCache); the same values are welltop-cn/ComfyUI-TeaCache nodes.py "
        "SUPPORTED_MODELS_COEFFICIENTS['hunyuan_video']",
    ),
    # Wan: fitted on e0, the timestep projection each block receives (TeaCache4Wan2.1 use_ret_steps=True,
    # which the authors pair with 5 warm-up steps and no forced final step).
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": (
        (-5.21862437e+04, 9.23041404e+03, -5.28275948e+02, 1.36987616e+01, -4.99875664e-02),
        "TeaCache4Wan2.1 use_ret_steps coefficients for Wan2.1-T2V-1.3B (ali-vilab/TeaCache); also "
        "'wan2.1_t2v_1.3B_ret_mode' in ComfyUI-TeaCache nodes.py",
    ),
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": (
        (-3.03318725e+05, 4.90537029e+04, -2.65530556e+03, 5.87365115e+01, -3.15583525e-01),
        "TeaCache4Wan2.1 use_ret_steps coefficients for Wan2.1-T2V-14B (ali-vilab/TeaCache); also "
        "'wan2.1_t2v_14B_ret_mode' in ComfyUI-TeaCache nodes.py",
    ),
}

MODULATED_INPUTS = ("norm1", "temb")


@dataclass
class TeaCacheConfig:
    """TeaCache settings.

    Args:
        threshold: skip while the accumulated rescaled input change is below this; 0 never skips.
        coefficients: the rescaling polynomial, highest power first (published, calibrated or given).
        modulated_input: "norm1" (FLUX, HunyuanVideo) or "temb" (Wan); set per family.
        warmup_steps: first steps of each CFG branch that always run.
        final_steps: last steps that always run.
        max_skip_steps: at most this many skipped calls in a row (0: no limit).
        num_inference_steps: the pipeline's step count (wired from the spec).
        calibrate: run every block and record (input change, residual change) pairs instead of caching.
    """

    threshold: float = 0.2
    coefficients: tuple[float, ...] | None = None
    modulated_input: str = "norm1"
    warmup_steps: int = 1
    final_steps: int = 1
    max_skip_steps: int = 0
    num_inference_steps: int | None = None
    calibrate: bool = False

    def __post_init__(self):
        if not isinstance(self.threshold, (int, float)) or isinstance(self.threshold, bool) or self.threshold < 0:
            raise ValueError(f"threshold={self.threshold!r}: give a number >= 0 (0 never skips)")
        if self.modulated_input not in MODULATED_INPUTS:
            raise ValueError(f"modulated_input={self.modulated_input!r}: allowed are {', '.join(MODULATED_INPUTS)}")
        for name in ("warmup_steps", "final_steps", "max_skip_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r}: give an integer >= 0")
        if self.coefficients is not None:
            self.coefficients = tuple(float(c) for c in self.coefficients)
            if not self.coefficients or not all(math.isfinite(c) for c in self.coefficients):
                raise ValueError("coefficients: give a non-empty list of finite numbers, highest power first")
        elif not self.calibrate:
            raise ValueError("coefficients are missing: give params.coefficients, use a model with published "
                             "coefficients, or let `repro calibrate` fit them (calibrate: auto)")


def rescale(coefficients: tuple[float, ...], x: float) -> float:
    """|polynomial(x)|, highest power first: the expected output change for an input change x."""
    value = 0.0
    for c in coefficients:
        value = value * x + c
    return abs(value)


@dataclass
class TeaCacheState:
    previous_input: Any = None  # the modulated input of the previous call of this branch
    accumulated: float = 0.0
    skipped_in_row: int = 0
    input_change: float | None = None  # of the current call (calibration pairs it with the residual's)
    previous_residual: Any = None


def decide(config: TeaCacheConfig, state: TeaCacheState, step: int, input_change: float | None) -> bool:
    """One TeaCache decision (True: run the blocks); `input_change` is None on a branch's first call."""
    steps = config.num_inference_steps
    forced = (config.calibrate or input_change is None or step < config.warmup_steps
              or (steps is not None and step >= steps - config.final_steps))
    if not forced:
        state.accumulated += rescale(config.coefficients, input_change)
        under = state.accumulated < config.threshold
        if under and (config.max_skip_steps == 0 or state.skipped_in_row < config.max_skip_steps):
            state.skipped_in_row += 1
            return False
    state.accumulated = 0.0
    state.skipped_in_row = 0
    return True


def modulated_input(block: Any, kind: str, args: tuple, kwargs: dict) -> Any:
    """The first block's timestep-modulated input, read from its call arguments."""
    from diffusers.utils.torch_utils import unwrap_module

    from experiments.methods.residual_hooks import TransformerBlockRegistry

    meta = TransformerBlockRegistry.get(unwrap_module(block).__class__)
    temb = meta._get_parameter_from_args_kwargs("temb", args, kwargs)
    if kind == "temb":
        return temb
    hidden = meta._get_parameter_from_args_kwargs(meta.hidden_states_argument_name, args, kwargs)
    out = block.norm1(hidden, emb=temb)
    return out[0] if isinstance(out, tuple) else out


def _check_block(block: Any, kind: str) -> None:
    import inspect

    if kind == "norm1":
        norm = getattr(block, "norm1", None)
        if norm is None or "emb" not in inspect.signature(norm.forward).parameters:
            raise ValueError(f"teacache: modulated_input='norm1' needs a first block whose norm1 takes the timestep "
                             f"embedding (AdaLayerNormZero); {type(block).__name__} has none. Families with "
                             f"the timestep projection as block input (Wan) use modulated_input='temb'")
    elif "temb" not in inspect.signature(type(block).forward).parameters:
        raise ValueError(f"teacache: {type(block).__name__}.forward takes no temb argument")


class TeaCacheRun:
    """What one enabled TeaCache saw: per call (branch, step, input change, accumulated, computed)."""

    def __init__(self, config: TeaCacheConfig):
        self.config = config
        self.trace: list[dict[str, Any]] = []
        self.pairs: dict[str, list[tuple[float, float]]] = {}  # calibration: branch -> (input, residual change)

    def decide(self, state: Any, block: Any, args: tuple, kwargs: dict) -> bool:
        from experiments.methods.residual_hooks import rel_l1

        policy: TeaCacheState = state.policy
        current = modulated_input(block, self.config.modulated_input, args, kwargs)
        change = None if policy.previous_input is None else rel_l1(current, policy.previous_input)
        policy.previous_input = current
        policy.input_change = change
        compute = decide(self.config, policy, state.step, change)
        self.trace.append({"branch": state.branch, "step": state.step, "input_change": change,
                           "accumulated": policy.accumulated, "computed": compute})
        return compute

    def observe(self, state: Any, residual: Any) -> None:
        from experiments.methods.residual_hooks import rel_l1

        policy: TeaCacheState = state.policy
        if self.config.calibrate and policy.previous_residual is not None and policy.input_change is not None:
            y = rel_l1(residual, policy.previous_residual)
            if math.isfinite(y) and math.isfinite(policy.input_change):
                self.pairs.setdefault(state.branch, []).append((policy.input_change, y))
        policy.previous_residual = residual if self.config.calibrate else None


def apply(transformer: Any, config: TeaCacheConfig) -> None:
    from experiments.methods.residual_hooks import apply_block_stack_cache, check_blocks

    _check_block(check_blocks(transformer, "teacache")[0][1], config.modulated_input)
    run = TeaCacheRun(config)
    apply_block_stack_cache(transformer, HOOK, run.decide, TeaCacheState, run.observe)
    transformer._repro_cache_run = run


def remove(transformer: Any) -> None:
    from experiments.methods.residual_hooks import remove_hooks

    remove_hooks(transformer, HOOK)
    transformer._repro_cache_run = None


def fit(pairs: list[tuple[float, float]], degree: int = DEGREE) -> list[float]:
    """Least-squares polynomial (highest power first) of residual change against input change."""
    import numpy as np

    if len(pairs) <= degree:
        raise ValueError(f"TeaCache calibration needs more than {degree} (input change, residual change) pairs per "
                         f"branch to fit a degree-{degree} polynomial; got {len(pairs)}: use more steps or prompts")
    x, y = np.asarray(pairs, dtype=np.float64).T
    return [float(c) for c in np.polyfit(x, y, degree)]


def calibrate(transformer: Any, passes: list, num_inference_steps: int, params: dict) -> dict[str, list[float]]:
    """Coefficients per CFG branch, fitted over every calibration pass (one uncached generation each)."""
    from experiments.methods.registry import enable_cache

    config = TeaCacheConfig(calibrate=True, num_inference_steps=num_inference_steps,
                            modulated_input=params.get("modulated_input", "norm1"))
    disable = enable_cache(transformer, config)
    run = transformer._repro_cache_run
    try:
        for generate in passes:
            generate()
    finally:
        disable()
    if not run.pairs:
        raise ValueError("TeaCache calibration recorded no (input change, residual change) pairs")
    return {branch: fit(pairs) for branch, pairs in run.pairs.items()}


def published(model_id: str | None) -> tuple[tuple[float, ...], str] | None:
    return PUBLISHED.get(model_id) if model_id else None


register_method(CacheMethod(
    "teacache", TeaCacheConfig, apply, remove,
    key_params=("threshold", "max_skip_steps"),
    nonnegative=("threshold", "warmup_steps", "final_steps", "max_skip_steps"),
    wired=("num_inference_steps", "calibrate"), no_op={"threshold": 0.0}, probe={"threshold": 5.0},
    calibrated_field="coefficients", calibrate=calibrate, calibrate_over="all", published=published,
    origin="project", aggressiveness="threshold",
    doc="TeaCache: accumulated rescaled change of the first block's modulated input; skips the block stack",
))
