"""A prepared baseline (Scorer.reference): same values as scoring against its frames, LPIPS features made once."""

from __future__ import annotations

import numpy as np
import pytest


def test_reference_scores_equal_plain_scores_and_computes_features_once(net_scorer, rng):
    base = rng.integers(0, 256, (7, 40, 48, 3), dtype=np.uint8)  # a video of 7 frames
    ref = net_scorer.reference(base)
    for noise in (3, 12, 40):
        cached = np.clip(base.astype(int) + rng.integers(-noise, noise + 1, base.shape), 0, 255).astype(np.uint8)
        plain = net_scorer.score_pair(cached, base)
        reused = net_scorer.score_pair(cached, ref)
        assert reused.keys() == plain.keys()
        for name in plain:
            assert reused[name]["per_frame"] == pytest.approx(plain[name]["per_frame"], abs=1e-12), name
    chunks = -(-base.shape[0] // net_scorer.batch_size)
    assert ref.feature_computations == chunks  # once per chunk, not once per cached output


def test_float_cached_output_against_a_uint8_reference(net_scorer, rng):
    base = rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    cached = np.clip(base / 255.0 + rng.normal(0, 0.02, base.shape), 0, 1)
    plain = net_scorer.score_pair(cached, base)
    reused = net_scorer.score_pair(cached, net_scorer.reference(base))
    for name in plain:
        assert reused[name]["value"] == pytest.approx(plain[name]["value"], abs=1e-9), name


def test_reference_of_another_shape_is_refused(net_scorer, rng):
    from metrics.errors import InputError

    ref = net_scorer.reference(rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8))
    with pytest.raises(InputError):
        net_scorer.score_pair(rng.integers(0, 256, (2, 48, 40, 3), dtype=np.uint8), ref)


def test_reference_under_the_upsampled_map_protocol(empty_caches, rng):
    import metrics
    from metrics.protocol import Protocol

    mp = empty_caches()
    try:
        scorer = metrics.Scorer(names=("lpips",), device="cpu", batch_size=2, allow_random_weights=True,
                                protocol=Protocol(lpips_spatial="upsampled_map_mean"))
    finally:
        mp.undo()
    base = rng.integers(0, 256, (3, 40, 44, 3), dtype=np.uint8)
    cached = np.clip(base.astype(int) + rng.integers(-15, 16, base.shape), 0, 255).astype(np.uint8)
    plain = scorer.score_pair(cached, base)["lpips"]["per_frame"]
    assert scorer.score_pair(cached, scorer.reference(base))["lpips"]["per_frame"] == pytest.approx(plain, abs=1e-12)
