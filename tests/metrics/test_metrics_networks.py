"""LPIPS and CLIP against direct computations with the same weights (random weights: offline)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import metrics


@pytest.fixture(scope="module")
def pair():
    rng_module = np.random.default_rng(7)
    a = rng_module.integers(0, 256, (3, 64, 96, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng_module.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    return a, b


def direct_lpips(net_scorer):
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    ref.load_state_dict(net_scorer._lpips.module.state_dict())  # the SAME weights as ours
    return ref


def test_lpips_equals_direct_lpips_call_with_same_weights(net_scorer, pair):
    a, b = pair
    ref = direct_lpips(net_scorer)
    # Independent conversion: by hand, uint8 -> [-1, 1], NCHW.
    ta = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1
    tb = torch.from_numpy(b).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        want = ref(ta, tb).flatten().double().numpy()
    got = np.array(net_scorer.score_pair(a, b)["lpips"]["per_frame"])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert want.min() > 1e-4  # a real, non-trivial distance was compared
    # The free function uses the same definition (its own, equally seeded network).
    np.testing.assert_allclose(metrics.lpips(a, b, device="cpu", allow_random_weights=True), want, atol=1e-6)


def test_lpips_input_scaling_matters_and_out_of_range_floats_are_rejected(net_scorer, pair):
    a, b = pair
    ref = direct_lpips(net_scorer)
    ta = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255
    tb = torch.from_numpy(b).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        wrong = ref(ta, tb).flatten().numpy()  # [0, 1] fed where [-1, 1] is expected
    got = np.array(net_scorer.score_pair(a, b)["lpips"]["per_frame"])
    assert np.abs(got - wrong).max() > 1e-3
    with pytest.raises(metrics.InputError, match=r"\[0, 1\].*min=-1"):
        net_scorer.score_pair(ta.numpy() * 2 - 1, tb.numpy() * 2 - 1)
    with pytest.raises(metrics.InputError, match=r"\[0, 1\]"):
        metrics.lpips(ta * 2 - 1, tb * 2 - 1, device="cpu", allow_random_weights=True)


def test_lpips_rejects_frames_too_small_for_alexnet(net_scorer):
    x = np.zeros((2, 20, 64, 3), np.uint8)
    with pytest.raises(metrics.InputError, match=r"cached: 20x64 frames are too small for lpips_alex"):
        net_scorer.score_pair(x, x)


def ref_image_emb(net, images_u8: np.ndarray) -> torch.Tensor:
    """Hand computation: torchvision transforms + encode_image, normalised."""
    from torchvision.transforms import CenterCrop, InterpolationMode, Normalize, Resize

    cfg = net.model.visual.preprocess_cfg
    size = cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"]
    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 255
    x = Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True)(x)
    x = Normalize(cfg["mean"], cfg["std"])(CenterCrop(size)(x))
    with torch.no_grad():
        img = net.model.encode_image(x)
    return img / img.norm(dim=-1, keepdim=True)


def ref_text_emb(net, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        txt = net.model.encode_text(net.tokenizer([prompt]))[0]
    return txt / txt.norm()


def ref_score(img_emb: torch.Tensor, txt_emb: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(cosine, 100 * max(cosine, 0)) per image."""
    cos = (img_emb @ txt_emb).double().numpy()
    return cos, 100 * np.maximum(cos, 0)


def test_clip_score_matches_hand_computation(net_scorer):
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (2, 70, 120, 3), dtype=np.uint8)  # non-square: exercises resize + crop
    imgs[1] = np.linspace(0, 255, 120).astype(np.uint8)[None, :, None]
    base = np.clip(imgs.astype(int) + 25, 0, 255).astype(np.uint8)
    # With the seed-0 random model the first prompt scores > 0 and the second < 0 (clamped).
    prompts = ["a photo of a cat", "red"]
    results = net_scorer.score_pairs([(imgs, base, p) for p in prompts])
    emb_c, emb_b = ref_image_emb(net_scorer._clip, imgs), ref_image_emb(net_scorer._clip, base)
    seen_positive = seen_clamped = False
    for prompt, res in zip(prompts, results):
        txt = ref_text_emb(net_scorer._clip, prompt)
        cos, want = ref_score(emb_c, txt)
        _, want_b = ref_score(emb_b, txt)
        np.testing.assert_allclose(res["clip_cached"]["per_frame"], want, atol=1e-4)
        assert res["clip_cached"]["value"] == pytest.approx(want.mean(), abs=1e-4)
        np.testing.assert_allclose(res["clip_baseline"]["per_frame"], want_b, atol=1e-4)
        np.testing.assert_allclose(res["clip_delta"]["per_frame"], want - want_b, atol=2e-4)
        assert res["clip_delta"]["value"] == pytest.approx(want.mean() - want_b.mean(), abs=2e-4)
        seen_positive |= bool((cos > 0.005).all())
        seen_clamped |= bool((cos < 0).any())
    assert seen_positive and seen_clamped, "both the value and the clamp at 0 must be exercised"


def test_clip_free_function_and_prompt_count_check(net_scorer, empty_caches):
    imgs = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    prompts = ["a photo of a cat", "red"]
    mp = empty_caches()
    try:
        got = metrics.clip_score(imgs, prompts, device="cpu", allow_random_weights=True)
        with pytest.raises(metrics.InputError, match="3 prompts for 2 images"):
            metrics.clip_score(imgs, ["a", "b", "c"], device="cpu", allow_random_weights=True)
    finally:
        mp.undo()
    emb = ref_image_emb(net_scorer._clip, imgs)
    want = [ref_score(emb[i : i + 1], ref_text_emb(net_scorer._clip, p))[1][0] for i, p in enumerate(prompts)]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_weights_missing_names_file_cache_and_fetch_command(empty_caches):
    mp = empty_caches()
    try:
        with pytest.raises(metrics.WeightsMissing) as e:
            metrics.Scorer(names=("lpips",), device="cpu")
        msg = str(e.value)
        assert "alexnet-owt-7be5be79.pth" in msg and "checkpoints" in msg
        assert "python -m metrics fetch --lpips-net alex" in msg and "repro fetch-weights" in msg
        with pytest.raises(metrics.WeightsMissing) as e:
            metrics.Scorer(names=("clip",), device="cpu")
        msg = str(e.value)
        assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in msg and "hub" in msg
        assert "--clip-model ViT-B-32 --clip-pretrained laion2b_s34b_b79k" in msg
        assert isinstance(e.value, RuntimeError)
    finally:
        mp.undo()


def test_random_weights_are_labelled_and_reproducible(net_scorer, empty_caches, pair):
    assert net_scorer.random_weights == {"lpips": True, "clip": True}
    assert net_scorer.labels == {
        "lpips": "lpips_alex [random weights]",
        "psnr": "psnr",
        "ssim": "ssim",
        "clip": "clip_ViT-B-32_laion2b_s34b_b79k [random weights]",
    }
    a, b = pair
    res = net_scorer.score_pair(a, b, "a prompt")
    assert res["lpips"]["label"].endswith("[random weights]")
    assert res["clip_delta"]["label"].endswith("[random weights]")
    assert res["psnr"]["label"] == "psnr"
    mp = empty_caches()
    try:
        metrics.lpips_distance._build.cache_clear()  # force a fresh network
        torch.manual_seed(123)  # the caller's RNG state must not matter (fork_rng + seed 0)
        state = torch.get_rng_state()
        again = metrics.Scorer(names=("lpips",), device="cpu", allow_random_weights=True)
        assert torch.equal(torch.get_rng_state(), state)  # and is left untouched
    finally:
        mp.undo()
    assert again._lpips.module is not net_scorer._lpips.module
    assert again.score_pair(a, b)["lpips"]["per_frame"] == pytest.approx(res["lpips"]["per_frame"], abs=1e-7)
