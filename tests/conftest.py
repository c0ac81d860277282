"""Shared fixtures: tiny specs written to tmp dirs, offline everywhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

# Nothing in the suite may reach a hub; the code under test must cope with that.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models on 2 shared cores: one intra-op thread each is far faster and much less noisy
# (also inherited by the sweeps the tests start as subprocesses).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parents[1]


def tiny_spec_dict(run_dir: Path, **changes) -> dict:
    """A fast tiny-Wan spec: 4 steps, 1 timed repeat, no warm-up, W&B disabled."""
    spec = {
        "name": "t",
        "model": {"tiny": "wan", "device": "cpu"},
        "generation": {"height": 16, "width": 16, "num_frames": 5, "num_inference_steps": 6, "guidance_scale": 5.0,
                       "max_sequence_length": 16},
        "prompts": ["a red fox in snow", "a lighthouse at night"],
        "seeds": [0],
        "methods": [{"name": "first_block_cache", "sweep": {"threshold": [0.0, 0.3]}}],
        "metrics": {"names": ["psnr", "ssim"], "device": "cpu"},
        "timing": {"warmup": 0, "repeats": 1},
        "wandb": {"mode": "disabled"},
        "output": {"dir": str(run_dir), "mp4": False},
    }
    for key, value in changes.items():
        spec[key] = value
    return spec


@pytest.fixture
def write_spec(tmp_path):
    def write(data, name="spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        return path
    return write
