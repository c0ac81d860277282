"""Shared fixtures for the metrics tests.

Every test runs with HF_HUB_OFFLINE=1 (no network) and one torch thread. Network fixtures are built
with TORCH_HOME / HF_HOME pointing at empty temporary caches, so they always
run on the package's seeded random weights, whatever this machine has cached.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _offline_single_thread(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The workloads here are tiny; on a shared 2-core machine OpenMP barriers under
    # contention made 2-thread runs 3-5x slower than 1 thread. Restored after each test.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def empty_caches(tmp_path_factory: pytest.TempPathFactory):
    """A context manager factory: env pointing torch and HF caches at empty dirs."""
    root = tmp_path_factory.mktemp("caches")

    def ctx() -> pytest.MonkeyPatch:
        mp = pytest.MonkeyPatch()
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TORCH_HOME", str(root / "torch"))
        mp.setenv("HF_HOME", str(root / "hf"))
        mp.delenv("HF_HUB_CACHE", raising=False)
        return mp

    return ctx


@pytest.fixture(scope="session")
def net_scorer(empty_caches):
    """Scorer with all four metrics on random weights, built once for the session."""
    import metrics

    mp = empty_caches()
    try:
        return metrics.Scorer(device="cpu", batch_size=4, allow_random_weights=True)
    finally:
        mp.undo()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def smooth():
    """Factory of float64 RGB images on [0, 1] with gradients and a blob (natural-ish, not noise)."""
    return _smooth_image


def _smooth_image(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    cx, cy = rng.random(2)
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.05)
    img = np.stack([xx, yy, 0.5 * (xx + yy)], -1) * 0.6 + 0.4 * blob[..., None] * rng.random(3)
    return np.clip(img, 0, 1)
