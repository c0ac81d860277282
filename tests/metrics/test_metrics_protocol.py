"""Each metric protocol variant against an independent reference computed here
(scikit-image, the lpips package built afresh, numpy by hand)."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import metrics
from metrics.lpips_distance import load_lpips, lpips_frames
from metrics.protocol import DEFAULT, Protocol, psnr_item, weighted_mean
from metrics.psnr_db import psnr_frames
from metrics.ssim_index import ssim_frames


def _pair(seed=0, shape=(3, 40, 48, 3), noise=0.08):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    b = np.clip(a + rng.normal(0, noise, shape), 0, 1)
    return a, b


def _t(x):  # [F,H,W,3] -> [F,3,H,W] float64
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("data_range", [1.0, 2.0, 0.5])
def test_ssim_gaussian11_matches_skimage_at_any_data_range(data_range):
    a, b = _pair()
    ours = ssim_frames(_t(a), _t(b), filter_dtype=torch.float64, data_range=data_range).numpy()
    ref = [structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=data_range, channel_axis=-1) for x, y in zip(a, b)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("data_range", [1.0, 0.5])
def test_ssim_uniform7_matches_skimage_defaults(data_range):
    a, b = _pair(1)
    ours = metrics.ssim(a, b, window="uniform7", data_range=data_range)
    ref = [structural_similarity(x, y, data_range=data_range, channel_axis=-1) for x, y in zip(a, b)]  # 7x7 box
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)  # float32 filtering, as the default path
    gauss = metrics.ssim(a, b, data_range=data_range)
    assert np.all(np.abs(gauss - ours) > 1e-5)  # the two windows really differ (by far more than the tolerance)


def test_ssim_uniform7_on_uint8_is_the_same_quantity():
    a, b = _pair(2)
    a8, b8 = (a * 255).round().astype(np.uint8), (b * 255).round().astype(np.uint8)
    ours = metrics.ssim(a8, b8, window="uniform7")
    ref = [structural_similarity(x, y, data_range=255, channel_axis=-1) for x, y in zip(a8, b8)]
    np.testing.assert_allclose(ours, ref, atol=1e-7)


def test_psnr_per_frame_mean_and_pooled_video_by_hand():
    a, b = _pair(3)
    b[1] = np.clip(a[1] + 0.3, 0, 1)  # one bad frame: pooled and per-frame mean differ a lot
    per_frame = psnr_frames(_t(a), _t(b)).numpy()
    mse = ((a - b) ** 2).reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(per_frame, 10 * np.log10(1 / mse), rtol=1e-12)
    mean_value, _, _ = psnr_item(per_frame, DEFAULT)
    pooled_value, _, _ = psnr_item(per_frame, Protocol(psnr="pooled_video"))
    assert mean_value == pytest.approx(np.mean(10 * np.log10(1 / mse)), rel=1e-12)
    assert pooled_value == pytest.approx(10 * np.log10(1 / ((a - b) ** 2).mean()), rel=1e-10)
    assert pooled_value < mean_value - 1.0


@pytest.mark.parametrize("data_range", [2.0, 0.5])
def test_psnr_data_range_matches_skimage(data_range):
    a, b = _pair(4, shape=(2, 16, 16, 3))
    _, frames, _ = psnr_item(psnr_frames(_t(a), _t(b)).numpy(), Protocol(data_range=data_range))
    ref = [peak_signal_noise_ratio(x, y, data_range=data_range) for x, y in zip(a, b)]
    np.testing.assert_allclose(frames, ref, rtol=1e-12)
    pooled, _, _ = psnr_item(psnr_frames(_t(a), _t(b)).numpy(), Protocol(psnr="pooled_video", data_range=data_range))
    assert pooled == pytest.approx(peak_signal_noise_ratio(a, b, data_range=data_range), rel=1e-10)


def test_psnr_identical_video_is_inf_under_both_and_one_identical_frame_is_not():
    for proto in (DEFAULT, Protocol(psnr="pooled_video")):
        assert psnr_item([math.inf, math.inf], proto)[0] == math.inf
    pooled, _, n_inf = psnr_item([math.inf, 20.0], Protocol(psnr="pooled_video"))
    assert n_inf == 1 and pooled == pytest.approx(10 * math.log10(1 / 0.005))


def test_lpips_upsampled_map_mean_matches_the_lpips_package_with_spatial_true():
    import lpips as lpips_pkg

    net = load_lpips("alex", "cpu", allow_random_weights=True)
    a, b = _pair(5, shape=(2, 64, 64, 3), noise=0.2)
    x, y = _t(a).float(), _t(b).float()
    ours_avg = lpips_frames(net, x, y).numpy()
    ours_map = lpips_frames(net, x, y, spatial=True).numpy()
    # independent: a second LPIPS built with spatial=True sharing the same weights, called by hand
    ref_net = lpips_pkg.LPIPS(net="alex", spatial=True, pnet_rand=True, verbose=False).eval()
    ref_net.load_state_dict(net.module.state_dict())
    with torch.no_grad():
        ref = ref_net(x * 2 - 1, y * 2 - 1).mean(dim=(1, 2, 3)).double().numpy()
    err_map = np.max(np.abs(ours_map - ref) / ref)
    err_avg = np.max(np.abs(ours_avg - ref) / ref)
    assert err_map < 1e-6
    assert err_avg > 10 * max(err_map, 1e-8)  # the default is a different quantity (close: upsampling keeps means)
    assert net.module.spatial is False  # the shared module is left as it was


def test_weighted_mean_per_frame_by_hand():
    values, frames = [0.1, 0.4, 0.25], [81, 17, 33]
    assert weighted_mean(values, frames) == pytest.approx(np.mean(values))
    assert weighted_mean(values, frames, Protocol(averaging="per_frame")) == pytest.approx(
        (0.1 * 81 + 0.4 * 17 + 0.25 * 33) / (81 + 17 + 33))


@pytest.mark.parametrize("kwargs,needle", [({"psnr": "pooled"}, "per_frame_mean, pooled_video"),
                                           ({"ssim": "gauss"}, "gaussian11, uniform7"),
                                           ({"data_range": 0}, "positive"), ({"data_range": True}, "positive")])
def test_bad_protocol_values_name_what_is_allowed(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Protocol(**kwargs)


def test_protocol_keys_keep_variants_apart():
    assert DEFAULT.key("psnr") == "psnr" and DEFAULT.key("lpips") == "lpips"
    p = Protocol(psnr="pooled_video", data_range=0.5, lpips_spatial="upsampled_map_mean", averaging="per_frame")
    assert p.key("psnr") == "psnr@pooled_video,range=0.5"
    assert p.key("ssim") == "ssim@range=0.5"
    assert p.key("lpips") == "lpips@upsampled_map_mean"


def test_scorer_applies_its_protocol_and_records_it():
    a, b = _pair(6, shape=(4, 32, 32, 3))
    b[2] = np.clip(a[2] + 0.25, 0, 1)
    proto = Protocol(psnr="pooled_video", ssim="uniform7", data_range=0.5)
    out = metrics.Scorer(names=("psnr", "ssim"), device="cpu", protocol=proto).score_pair(a, b)
    assert out["psnr"]["value"] == pytest.approx(peak_signal_noise_ratio(a, b, data_range=0.5), rel=1e-9)
    ref_ssim = np.mean([structural_similarity(x, y, data_range=0.5, channel_axis=-1) for x, y in zip(a, b)])
    assert out["ssim"]["value"] == pytest.approx(ref_ssim, abs=1e-7)
    assert "pooled MSE" in out["psnr"]["protocol"] and "uniform 7x7" in out["ssim"]["protocol"]
    default = metrics.Scorer(names=("psnr",), device="cpu").score_pair(a, b)
    mse = ((a - b) ** 2).reshape(4, -1).mean(axis=1)
    assert default["psnr"]["value"] == pytest.approx(np.mean(10 * np.log10(1 / mse)), rel=1e-9)
