"""TeaCache (Liu et al., "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model", CVPR 2025).

At every transformer call TeaCache measures how much a timestep-modulated input moved since the
previous call of the same CFG branch (relative L1: ``mean|m_t - m_{t-1}| / mean|m_{t-1}|``), maps it
through a per-model polynomial (the *rescaling*: input change -> expected output change) and adds
the polynomial's value to an accumulator. While the accumulator stays under ``threshold`` the whole
block stack is skipped and the residual of the branch's last computed call (output of the last block
minus input of the first) is added instead; at the threshold the blocks run and the accumulator
restarts from 0. The first ``warmup_steps`` and the last ``final_steps`` steps always run.

Official behaviour, per script (ali-vilab/TeaCache; issue 29 reviewed commit 7c10efc; the text was
read here from the copy zhajingjing/cse585@470d440, whose TeaCache4* folders are that repository's):

* ``TeaCache4FLUX/teacache_flux.py`` and ``TeaCache4HunyuanVideo/teacache_sample_video.py``
  (``teacache_forward``): ``m = transformer_blocks[0].norm1(hidden_states, emb=temb)[0]``
  (HunyuanVideo: ``modulate(double_blocks[0].img_norm1(img), shift, scale)``, the same tensor),
  ``if self.cnt == 0 or self.cnt == self.num_steps-1: should_calc = True`` (1 warm-up step, the last
  step forced), ``self.accumulated_rel_l1_distance += rescale_func(...)`` with
  ``rescale_func = np.poly1d(coefficients)``, skip while ``accumulated < rel_l1_thresh``.
  ``modulated_input="norm1"`` here.
* ``TeaCache4Wan2.1/teacache_generate.py`` (``teacache_forward`` and ``generate``): CFG runs as two
  calls per step, counted together by ``cnt``; even calls (cond) and odd calls (uncond) keep their
  own accumulator and previous input. Two modes: ``--use_ret_steps`` uses ``modulated_inp = e0`` (the
  timestep projection every block receives), the "ret" coefficients, ``ret_steps = 5*2`` and
  ``cutoff_steps = sample_steps*2`` (5 warm-up steps, no forced last step); without it (the
  README's default command) ``modulated_inp = e`` (the condition embedder's time embedding), other
  coefficients, ``ret_steps = 1*2`` and ``cutoff_steps = sample_steps*2 - 2`` (1 warm-up step, the
  last step forced). ``e`` and ``e0`` are computed under ``amp.autocast(dtype=torch.float32)``, and
  the residual stream (and so the cached residual) is float32. ``modulated_input="wan"`` here: ``e``
  and ``e0`` are recomputed in float32 from the timestep the condition embedder receives (a hook on
  ``transformer.condition_embedder``; diffusers returns them in the model's dtype).

A project rule, not an official TeaCache rule (``modulated_input="temb"``): for architectures with
no TeaCache script the project may use, or whose script it does not implement (CogView4; LTX-Video,
whose TeaCache4LTX-Video modulates ``norm1(hidden_states)`` by the block's scale/shift table), the
signal is the first block's ``temb`` argument: the timestep projection every block receives, the
quantity TeaCache4Wan2.1's ``--use_ret_steps`` mode reads as ``e0``, with the FLUX/HunyuanVideo
schedule (1 warm-up step, the last step forced) and coefficients fitted by ``repro calibrate``. Every
point run so carries the deviation line naming it (docs/fidelity.md).

Options that deviate from the official code (each named, recorded with the point and listed by
``repro compare``; see :func:`deviations`): ``absolute_rescale`` (add ``|poly(x)|``),
``max_skip_steps`` (cap a run of skips), ``warmup_steps`` / ``final_steps`` other than the
script's, and ``calibration_target="residual"`` (``repro calibrate`` fitting the block-stack
residual's change instead of the model output's, which the published coefficients were fitted on).

Written from the official scripts' rule and the paper; no code of the TeaCache repository is copied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from experiments.methods.registry import CacheMethod, register_method

HOOK = "repro_teacache"
DEGREE = 4  # the published fits are degree-4 polynomials

_TC = "ali-vilab/TeaCache (read from the copy zhajingjing/cse585@470d440)"
#: Published rescaling polynomials (highest power first) by hub id and mode ("default", or "ret" for
#: TeaCache4Wan2.1's --use_ret_steps), with where they were published.
PUBLISHED: dict[str, dict[str, tuple[tuple[float, ...], str]]] = {
    "black-forest-labs/FLUX.1-dev": {"default": (
        (4.98651651e+02, -2.83781631e+02, 5.58554382e+01, -3.82021401e+00, 2.64230861e-01),
        f"{_TC} TeaCache4FLUX/teacache_flux.py teacache_forward `coefficients = [...]`; the same values are "
        "welltop-cn/ComfyUI-TeaCache nodes.py SUPPORTED_MODELS_COEFFICIENTS['flux']")},
    "hunyuanvideo-community/HunyuanVideo": {"default": (
        (7.33226126e+02, -4.01131952e+02, 6.75869174e+01, -3.14987800e+00, 9.61237896e-02),
        f"{_TC} TeaCache4HunyuanVideo/teacache_sample_video.py teacache_forward `coefficients = [...]`; also "
        "SUPPORTED_MODELS_COEFFICIENTS['hunyuan_video'] in ComfyUI-TeaCache nodes.py")},
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": {
        "default": ((2.39676752e+03, -1.31110545e+03, 2.01331979e+02, -8.29855975e+00, 1.37887774e-01),
                    f"{_TC} TeaCache4Wan2.1/teacache_generate.py generate(): `if '1.3B' in args.ckpt_dir` "
                    "without --use_ret_steps; 'wan2.1_t2v_1.3B' in ComfyUI-TeaCache nodes.py"),
        "ret": ((-5.21862437e+04, 9.23041404e+03, -5.28275948e+02, 1.36987616e+01, -4.99875664e-02),
                f"{_TC} TeaCache4Wan2.1/teacache_generate.py generate(): `if '1.3B' in args.ckpt_dir` with "
                "--use_ret_steps; 'wan2.1_t2v_1.3B_ret_mode' in ComfyUI-TeaCache nodes.py"),
    },
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": {
        "default": ((-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404),
                    f"{_TC} TeaCache4Wan2.1/teacache_generate.py generate(): `if '14B' in args.ckpt_dir` "
                    "without --use_ret_steps; 'wan2.1_t2v_14B' in ComfyUI-TeaCache nodes.py"),
        "ret": ((-3.03318725e+05, 4.90537029e+04, -2.65530556e+03, 5.87365115e+01, -3.15583525e-01),
                f"{_TC} TeaCache4Wan2.1/teacache_generate.py generate(): `if '14B' in args.ckpt_dir` with "
                "--use_ret_steps; 'wan2.1_t2v_14B_ret_mode' in ComfyUI-TeaCache nodes.py"),
    },
}

MODULATED_INPUTS = ("norm1", "wan", "temb")
CALIBRATION_TARGETS = ("output", "residual")
#: The official script behind each modulated input, for messages.
SCRIPTS = {"norm1": "TeaCache4FLUX / TeaCache4HunyuanVideo", "wan": "TeaCache4Wan2.1",
           "temb": "the project's temb rule (no official script)"}


@dataclass
class TeaCacheConfig:
    """TeaCache settings; the defaults are the official script's for the family (see the module docstring).

    Args:
        threshold: skip while the accumulated rescaled input change is below this; 0 never skips.
        coefficients: the rescaling polynomial, highest power first (published, calibrated or given).
        modulated_input: "norm1" (FLUX, HunyuanVideo: the first block's norm1 output) or "wan"
            (TeaCache4Wan2.1: the time embedding e, or with ``use_ret_steps`` the timestep projection e0,
            both in float32, and a float32 residual); set per family (None: "wan" for a transformer with
            Wan's condition embedder, else "norm1"). "temb" is a project rule, not an official one: the first
            block's ``temb`` argument (see the module docstring), for CogView4 and LTX-Video.
        use_ret_steps: TeaCache4Wan2.1's --use_ret_steps mode: signal e0, its own coefficients, 5 warm-up
            steps and no forced last step (False: signal e, 1 warm-up step, the last step forced).
        warmup_steps: first steps of each CFG branch that always run; None: the official count.
        final_steps: last steps that always run; None: the official count.
        max_skip_steps: project option, not in the official code: at most this many skipped calls in a row
            (0: no limit, as the official code).
        absolute_rescale: project option, not in the official code: accumulate |poly(x)| instead of poly(x)
            (they differ where the polynomial is negative: the Wan polynomials outside a window of x).
        calibration_target: what `repro calibrate` fits the polynomial to: "output" (the model output's
            relative change, as the published coefficients) or "residual" (the block stack's, project option).
        num_inference_steps: the pipeline's step count (wired from the spec).
        calibrate: run every block and record (input change, target change) pairs instead of caching.
    """

    threshold: float = 0.2
    coefficients: tuple[float, ...] | None = None
    modulated_input: str | None = None
    use_ret_steps: bool = False
    warmup_steps: int | None = None
    final_steps: int | None = None
    max_skip_steps: int = 0
    absolute_rescale: bool = False
    calibration_target: str = "output"
    num_inference_steps: int | None = None
    calibrate: bool = False

    def __post_init__(self):
        if not isinstance(self.threshold, (int, float)) or isinstance(self.threshold, bool) or self.threshold < 0:
            raise ValueError(f"threshold={self.threshold!r}: give a number >= 0 (0 never skips)")
        if self.modulated_input is not None and self.modulated_input not in MODULATED_INPUTS:
            raise ValueError(f"modulated_input={self.modulated_input!r}: allowed are {', '.join(MODULATED_INPUTS)}")
        if self.calibration_target not in CALIBRATION_TARGETS:
            raise ValueError(f"calibration_target={self.calibration_target!r}: allowed are "
                             f"{', '.join(CALIBRATION_TARGETS)}")
        if self.use_ret_steps and self.modulated_input in ("norm1", "temb"):
            raise ValueError("use_ret_steps is a mode of TeaCache4Wan2.1 only (modulated_input='wan'); the FLUX "
                             "and HunyuanVideo scripts and the project's temb rule have no such mode")
        for name in ("warmup_steps", "final_steps", "max_skip_steps"):
            value = getattr(self, name)
            if value is None and name != "max_skip_steps":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                official = " (or leave it out for the official count)" if name != "max_skip_steps" else ""
                raise ValueError(f"{name}={value!r}: give an integer >= 0{official}")
        if self.coefficients is not None:
            self.coefficients = tuple(float(c) for c in self.coefficients)
            if not self.coefficients or not all(math.isfinite(c) for c in self.coefficients):
                raise ValueError("coefficients: give a non-empty list of finite numbers, highest power first")
        elif not self.calibrate:
            raise ValueError("coefficients are missing: give params.coefficients, use a model with published "
                             "coefficients, or let `repro calibrate` fit them (calibrate: auto)")

    @property
    def warmup(self) -> int:
        """Warm-up steps in force: the given count, else the official one."""
        official = official_schedule(self.modulated_input, self.use_ret_steps)[0]
        return self.warmup_steps if self.warmup_steps is not None else official

    @property
    def final(self) -> int:
        official = official_schedule(self.modulated_input, self.use_ret_steps)[1]
        return self.final_steps if self.final_steps is not None else official


def official_schedule(modulated_input: str, use_ret_steps: bool) -> tuple[int, int]:
    """(warm-up steps, forced last steps) of the official script for a signal and mode.

    TeaCache4Wan2.1: ``ret_steps = 5*2, cutoff_steps = sample_steps*2`` with --use_ret_steps, else
    ``ret_steps = 1*2, cutoff_steps = sample_steps*2 - 2`` (counted in calls, two per step);
    TeaCache4FLUX / 4HunyuanVideo: ``cnt == 0 or cnt == num_steps-1`` (the project's temb rule takes this one).
    """
    return (5, 0) if modulated_input == "wan" and use_ret_steps else (1, 1)


def rescale(coefficients: tuple[float, ...], x: float, absolute: bool = False) -> float:
    """The polynomial at x (highest power first, Horner's rule as numpy.poly1d): the expected output change
    for an input change x. ``absolute`` (a project option) takes its absolute value."""
    value = 0.0
    for c in coefficients:
        value = value * x + c
    return abs(value) if absolute else value


@dataclass
class TeaCacheState:
    previous_input: Any = None  # the modulated input of the previous call of this branch
    accumulated: float = 0.0
    skipped_in_row: int = 0
    input_change: float | None = None  # of the current call (calibration pairs it with the target's change)
    previous_target: Any = None  # calibration: the previous call's output (or residual)


class TeaCachePolicy:
    """The decision rule, one call at a time, with no model: ``decide(state, step, signal)``.

    ``signal`` is the call's modulated input (a tensor); the hook extracts it, the replay tests feed
    recorded or synthetic ones. Returns True to run the blocks.
    """

    def __init__(self, config: TeaCacheConfig):
        self.config = config
        self.warmup, self.final = config.warmup, config.final

    def forced(self, step: int) -> bool:
        steps = self.config.num_inference_steps
        return step < self.warmup or (steps is not None and step >= steps - self.final)

    def decide(self, policy: TeaCacheState, step: int, signal: Any) -> tuple[bool, float | None, float | None]:
        """(compute, input change, accumulated value compared with the threshold) for one call."""
        from experiments.methods.residual_hooks import rel_l1

        config = self.config
        forced = self.forced(step) or policy.previous_input is None
        change = None
        if not forced or config.calibrate:  # the official code measures nothing on forced calls
            change = rel_l1(signal, policy.previous_input) if policy.previous_input is not None else None
        policy.previous_input = signal
        policy.input_change = change
        if config.calibrate or forced:
            policy.accumulated, policy.skipped_in_row = 0.0, 0
            return True, change, None
        policy.accumulated += rescale(config.coefficients, change, config.absolute_rescale)
        compared = policy.accumulated
        capped = config.max_skip_steps and policy.skipped_in_row >= config.max_skip_steps  # a project option
        if compared < config.threshold and not capped:
            policy.skipped_in_row += 1
            return False, change, compared
        policy.accumulated, policy.skipped_in_row = 0.0, 0
        return True, change, compared


def norm1_input(block: Any, args: tuple, kwargs: dict) -> Any:
    """The first block's timestep-modulated input, ``norm1(hidden_states, emb=temb)[0]``, from its call arguments."""
    from diffusers.utils.torch_utils import unwrap_module

    from experiments.methods.residual_hooks import TransformerBlockRegistry

    meta = TransformerBlockRegistry.get(unwrap_module(block).__class__)
    temb = meta._get_parameter_from_args_kwargs("temb", args, kwargs)
    hidden = meta._get_parameter_from_args_kwargs(meta.hidden_states_argument_name, args, kwargs)
    out = block.norm1(hidden, emb=temb)
    return out[0] if isinstance(out, tuple) else out


def temb_input(block: Any, args: tuple, kwargs: dict) -> Any:
    """The project's temb rule: the first block's ``temb`` argument (the timestep projection every block receives)."""
    from diffusers.utils.torch_utils import unwrap_module

    from experiments.methods.residual_hooks import TransformerBlockRegistry

    meta = TransformerBlockRegistry.get(unwrap_module(block).__class__)
    return meta._get_parameter_from_args_kwargs("temb", args, kwargs)


def wan_time_signals(embedder: Any, timestep: Any) -> tuple[Any, Any]:
    """(e, e0) of TeaCache4Wan2.1 in float32: the time embedding and the timestep projection of `timestep`,
    recomputed from diffusers' WanTimeTextImageEmbedding with float32 weights (the official code computes
    both under ``amp.autocast(dtype=torch.float32)``; diffusers casts them to the model's dtype)."""
    import torch
    from torch.func import functional_call

    if timestep.ndim != 1:
        raise ValueError(f"teacache (modulated_input='wan'): a timestep of shape {tuple(timestep.shape)}; "
                         f"TeaCache4Wan2.1 is written for one timestep per sample (Wan 2.1)")
    sinusoid = embedder.timesteps_proj(timestep).float()
    as_float = {name: p.float() for name, p in embedder.time_embedder.named_parameters()}
    e = functional_call(embedder.time_embedder, as_float, (sinusoid,))
    proj = embedder.time_proj
    e0 = torch.nn.functional.linear(torch.nn.functional.silu(e), proj.weight.float(),
                                    None if proj.bias is None else proj.bias.float())
    return e, e0


def _check_block(block: Any, kind: str) -> None:
    import inspect

    norm = getattr(block, "norm1", None)
    if kind == "norm1" and (norm is None or "emb" not in inspect.signature(norm.forward).parameters):
        raise ValueError(f"teacache: modulated_input='norm1' needs a first block whose norm1 takes the timestep "
                         f"embedding (AdaLayerNormZero); {type(block).__name__} has none. Wan uses "
                         f"modulated_input='wan'")
    if kind == "temb" and "temb" not in inspect.signature(type(block).forward).parameters:
        raise ValueError(f"teacache: modulated_input='temb' reads the first block's temb argument; "
                         f"{type(block).__name__}.forward takes none")


def _check_wan(transformer: Any) -> Any:
    embedder = getattr(transformer, "condition_embedder", None)
    if embedder is None or not all(hasattr(embedder, n) for n in ("timesteps_proj", "time_embedder", "time_proj")):
        raise ValueError(f"teacache: modulated_input='wan' reads the time embedding of a Wan condition embedder "
                         f"(timesteps_proj, time_embedder, time_proj); {type(transformer).__name__} has none")
    return embedder


class TeaCacheRun:
    """One enabled TeaCache: its policy, what it saw per call, and (for Wan) the captured time signals."""

    def __init__(self, config: TeaCacheConfig):
        self.config = config
        self.policy = TeaCachePolicy(config)
        self.trace: list[dict[str, Any]] = []
        self.pairs: dict[str, list[tuple[float, float]]] = {}  # calibration: branch -> (input, target change)
        self._wan: tuple[Any, Any] | None = None  # (e, e0) of the current call
        self._handles: list[Any] = []
        self.last: Any = None  # the CacheState of the current call (calibration pairs the output with it)

    def capture_wan(self, module: Any, args: tuple, kwargs: dict) -> None:
        timestep = kwargs["timestep"] if "timestep" in kwargs else args[0]
        self._wan = wan_time_signals(module, timestep)

    def signal(self, block: Any, args: tuple, kwargs: dict) -> Any:
        if self.config.modulated_input == "norm1":
            return norm1_input(block, args, kwargs)
        if self.config.modulated_input == "temb":
            return temb_input(block, args, kwargs)
        e, e0 = self._wan
        return e0 if self.config.use_ret_steps else e

    def decide(self, state: Any, block: Any, args: tuple, kwargs: dict) -> bool:
        return self.decide_signal(state, self.signal(block, args, kwargs))

    def decide_signal(self, state: Any, signal: Any) -> bool:
        """The decision of one call of the branch `state` (a residual_hooks.CacheState) given its signal."""
        from experiments.instrumentation import record_decision

        compute, change, compared = self.policy.decide(state.policy, state.step, signal)
        compute = compute or state.residual is None
        self.last = state
        self.trace.append({"branch": state.branch, "step": state.step, "input_change": change,
                           "accumulated": compared, "computed": compute})
        record_decision(state.branch, state.step, compute, change, compared)
        return compute

    def observe(self, state: Any, residual: Any) -> None:
        if self.config.calibrate and self.config.calibration_target == "residual":
            self._pair(state, residual)

    def observe_output(self, module: Any, args: tuple, output: Any) -> None:
        from experiments.methods.residual_hooks import _sample

        if self.config.calibrate and self.config.calibration_target == "output" and self.last is not None:
            self._pair(self.last, _sample(output))

    def _pair(self, state: Any, target: Any) -> None:
        from experiments.methods.residual_hooks import rel_l1

        policy: TeaCacheState = state.policy
        if policy.previous_target is not None and policy.input_change is not None:
            y = rel_l1(target.float(), policy.previous_target.float())
            if math.isfinite(y) and math.isfinite(policy.input_change):
                self.pairs.setdefault(state.branch, []).append((policy.input_change, y))
        policy.previous_target = target.detach().clone()


def apply(transformer: Any, config: TeaCacheConfig) -> None:
    import dataclasses

    from experiments.methods.residual_hooks import apply_block_stack_cache, check_blocks

    if config.modulated_input is None:  # the official script of this architecture
        wan = hasattr(getattr(transformer, "condition_embedder", None), "time_embedder")
        config = dataclasses.replace(config, modulated_input="wan" if wan else "norm1")
    if config.use_ret_steps and config.modulated_input != "wan":
        raise ValueError(f"teacache: use_ret_steps is a mode of TeaCache4Wan2.1 only; {type(transformer).__name__} "
                         f"runs the {SCRIPTS[config.modulated_input]} rules")
    _check_block(check_blocks(transformer, "teacache")[0][1], config.modulated_input)
    run = TeaCacheRun(config)
    if config.modulated_input == "wan":
        embedder = _check_wan(transformer)
        run._handles.append(embedder.register_forward_pre_hook(run.capture_wan, with_kwargs=True))
    if config.calibrate:
        run._handles.append(transformer.register_forward_hook(run.observe_output))
    apply_block_stack_cache(transformer, HOOK, run.decide, TeaCacheState, run.observe,
                            float32_residual=config.modulated_input == "wan")
    transformer._repro_cache_run = run


def remove(transformer: Any) -> None:
    from experiments.methods.residual_hooks import remove_hooks

    run = getattr(transformer, "_repro_cache_run", None)
    for handle in getattr(run, "_handles", ()):
        handle.remove()
    remove_hooks(transformer, HOOK)
    transformer._repro_cache_run = None


def fit(pairs: list[tuple[float, float]], degree: int = DEGREE) -> list[float]:
    """Least-squares polynomial (highest power first) of the target's change against the input change."""
    import numpy as np

    if len(pairs) <= degree:
        raise ValueError(f"TeaCache calibration needs more than {degree} (input change, target change) pairs per "
                         f"branch to fit a degree-{degree} polynomial; got {len(pairs)}: use more steps or prompts")
    x, y = np.asarray(pairs, dtype=np.float64).T
    return [float(c) for c in np.polyfit(x, y, degree)]


def calibrate(transformer: Any, passes: list, num_inference_steps: int, params: dict) -> dict[str, list[float]]:
    """Coefficients per CFG branch, fitted over every calibration pass (one uncached generation each), on the
    signal of the entry's mode and against its calibration target (the model output's change by default)."""
    from experiments.methods.registry import enable_cache

    config = TeaCacheConfig(calibrate=True, num_inference_steps=num_inference_steps,
                            **{k: params[k] for k in ("modulated_input", "use_ret_steps", "calibration_target")
                               if k in params})
    disable = enable_cache(transformer, config)
    run = transformer._repro_cache_run
    try:
        for generate in passes:
            generate()
    finally:
        disable()
    if not run.pairs:
        raise ValueError("TeaCache calibration recorded no (input change, target change) pairs")
    return {branch: fit(pairs) for branch, pairs in run.pairs.items()}


def published(model_id: str | None, params: dict | None = None) -> tuple[tuple[float, ...], str] | None:
    """The published coefficients of `model_id` for the entry's mode (--use_ret_steps or not), or None."""
    modes = PUBLISHED.get(model_id) if model_id else None
    return None if modes is None else modes.get("ret" if (params or {}).get("use_ret_steps") else "default")


def deviations(params: dict, official: dict) -> list[str]:
    """What in `params` differs from the official script (`official`: the family's fixed params)."""
    merged = {**official, **params}
    kind = merged.get("modulated_input") or "norm1"
    script = SCRIPTS.get(kind, kind)
    out = []
    if "modulated_input" in params and params["modulated_input"] != official.get("modulated_input", "norm1"):
        out.append(f"modulated_input={params['modulated_input']!r}: this family's official script uses "
                   f"{official.get('modulated_input', 'norm1')!r}")
    warmup, final = official_schedule(kind, bool(merged.get("use_ret_steps")))
    for name, value in (("warmup_steps", warmup), ("final_steps", final)):
        if params.get(name) is not None and params[name] != value:
            out.append(f"{name}={params[name]}: {script} runs {value} (warm-up: its ret_steps, forced last steps: "
                       f"its cutoff_steps) in this mode")
    if kind == "temb":
        out.append("modulated_input='temb': the project's rule (the first block's timestep projection, "
                   "TeaCache4Wan2.1's use_ret_steps signal, with calibrated coefficients), not an official TeaCache "
                   "script for this model (docs/fidelity.md)")
    if params.get("max_skip_steps"):
        out.append(f"max_skip_steps={params['max_skip_steps']}: at most that many skipped calls in a row; the "
                   f"official TeaCache has no such limit")
    if params.get("absolute_rescale"):
        out.append(f"absolute_rescale=True: accumulates |poly(x)|; {script} adds poly(x) itself (np.poly1d)")
    if params.get("calibration_target", "output") != "output":
        out.append("calibration_target='residual': calibrated coefficients fit the block stack's residual change; "
                   "the published ones fit the model output's")
    return out


register_method(CacheMethod(
    "teacache", TeaCacheConfig, apply, remove,
    key_params=("threshold", "max_skip_steps"),
    nonnegative=("threshold", "warmup_steps", "final_steps", "max_skip_steps"),
    wired=("num_inference_steps", "calibrate"), no_op={"threshold": 0.0}, probe={"threshold": 5.0},
    calibrated_field="coefficients", calibrate=calibrate, calibrate_over="all", published=published,
    calibration_params=("modulated_input", "use_ret_steps", "calibration_target"), deviations=deviations,
    origin="project", aggressiveness="threshold",
    doc="TeaCache: accumulated rescaled change of a timestep-modulated input; skips the block stack. Official "
        "rules of TeaCache4FLUX/4HunyuanVideo (norm1) and TeaCache4Wan2.1 (e, or e0 with use_ret_steps; per-branch "
        "accumulators, float32); the project's temb rule (CogView4, LTX-Video) is not official and named as a "
        "deviation on every point; deviations only by name: absolute_rescale, max_skip_steps, warmup_steps/"
        "final_steps other than the script's, calibration_target='residual'",
))
