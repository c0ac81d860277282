"""GPU-only checks of the engine's timing path (CUDA events, peak memory). Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.runner import Engine, GenerationRequest
from experiments.spec import Spec
from tests.conftest import tiny_spec_dict

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_timing_memory_and_noop_cache(tmp_path):
    spec = Spec.model_validate(tiny_spec_dict(tmp_path, model={"tiny": "wan", "device": "cuda"},
                                              timing={"warmup": 1, "repeats": 3}))
    engine = Engine(spec)
    base = engine.generate(GenerationRequest(prompt="a red fox in snow", seed=0))
    s = base.summary()
    assert base.device.startswith("cuda")
    assert s["peak_memory_bytes"] and s["peak_memory_bytes"] > 0
    assert 0 < s["transformer_s"] <= s["denoise_s"] <= s["e2e_s"]
    assert len(s["step_s"]) == spec.generation.num_inference_steps
    same = engine.generate(GenerationRequest("a red fox in snow", 0, "first_block_cache", {"threshold": 0.0}))
    # bit-exactness is promised on CPU; GPU kernels may reorder reductions, so allow one 8-bit level
    assert np.abs(same.frames.astype(int) - base.frames.astype(int)).max() <= 1
    fast = engine.generate(GenerationRequest("a red fox in snow", 0, "first_block_cache", {"threshold": 1.0}))
    assert fast.summary()["compute_executed"] < s["compute_executed"]
