"""Shared fixtures: tiny specs written to tmp dirs, offline everywhere."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import yaml

# The suite does not depend on the caller's environment (also inherited by the processes tests start):
# none of the user's W&B or hub settings, no hub access, no GPU choice, one intra-op thread (tiny models
# on shared cores: far faster and much less noisy). W&B's caches live in a folder of this session.
for _name in list(os.environ):
    if _name.startswith(("WANDB_", "HF_", "HUGGINGFACE_")) or _name in ("CUDA_VISIBLE_DEVICES", "NETRC"):
        del os.environ[_name]
_home = Path(tempfile.mkdtemp(prefix="repro-tests-"))
os.environ.update({
    "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_SILENT": "true",
    "WANDB_CACHE_DIR": str(_home / "wandb-cache"), "WANDB_DATA_DIR": str(_home / "wandb-data"),
    "WANDB_CONFIG_DIR": str(_home / "wandb-config"), "NETRC": str(_home / "no-netrc"),
})

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
