"""The official decision rules of the caches this project implements, transcribed for the replay tests.

Each class is a line-by-line transcription of the state machine in the cited official script (same
variable names, same order of operations, same arithmetic: torch means, ``np.poly1d``, tensor
division with its inf/NaN), with the model replaced by a callable. They are test oracles: the
project's hooks (``experiments/methods``) are written independently and must take the same
decision at every call. Nothing here is imported by the package.

Sources (the text of each was read with the project's code-search tool; ``@`` gives the commit read):

* TeaCache: ali-vilab/TeaCache (issue 29 reviewed commit 7c10efc). The repository itself is not in the
  index; its folders were read from the copy zhajingjing/cse585@470d4403 (TeaCache4Wan2.1,
  TeaCache4FLUX, TeaCache4HunyuanVideo), whose text matches the coefficients issue 29 quotes digit for
  digit. Functions: ``teacache_forward`` (the decision) and ``generate`` / the module-level setup (the
  state it starts from). Forks that differ (ChloeMVan/TeaCache comments the rescale out;
  spawner1145/TeaCache decides on the cond call only) were not used.
* EasyCache: H-EmbodVis/EasyCache. Wan: ``EasyCache4Wan2.2/easycache_generate.py@3149a41``,
  ``easycache_forward_`` (the t2v path, globals ``GLOBAL_*``) - the rule issue 29 describes for
  ``EasyCache4Wan2.1/easycache_generate.py@5127804`` (not in the index), with that script's
  hard-coded ``ret_steps = 10 * 2``. HunyuanVideo: ``EasyCache4HunyuanVideo/easycache_sample_video.py
  @313ae5f``, ``easycache_forward`` and ``main()``.
* MagCache: Zehong-Ma/MagCache ``eval/magcache/experiments/Wan2.1_EVAL/wan_magcache.py@1a4c2d3``,
  ``magcache_forward`` and ``generate()`` (the Table 1 evaluation); ``MagCache4Wan2.1/
  magcache_generate.py@1a66b6d`` ``magcache_forward``; diffusers ``hooks/mag_cache.py`` (0.42.1,
  ``MagCacheHeadHook.new_forward``) for the comparison.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch


def rel_l1_item(modulated_inp: torch.Tensor, previous: torch.Tensor) -> float:
    # ((modulated_inp-self.previous_e0_even).abs().mean() / self.previous_e0_even.abs().mean()).cpu().item()
    return ((modulated_inp - previous).abs().mean() / previous.abs().mean()).cpu().item()


class TeaCache4Wan21:
    """TeaCache4Wan2.1/teacache_generate.py: ``generate()`` sets the state, ``teacache_forward`` decides.

    generate(): ``num_steps = args.sample_steps*2``; with ``--use_ret_steps``: ``ret_steps = 5*2``,
    ``cutoff_steps = args.sample_steps*2``, ret coefficients; without: ``ret_steps = 1*2``,
    ``cutoff_steps = args.sample_steps*2 - 2``. teacache_forward: ``modulated_inp = e0 if
    self.use_ref_steps else e``; even ``cnt`` is the conditional call, odd the unconditional.
    """

    def __init__(self, coefficients, teacache_thresh: float, sample_steps: int, use_ret_steps: bool):
        self.cnt = 0
        self.num_steps = sample_steps * 2
        self.teacache_thresh = teacache_thresh
        self.accumulated_rel_l1_distance_even = 0
        self.accumulated_rel_l1_distance_odd = 0
        self.previous_e0_even = None
        self.previous_e0_odd = None
        self.use_ref_steps = use_ret_steps
        self.coefficients = list(coefficients)
        if use_ret_steps:
            self.ret_steps = 5 * 2
            self.cutoff_steps = sample_steps * 2
        else:
            self.ret_steps = 1 * 2
            self.cutoff_steps = sample_steps * 2 - 2

    def forward(self, e: torch.Tensor, e0: torch.Tensor) -> bool:
        """One call: True when the blocks run (``should_calc_even`` / ``should_calc_odd``)."""
        modulated_inp = e0 if self.use_ref_steps else e
        if self.cnt % 2 == 0:  # even -> conditon
            if self.cnt < self.ret_steps or self.cnt >= self.cutoff_steps:
                should_calc = True
                self.accumulated_rel_l1_distance_even = 0
            else:
                rescale_func = np.poly1d(self.coefficients)
                self.accumulated_rel_l1_distance_even += rescale_func(rel_l1_item(modulated_inp, self.previous_e0_even))
                if self.accumulated_rel_l1_distance_even < self.teacache_thresh:
                    should_calc = False
                else:
                    should_calc = True
                    self.accumulated_rel_l1_distance_even = 0
            self.previous_e0_even = modulated_inp.clone()
        else:  # odd -> unconditon
            if self.cnt < self.ret_steps or self.cnt >= self.cutoff_steps:
                should_calc = True
                self.accumulated_rel_l1_distance_odd = 0
            else:
                rescale_func = np.poly1d(self.coefficients)
                self.accumulated_rel_l1_distance_odd += rescale_func(rel_l1_item(modulated_inp, self.previous_e0_odd))
                if self.accumulated_rel_l1_distance_odd < self.teacache_thresh:
                    should_calc = False
                else:
                    should_calc = True
                    self.accumulated_rel_l1_distance_odd = 0
            self.previous_e0_odd = modulated_inp.clone()
        self.cnt += 1
        if self.cnt >= self.num_steps:
            self.cnt = 0
        return should_calc


class TeaCache4FluxHunyuanVideo:
    """TeaCache4FLUX/teacache_flux.py and TeaCache4HunyuanVideo/teacache_sample_video.py ``teacache_forward``
    (one call per step; the two scripts share the rule and differ in their coefficients and signal, which
    the caller passes: ``transformer_blocks[0].norm1(inp, emb=temb_)`` / ``modulate(img_norm1(inp), ...)``)."""

    def __init__(self, coefficients, rel_l1_thresh: float, num_steps: int):
        self.cnt = 0
        self.num_steps = num_steps
        self.rel_l1_thresh = rel_l1_thresh
        self.accumulated_rel_l1_distance = 0
        self.previous_modulated_input = None
        self.coefficients = list(coefficients)

    def forward(self, modulated_inp: torch.Tensor) -> bool:
        if self.cnt == 0 or self.cnt == self.num_steps - 1:
            should_calc = True
            self.accumulated_rel_l1_distance = 0
        else:
            rescale_func = np.poly1d(self.coefficients)
            self.accumulated_rel_l1_distance += rescale_func(rel_l1_item(modulated_inp, self.previous_modulated_input))
            if self.accumulated_rel_l1_distance < self.rel_l1_thresh:
                should_calc = False
            else:
                should_calc = True
                self.accumulated_rel_l1_distance = 0
        self.previous_modulated_input = modulated_inp
        self.cnt += 1
        if self.cnt == self.num_steps:
            self.cnt = 0
        return should_calc


def _abs_mean_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # torch.cat([(u - v).flatten() for u, v in zip(a, b)]).abs().mean(), for one sample
    return (a - b).flatten().abs().mean()


class EasyCache4Wan:
    """EasyCache4Wan2.2/easycache_generate.py ``easycache_forward_`` (t2v, ``GLOBAL_*`` state; generate()
    sets ``GLOBAL_NUM_STEPS = args.sample_steps * 2`` and ``GLOBAL_RET_STEPS = args.ret_steps * 2``); the
    Wan2.1 script hard-codes ``ret_steps = 10 * 2`` (issue 29). Only even (conditional) calls decide,
    ``GLOBAL_SHOULD_CALC_CURRENT_PAIR`` holds for the odd call after them.

    ``forward(raw_input, model)`` returns ``(output, computed)``; ``model(raw_input)`` runs the transformer.
    """

    def __init__(self, thresh: float, sample_steps: int, ret_steps: int = 10):
        self.GLOBAL_CNT = 0
        self.GLOBAL_NUM_STEPS = sample_steps * 2
        self.GLOBAL_THRESH = thresh
        self.GLOBAL_ACCUMULATED_ERROR_EVEN = 0
        self.GLOBAL_SHOULD_CALC_CURRENT_PAIR = True
        self.GLOBAL_K = None
        self.GLOBAL_PREVIOUS_RAW_INPUT_EVEN = None
        self.GLOBAL_PREVIOUS_RAW_OUTPUT_EVEN = None
        self.GLOBAL_PREVIOUS_RAW_OUTPUT_ODD = None
        self.GLOBAL_PREV_PREV_RAW_INPUT_EVEN = None
        self.GLOBAL_CACHE_EVEN = None
        self.GLOBAL_CACHE_ODD = None
        self.GLOBAL_RET_STEPS = ret_steps * 2

    def forward(self, raw_input: torch.Tensor, model: Callable[[torch.Tensor], torch.Tensor]) -> tuple[Any, bool]:
        raw_input = raw_input.clone()
        is_even = (self.GLOBAL_CNT % 2 == 0)
        if is_even:
            if self.GLOBAL_CNT < self.GLOBAL_RET_STEPS or self.GLOBAL_CNT >= (self.GLOBAL_NUM_STEPS - 2):
                self.GLOBAL_SHOULD_CALC_CURRENT_PAIR = True
                self.GLOBAL_ACCUMULATED_ERROR_EVEN = 0
            else:
                if self.GLOBAL_PREVIOUS_RAW_INPUT_EVEN is not None and self.GLOBAL_PREVIOUS_RAW_OUTPUT_EVEN is not None:
                    raw_input_change = _abs_mean_diff(raw_input, self.GLOBAL_PREVIOUS_RAW_INPUT_EVEN)
                    if self.GLOBAL_K is not None:
                        output_norm = self.GLOBAL_PREVIOUS_RAW_OUTPUT_EVEN.flatten().abs().mean()
                        pred_change = self.GLOBAL_K * (raw_input_change / output_norm)
                        combined_pred_change = pred_change
                        self.GLOBAL_ACCUMULATED_ERROR_EVEN += combined_pred_change
                        if self.GLOBAL_ACCUMULATED_ERROR_EVEN < self.GLOBAL_THRESH:
                            self.GLOBAL_SHOULD_CALC_CURRENT_PAIR = False
                        else:
                            self.GLOBAL_SHOULD_CALC_CURRENT_PAIR = True
                            self.GLOBAL_ACCUMULATED_ERROR_EVEN = 0
                    else:
                        self.GLOBAL_SHOULD_CALC_CURRENT_PAIR = True
                else:
                    self.GLOBAL_SHOULD_CALC_CURRENT_PAIR = True
            self.GLOBAL_PREVIOUS_RAW_INPUT_EVEN = raw_input.clone()

        if is_even and not self.GLOBAL_SHOULD_CALC_CURRENT_PAIR and self.GLOBAL_PREVIOUS_RAW_OUTPUT_EVEN is not None:
            self.GLOBAL_CNT += 1
            return (raw_input + self.GLOBAL_CACHE_EVEN).float(), False
        elif not is_even and not self.GLOBAL_SHOULD_CALC_CURRENT_PAIR \
                and self.GLOBAL_PREVIOUS_RAW_OUTPUT_ODD is not None:
            self.GLOBAL_CNT += 1
            return (raw_input + self.GLOBAL_CACHE_ODD).float(), False

        output = model(raw_input)
        if is_even:  # Condition path
            if self.GLOBAL_PREVIOUS_RAW_OUTPUT_EVEN is not None:
                output_change = _abs_mean_diff(output, self.GLOBAL_PREVIOUS_RAW_OUTPUT_EVEN)
                if self.GLOBAL_PREV_PREV_RAW_INPUT_EVEN is not None:
                    input_change = _abs_mean_diff(self.GLOBAL_PREVIOUS_RAW_INPUT_EVEN,
                                                  self.GLOBAL_PREV_PREV_RAW_INPUT_EVEN)
                    self.GLOBAL_K = output_change / input_change
            self.GLOBAL_PREV_PREV_RAW_INPUT_EVEN = self.GLOBAL_PREVIOUS_RAW_INPUT_EVEN
            self.GLOBAL_PREVIOUS_RAW_OUTPUT_EVEN = output.clone()
            self.GLOBAL_CACHE_EVEN = output - raw_input
        else:  # Uncondition path
            self.GLOBAL_PREVIOUS_RAW_OUTPUT_ODD = output.clone()
            self.GLOBAL_CACHE_ODD = output - raw_input
        self.GLOBAL_CNT += 1
        return output.float(), True


class EasyCache4HunyuanVideo:
    """EasyCache4HunyuanVideo/easycache_sample_video.py ``easycache_forward``; main() sets ``num_steps =
    args.infer_steps``, ``thresh = 0.025``, ``ret_steps = 5``, ``k = None``. One call per step."""

    def __init__(self, thresh: float, num_steps: int, ret_steps: int = 5):
        self.cnt = 0
        self.num_steps = num_steps
        self.thresh = thresh
        self.ret_steps = ret_steps
        self.k = None
        self.cache = None
        self.accumulated_error = 0
        self.previous_raw_input = None
        self.previous_output = None
        self.prev_prev_raw_input = None

    def forward(self, x: torch.Tensor, model: Callable[[torch.Tensor], torch.Tensor]) -> tuple[Any, bool]:
        raw_input = x.clone()
        if self.cnt < self.ret_steps or self.cnt >= self.num_steps - 1:
            should_calc = True
            self.accumulated_error = 0
        else:
            if self.previous_raw_input is not None and self.previous_output is not None:
                raw_input_change = (raw_input - self.previous_raw_input).abs().mean()
                if self.k is not None:
                    output_norm = self.previous_output.abs().mean()
                    pred_change = self.k * (raw_input_change / output_norm)
                    self.accumulated_error += pred_change
                    if self.accumulated_error < self.thresh:
                        should_calc = False
                    else:
                        should_calc = True
                        self.accumulated_error = 0
                else:
                    should_calc = True
            else:
                should_calc = True
        self.previous_raw_input = raw_input.clone()
        if not should_calc and self.cache is not None:
            result = raw_input + self.cache
            self.cnt += 1
            if self.cnt >= self.num_steps:
                self.cnt = 0
            return result, False
        result = model(raw_input)
        self.cache = result - raw_input
        if self.previous_output is not None:
            output_change = (result - self.previous_output).abs().mean()
            if self.prev_prev_raw_input is not None:
                input_change = (self.previous_raw_input - self.prev_prev_raw_input).abs().mean()
                self.k = output_change / input_change
        self.prev_prev_raw_input = self.previous_raw_input
        self.previous_output = result.clone()
        self.cnt += 1
        if self.cnt >= self.num_steps:
            self.cnt = 0
        return result, True


class MagCacheWanEval:
    """wan_magcache.py ``magcache_forward`` with generate()'s state: ``num_steps = args.sample_steps*2``,
    ``ratio = np.array([...])**(0.5)``, ``accumulated_sim = [1,1]``, ``accumulated_steps = [0,0]``,
    ``accumulated_err = [0,0]``; ``skip_time = int(self.num_steps*0.2)``, ``cur_scale = self.ratio[self.t-10]``.
    ``forward()`` returns True when the blocks run."""

    def __init__(self, ratios, magcache_thresh: float, magcache_K: int, sample_steps: int):
        self.t = 0
        self.num_steps = sample_steps * 2
        self.ratio = np.array(list(ratios)) ** (0.5)
        self.magcache_thresh = magcache_thresh
        self.magcache_K = magcache_K
        self.accumulated_sim = [1, 1]
        self.accumulated_steps = [0, 0]
        self.accumulated_err = [0, 0]

    def forward(self) -> bool:
        skip_forward = False
        skip_time = int(self.num_steps * 0.2)  # keep the first 20% steps unchanged
        if self.t >= skip_time:
            cur_scale = self.ratio[self.t - 10]
            self.accumulated_sim[self.t % 2] = self.accumulated_sim[self.t % 2] * cur_scale
            self.accumulated_steps[self.t % 2] += 1
            self.accumulated_err[self.t % 2] += np.abs(1 - self.accumulated_sim[self.t % 2])
            if self.accumulated_err[self.t % 2] <= self.magcache_thresh and \
                    self.accumulated_steps[self.t % 2] <= self.magcache_K:
                skip_forward = True
            else:
                self.accumulated_sim[self.t % 2] = 1.0
                self.accumulated_steps[self.t % 2] = 0
                self.accumulated_err[self.t % 2] = 0
        self.t += 1
        if self.t >= self.num_steps:
            self.t = 0
            self.accumulated_sim = [1.0, 1.0]
            self.accumulated_steps = [0, 0]
            self.accumulated_err = [0, 0]
        return not skip_forward


class DiffusersMagCache:
    """diffusers hooks/mag_cache.py (0.42.1) ``MagCacheHeadHook.new_forward`` for one cache context (branch):
    ``retention_step = int(retention_ratio * num_inference_steps + 0.5)``, one ``mag_ratios`` value per step,
    skip while ``accumulated_err <= threshold and accumulated_steps <= max_skip_steps``."""

    def __init__(self, mag_ratios, threshold: float, max_skip_steps: int, retention_ratio: float,
                 num_inference_steps: int):
        self.mag_ratios = list(mag_ratios)
        self.threshold, self.max_skip_steps = threshold, max_skip_steps
        self.retention_ratio, self.num_inference_steps = retention_ratio, num_inference_steps
        self.step_index = 0
        self.accumulated_ratio, self.accumulated_steps, self.accumulated_err = 1.0, 0, 0.0
        self.previous_residual = True  # computed before the first skip can happen

    def forward(self) -> bool:
        should_compute = True
        current_step = self.step_index
        current_scale = 1.0 if current_step >= len(self.mag_ratios) else self.mag_ratios[current_step]
        retention_step = int(self.retention_ratio * self.num_inference_steps + 0.5)
        if current_step >= retention_step:
            self.accumulated_ratio *= current_scale
            self.accumulated_steps += 1
            self.accumulated_err += abs(1.0 - self.accumulated_ratio)
            if (self.previous_residual is not None and self.accumulated_err <= self.threshold
                    and self.accumulated_steps <= self.max_skip_steps):
                should_compute = False
            else:
                self.accumulated_ratio, self.accumulated_steps, self.accumulated_err = 1.0, 0, 0.0
        self.step_index += 1
        return should_compute
