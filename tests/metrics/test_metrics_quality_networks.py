"""VBench's network dimensions and ImageReward: the loading path, WeightsMissing, and plumbing on random weights.

No pretrained weights can be downloaded here, so every score below is made with seeded RANDOM weights and
labelled so: these tests check the data path (preprocessing, shapes, the source's arithmetic around the
network, labels), never the values of the real networks.
"""

from __future__ import annotations

import numpy as np
import pytest

import metrics
from metrics import registry

NETWORK_METRICS = ("vbench_subject_consistency", "vbench_background_consistency", "vbench_aesthetic_quality",
                   "vbench_imaging_quality", "vbench_motion_smoothness", "image_reward")


@pytest.mark.parametrize("name", NETWORK_METRICS)
def test_missing_weights_name_the_fetch_command(name, empty_caches):
    mp = empty_caches()
    try:
        with pytest.raises(metrics.WeightsMissing) as err:
            metrics.Scorer(names=(name,), device="cpu")
    finally:
        mp.undo()
    assert "repro fetch-weights" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)


@pytest.mark.parametrize("name", NETWORK_METRICS)
def test_fetch_weights_offline_refuses_with_the_same_message(name, empty_caches):
    mp = empty_caches()
    try:
        with pytest.raises(metrics.WeightsMissing, match="repro fetch-weights"):
            metrics.fetch_weights(metrics=(name,))
    finally:
        mp.undo()


def test_clip_vit_g_14_of_the_flux_tables_resolves_and_reports_missing_weights(empty_caches):
    from metrics.weights import clip_source, resolve_clip_checkpoint

    src = clip_source("ViT-g-14", "laion2b_s12b_b42k")  # cache-dit's bench: laion/CLIP-ViT-g-14-laion2B-s12B-b42K
    assert src.repo_id == "laion/CLIP-ViT-g-14-laion2B-s12B-b42K"
    mp = empty_caches()
    try:
        with pytest.raises(metrics.WeightsMissing, match="repro fetch-weights"):
            resolve_clip_checkpoint("ViT-g-14", "laion2b_s12b_b42k")
        path, _ = resolve_clip_checkpoint("ViT-g-14", "laion2b_s12b_b42k", allow_random_weights=True)
    finally:
        mp.undo()
    assert path is None  # the Scorer then builds ViT-g-14 with random weights, labelled (the ViT-B-32 path)


def _video(rng, n=4, h=40, w=56):
    base = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    return np.clip(base.astype(int) + rng.integers(-20, 21, (n, h, w, 3)), 0, 255).astype(np.uint8)


def _random_scorer(empty_caches, names: tuple[str, ...], **kwargs) -> metrics.Scorer:
    """A Scorer for `names` built on random weights, with the torch and hub caches empty (no real weights found)."""
    mp = empty_caches()
    try:
        return metrics.Scorer(names=names, device="cpu", allow_random_weights=True, **kwargs)
    finally:
        mp.undo()


def _consistency_plumbing(name, rng, empty_caches):
    import torch

    from metrics.vbench import consistency, frame_features

    s = _random_scorer(empty_caches, (name,), batch_size=2)
    assert s.random_weights[name] and s.labels[name] == f"{name} {registry.RANDOM_WEIGHTS_TAG}"
    v = _video(rng)
    r = s.score_alone(v)[name]
    assert len(r["per_frame"]) == 3 and r["label"].endswith(registry.RANDOM_WEIGHTS_TAG)
    from metrics.inputs import to_frames

    feats = frame_features(s._vbench[name], to_frames(v, "v"), 4)
    np.testing.assert_allclose(r["per_frame"], consistency(feats), atol=1e-6)  # batch 2 vs 4: same values
    still = np.repeat(v[:1], 3, axis=0)
    assert s.score_alone(still)[name]["value"] == pytest.approx(1.0, abs=1e-5)  # identical frames: cos 1
    assert s.score_alone(v[0])[name]["value"] is None  # an image: not applicable
    return s, feats, torch


@pytest.mark.slow  # a full-size network with random weights
def test_subject_consistency_plumbing_on_random_dino(rng, empty_caches):
    from metrics.vbench import dino_pixels

    s, feats, torch = _consistency_plumbing("vbench_subject_consistency", rng, empty_caches)
    assert feats.shape == (4, 768)
    # VBench's dino_transform: short side 224 (40x56 -> 224x313), ImageNet mean/std on 0..255 values; the
    # 313 - 304 = 9 columns DINO's stride-16 patch convolution never reads are cropped
    x = torch.full((1, 3, 40, 56), 255, dtype=torch.uint8)
    p = dino_pixels(x)
    assert tuple(p.shape) == (1, 3, 224, 304)
    assert float(p[0, 0, 0, 0]) == pytest.approx((255 - 0.485) / 0.229, rel=1e-5)


@pytest.mark.slow  # a full-size network with random weights
def test_background_consistency_plumbing_on_random_clip(rng, empty_caches):
    s, feats, _ = _consistency_plumbing("vbench_background_consistency", rng, empty_caches)
    assert feats.shape == (4, 512)


@pytest.mark.slow  # ViT-L-14 with random weights: ~430M parameters to initialise
def test_aesthetic_quality_plumbing_on_random_clip_l14(rng, empty_caches):
    import torch

    s = _random_scorer(empty_caches, ("vbench_aesthetic_quality",))
    v = _video(rng, n=2)
    r = s.score_alone(v)["vbench_aesthetic_quality"]
    net = s._vbench["vbench_aesthetic_quality"]
    from metrics.clip_similarity import encode_images

    feats = encode_images(net.model, torch.from_numpy(v).permute(0, 3, 1, 2))
    expected = (net.head(feats).squeeze(-1) / 10).double().numpy()  # VBench: head(normalised features) / 10
    np.testing.assert_allclose(r["per_frame"], expected, atol=1e-6)
    assert r["label"].endswith(registry.RANDOM_WEIGHTS_TAG) and len(r["per_frame"]) == 2


def test_imaging_quality_plumbing_on_random_musiq(rng, empty_caches):
    import torch

    from metrics.musiq import imaging_quality_frames

    s = _random_scorer(empty_caches, ("vbench_imaging_quality",), batch_size=2)
    v = _video(rng, n=3)
    r = s.score_alone(v)["vbench_imaging_quality"]
    assert r["label"] == f"vbench_imaging_quality {registry.RANDOM_WEIGHTS_TAG}" and len(r["per_frame"]) == 3
    # VBench scores frame by frame: the scorer's batches of 2 give each frame's own value
    one_by_one = [imaging_quality_frames(s._vbench["vbench_imaging_quality"].model,
                                         torch.from_numpy(f).permute(2, 0, 1)[None])[0] for f in v]
    np.testing.assert_allclose(r["per_frame"], one_by_one, atol=1e-6)
    assert r["value"] == pytest.approx(float(np.mean(one_by_one)), abs=1e-9)
    assert s.score_alone(v[0])["vbench_imaging_quality"]["value"] is not None  # an image has imaging quality


def test_motion_smoothness_plumbing_on_random_amt(rng, empty_caches):
    import torch

    from metrics.amt import motion_smoothness_frames

    s = _random_scorer(empty_caches, ("vbench_motion_smoothness",))
    v = _video(rng, n=6, h=120, w=128)
    model = s._vbench["vbench_motion_smoothness"].model
    pairs = []
    hook = model.register_forward_pre_hook(lambda m, args: pairs.append(args[0].shape[0]))
    try:
        r = s.score_alone(v)["vbench_motion_smoothness"]
    finally:
        hook.remove()
    assert pairs == [1, 1]  # one pair at a time, as VBench (a pair's correlation volume is ~0.7 GB at 480x832)
    assert r["label"] == f"vbench_motion_smoothness {registry.RANDOM_WEIGHTS_TAG}"
    # frames 1 and 3 are predicted from 0-2 and 2-4; frame 5 has no right neighbour (VBench drops it)
    expected = motion_smoothness_frames(s._vbench["vbench_motion_smoothness"].model,
                                        torch.from_numpy(v).permute(0, 3, 1, 2))
    np.testing.assert_allclose(r["per_frame"], expected, atol=1e-5)  # memory layout: a rare uint8 level apart
    assert len(r["per_frame"]) == 2 and r["value"] == pytest.approx(float(expected.mean()))
    assert registry.METRICS["vbench_motion_smoothness"].frame_position(1) == 3.0
    small = s.score_alone(v[:, :64, :64])["vbench_motion_smoothness"]  # below AMT-S's 113 px: a note, no value
    assert small["value"] is None and "113 px" in small["note"]
    short = s.score_alone(v[:2])["vbench_motion_smoothness"]  # 2 frames: nothing to re-create
    assert short["value"] is None and "not applicable" in short["note"]


def test_image_reward_state_dict_conversion_covers_every_weight():
    """Every weight of our BLIP-based model has a source key in ImageReward's naming (no random leftovers)."""
    import torch

    from metrics.image_reward import _configs, _head, convert_state_dict

    vision_cfg, text_cfg = _configs()
    with torch.device("meta"):
        from transformers import BlipTextModel, BlipVisionModel

        vision, text, head = BlipVisionModel(vision_cfg), BlipTextModel(text_cfg, add_pooling_layer=False), _head()
    # ImageReward's key names, spelled as the source modules name them (BLIP ViT, med.py BERT, MLP.layers)
    src = {"blip.visual_encoder.cls_token", "blip.visual_encoder.pos_embed", "blip.visual_encoder.norm.weight",
           "blip.visual_encoder.norm.bias", "blip.visual_encoder.patch_embed.proj.weight",
           "blip.visual_encoder.patch_embed.proj.bias"}
    for i in range(24):
        for part in ("norm1", "norm2", "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
            src |= {f"blip.visual_encoder.blocks.{i}.{part}.{w}" for w in ("weight", "bias")}
    src |= {f"blip.text_encoder.{k}" for k in text.state_dict()}  # med.py's names are transformers'
    src |= {f"mlp.layers.{i}.{w}" for i in (0, 2, 4, 6, 7) for w in ("weight", "bias")}
    parts = convert_state_dict({k: torch.zeros(1) for k in src | {"blip.vision_proj.weight"}})
    for name, module in (("vision", vision), ("text", text), ("head", head)):
        assert set(parts[name]) == set(module.state_dict()), name


@pytest.mark.slow  # BLIP ViT-L/16 + BERT with random weights: ~450M parameters to initialise
def test_image_reward_plumbing_on_random_weights(rng, empty_caches):
    s = _random_scorer(empty_caches, ("image_reward", "psnr"), batch_size=2)
    assert s.random_weights["image_reward"] and s.labels["image_reward"].endswith(registry.RANDOM_WEIGHTS_TAG)
    imgs = rng.integers(0, 256, (3, 48, 40, 3), dtype=np.uint8)
    r = s.score_alone(imgs, "a red fox")["image_reward"]
    assert len(r["per_frame"]) == 3 and np.all(np.isfinite(r["per_frame"]))
    from metrics.image_reward import image_reward_frames
    import torch

    one = image_reward_frames(s._image_reward, torch.from_numpy(imgs[1:2]).permute(0, 3, 1, 2), "a red fox")
    assert r["per_frame"][1] == pytest.approx(float(one[0]), abs=1e-5)  # batching does not change values
    assert "image_reward" not in s.score_alone(imgs)  # no prompt: left out, not invented
