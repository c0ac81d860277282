"""metrics.musiq: our MUSIQ transcription against pyiqa's own code, and VBench's imaging-quality rule.

The golden file (tests/metrics/data/musiq_golden.npz, written by make_musiq_golden.py from the
pyiqa 0.1.16 and vbench 0.1.5 wheels) holds pyiqa's outputs with our seeded random weights: the
tests check the transcription and the arithmetic around the network, not the SPAQ model's values.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metrics import musiq

GOLDEN = Path(__file__).parent / "data" / "musiq_golden.npz"


@pytest.fixture(scope="module")
def model() -> musiq.MUSIQ:
    return musiq.build_musiq(None, "cpu")


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files}


def _unit(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).float().unsqueeze(0) / 255.0


# ----------------------------------------------------------------------- (a) golden


def test_golden_provenance(golden):
    assert str(golden["pyiqa_version"]) == "0.1.16"
    from metrics.vbench import URL_CHECKPOINTS

    assert str(golden["spaq_url"]).endswith("/" + musiq.MUSIQ_SPAQ_FILE)  # pyiqa's default_model_urls['spaq']
    assert URL_CHECKPOINTS["vbench_imaging_quality"][0].endswith("/" + musiq.MUSIQ_SPAQ_FILE)  # VBench's wget URL
    # our seeded init draws the same numbers as pyiqa's MUSIQ(pretrained=False) under seed 0
    assert bool(golden["seeded_init_equals_pyiqa"])


def test_modules_match_pyiqa(model, golden):
    # the same leaf modules with the same constants (eps, kernels, strides, GELU form); pyiqa's
    # Dropout / Identity (rate 0) are left out of both
    want = json.loads(str(golden["leaf_modules"]))
    got = {n: repr(m) for n, m in model.named_modules() if n and not list(m.children())}
    assert got == want


@pytest.mark.parametrize("name", ["a", "b", "c"])
def test_model_matches_pyiqa(model, golden, name):
    x = _unit(golden[f"img_{name}"])
    with torch.inference_mode():
        mos = model(x).double().numpy()
        p = musiq.get_multiscale_patches((x - 0.5) * 2, **model.data_preprocess_opts)
    np.testing.assert_allclose(mos, golden[f"mos_{name}"], rtol=0, atol=1e-5)
    assert tuple(p.shape) == tuple(golden[f"patch_shape_{name}"])
    np.testing.assert_array_equal(p[0, :, -3:].numpy().astype(np.int16), golden[f"patch_cols_{name}"])
    v = p[..., :-3].double().reshape(-1)
    w = torch.arange(v.numel(), dtype=torch.float64) % 997 + 1
    np.testing.assert_allclose([float(v.sum()), float((v * w).sum())], golden[f"patch_sums_{name}"], rtol=1e-6)


def test_golden_images_differ_by_far_more_than_the_tolerance(golden):
    mos = [float(golden[f"mos_{n}"].squeeze()) for n in "abc"]
    assert min(abs(a - b) for i, a in enumerate(mos) for b in mos[i + 1:]) > 1e-3


def test_imaging_quality_frames_match_vbench(model, golden):
    clip = np.stack([golden["img_a"], 255 - golden["img_a"]])
    got = musiq.imaging_quality_frames(model, torch.from_numpy(clip))
    np.testing.assert_allclose(got, golden["vbench_clip_a"], rtol=0, atol=1e-7)
    # c is 10 x 561: VBench resizes it to int(512/561*10) x int(512/561*561) = 9 x 511
    c = torch.from_numpy(golden["img_c"][None])
    assert tuple(musiq.vbench_pixels(c).shape[-2:]) == tuple(golden["vbench_size_c"]) == (9, 511)
    np.testing.assert_allclose(musiq.imaging_quality_frames(model, c), golden["vbench_c"], rtol=0, atol=1e-7)


# ------------------------------------------------------------- (b) multi-scale patches


def test_multiscale_patches_by_hand():
    G, P = 10, 32
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(3))
    p = musiq.get_multiscale_patches(x, longer_side_lengths=[384, 224], max_seq_len_from_original_res=-1)
    # 224: ratio 4 -> 160 x 224 (5 x 7 patches of 49); 384: round(274.29) x 384 (9 x 12 of 144); original 2 x 2
    scales = [((5, 7), 49), ((9, 12), 144), ((2, 2), 4)]
    assert p.shape == (1, 49 + 144 + 4, 3 * P * P + 3)
    start = 0
    for scale_id, ((ch, cw), max_len) in enumerate(scales):
        block = p[0, start:start + max_len]
        n = ch * cw
        hashed = [(r * G // ch) * G + (c * G // cw) for r in range(ch) for c in range(cw)]
        assert block[:n, -3].tolist() == hashed
        assert (block[:n, -2] == scale_id).all() and (block[:n, -1] == 1).all()
        assert (block[n:] == 0).all()  # padding tokens: no pixels, position 0, scale 0, mask 0
        start += max_len
    # original resolution, TF SAME: 24 rows of padding (12 top, 12 bottom), 8 columns (4 left, 4 right)
    orig = p[0, 49 + 144:, :-3].reshape(4, 3, P, P)
    want = torch.zeros(3, P, P)
    want[:, 12:, 4:] = x[0, :, :20, :28]
    torch.testing.assert_close(orig[0], want, rtol=0, atol=0)
    want = torch.zeros(3, P, P)
    want[:, :20, :28] = x[0, :, 20:, 28:]
    torch.testing.assert_close(orig[3], want, rtol=0, atol=0)
    # 224 scale: bicubic (no antialias) to 160 x 224, no padding needed; patch 1 is columns 32..63
    resized = F.interpolate(x, (160, 224), mode="bicubic", align_corners=False)
    torch.testing.assert_close(p[0, 1, :-3].reshape(3, P, P), resized[0, :, :32, 32:64], rtol=0, atol=0)


def test_hashed_positions_when_the_grid_is_finer_than_the_patches():
    # 17 patch columns hashed onto 10 cells: floor(c * 10 / 17)
    got = musiq.get_hashed_spatial_pos_emb_index(10, 1, 17)
    assert got.reshape(-1).tolist() == [c * 10 // 17 for c in range(17)]


# ---------------------------------------------------------------------- (c) padding


def _tf_same(n: int, k: int, s: int) -> tuple[int, int]:
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("h,w,k,s", [(32, 32, 7, 2), (16, 16, 3, 2), (8, 8, 3, 1), (8, 8, 1, 1), (7, 9, 3, 2),
                                     (9, 6, 7, 2), (5, 11, 4, 3), (40, 56, 32, 32)])
def test_exact_padding_is_tf_same(h, w, k, s):
    x = torch.rand(1, 2, h, w, generator=torch.Generator().manual_seed(h * w))
    (t, b), (l, r) = _tf_same(h, k, s), _tf_same(w, k, s)
    for y in (musiq.exact_padding_2d(x, k, s), musiq.ExactPadding2d(k, s)(x)):
        assert y.shape == (1, 2, h + t + b, w + l + r)
        torch.testing.assert_close(y[..., t:t + h, l:l + w], x, rtol=0, atol=0)
        assert float(y.abs().sum()) == pytest.approx(float(x.abs().sum()), rel=1e-6)  # zeros elsewhere
        assert F.conv2d(y, torch.ones(1, 2, k, k), stride=s).shape[-2:] == (math.ceil(h / s), math.ceil(w / s))


def test_musiq_layers_never_hit_pyiqa_negative_padding(model):
    # pyiqa does not clamp at 0: a kernel smaller than its stride crops (1 of 6 here) where TF pads 0
    assert musiq.exact_padding_2d(torch.ones(1, 1, 6, 6), 1, 2).shape[-2:] == (5, 5)
    for m in model.modules():
        if isinstance(m, musiq.StdConv):
            assert m.kernel_size[0] >= m.stride[0]
    assert model.root_pool[1].kernel[0] >= model.root_pool[1].stride[0]


# -------------------------------------------------------------------- (d) VBench's rule


def test_uint8_and_float_frames_give_the_same_values(model):
    clip = torch.randint(0, 256, (2, 3, 24, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    from_u8 = musiq.imaging_quality_frames(model, clip)
    from_float = musiq.imaging_quality_frames(model, clip.float() / 255.0)
    assert from_u8.dtype == np.float64 and from_u8.shape == (2,)
    np.testing.assert_allclose(from_float, from_u8, rtol=0, atol=1e-7)
    with torch.inference_mode():
        raw = model(clip.float() / 255.0)[:, 0].double().numpy()
    np.testing.assert_allclose(from_u8, raw / 100.0, rtol=0, atol=1e-9)  # score / 100, no resize at <= 512


@pytest.mark.parametrize("h,w,size", [(20, 561, (18, 511)), (600, 30, (512, 25)), (20, 512, (20, 512)),
                                      (513, 513, (512, 512))])
def test_vbench_resize_rule(h, w, size):
    from torchvision import transforms

    x = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(h + w))
    got = musiq.vbench_pixels(x)
    assert tuple(got.shape[-2:]) == size
    v = x.float()  # VBench's load_video: torch.Tensor(frames), float32 on 0..255
    if max(h, w) > 512:
        scale = 512.0 / max(h, w)
        v = transforms.Resize(size=(int(scale * h), int(scale * w)), antialias=False)(v)
    torch.testing.assert_close(got, v / 255.0, rtol=0, atol=0)
    torch.testing.assert_close(musiq.vbench_pixels(x.float() / 255.0), got, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- (e) checkpoints


def test_checkpoint_round_trip_and_refusals(model, tmp_path, caplog):
    sd = model.state_dict()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        want = model(x)
    plain, wrapped = tmp_path / "musiq.pth", tmp_path / "musiq_dp.pth"
    torch.save(sd, plain)
    torch.save({f"module.{k}": v for k, v in sd.items()}, wrapped)  # a DataParallel checkpoint
    for path in (plain, wrapped):
        loaded = musiq.build_musiq(str(path), "cpu")
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
        assert all(torch.equal(a, sd[k]) for k, a in loaded.state_dict().items())
        with torch.inference_mode():
            torch.testing.assert_close(loaded(x), want, rtol=0, atol=0)

    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in sd.items() if k != "head.bias"}, missing)
    with pytest.raises(RuntimeError, match="Missing key"):
        musiq.build_musiq(str(missing), "cpu")
    extra = tmp_path / "extra.pth"
    torch.save({**sd, "head.extra": torch.zeros(1)}, extra)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        musiq.build_musiq(str(extra), "cpu")

    with caplog.at_level(logging.WARNING, logger="metrics.musiq"):
        rand = musiq.build_musiq(None, "cpu")
    assert "RANDOM" in caplog.text
    assert all(torch.equal(a, sd[k]) for k, a in rand.state_dict().items())  # seeded: the same every time


def test_random_init_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    musiq.build_musiq(None, "cpu")
    torch.testing.assert_close(torch.rand(3), before, rtol=0, atol=0)


def test_dist_to_mos():
    torch.testing.assert_close(musiq.dist_to_mos(torch.tensor([[0.1, 0.2, 0.7]])), torch.tensor([[2.6]]))
    torch.testing.assert_close(musiq.dist_to_mos(torch.tensor([[-0.4]])), torch.tensor([[-0.4]]))
