"""Input checks: every bad input is an InputError that names the offending item."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metrics
from metrics.inputs import to_frames


@pytest.fixture(scope="module")
def pixel_scorer():
    return metrics.Scorer(names=("psnr", "ssim"), device="cpu")


def good(n: int = 2) -> np.ndarray:
    return np.full((n, 16, 16, 3), 0.5)


def test_shape_mismatch_names_the_pair(pixel_scorer):
    with pytest.raises(metrics.InputError, match=r"pair 1 cached is 16x16 but pair 1 baseline is 16x15"):
        pixel_scorer.score_pairs([(good(), good(), None), (good(), good()[:, :, :15], None)])
    with pytest.raises(metrics.InputError, match=r"a is 16x16 but b is 8x8"):
        metrics.psnr(good(), good()[:, :8, :8])


def test_different_frame_counts(pixel_scorer):
    with pytest.raises(metrics.InputError, match=r"cached has 3 frames but baseline has 2"):
        pixel_scorer.score_pair(good(3), good(2))


@pytest.mark.parametrize("bad, what", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_nan_and_inf_pixels_name_item_and_frame(pixel_scorer, bad, what):
    video = good(4)
    video[2, 3, 3, 1] = bad
    with pytest.raises(metrics.InputError, match=rf"pair 1 baseline, frame 2: contains {what}"):
        pixel_scorer.score_pairs([(good(4), good(4), None), (good(4), video, None)])
    with pytest.raises(metrics.InputError, match=rf"^a, image 2: contains {what}"):
        metrics.ssim(video, good(4))


def test_empty_inputs(pixel_scorer):
    with pytest.raises(metrics.InputError, match=r"cached: is empty"):
        pixel_scorer.score_pair(np.zeros((0, 16, 16, 3)), np.zeros((0, 16, 16, 3)))
    with pytest.raises(metrics.InputError, match=r"empty"):
        pixel_scorer.score_pairs([])
    with pytest.raises(metrics.InputError, match=r"^a: is empty"):
        metrics.psnr([], [])


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, np.uint16, np.int64])
def test_wrong_dtypes_are_rejected(pixel_scorer, dtype):
    x = np.zeros((16, 16, 3), dtype)
    with pytest.raises(metrics.InputError, match=r"pair 0 cached: dtype"):
        pixel_scorer.score_pairs([(x, x, None)])
    with pytest.raises(metrics.InputError, match=r"^a: dtype"):
        metrics.psnr(torch.zeros(16, 16, 3, dtype=torch.int32), x)


@pytest.mark.parametrize("lo, hi", [(-0.5, 0.5), (0.0, 255.0), (0.0, 1.0001)])
def test_out_of_range_floats_are_errors_with_min_and_max(pixel_scorer, lo, hi):
    x = np.full((2, 16, 16, 3), 0.5)
    x[1, 0, 0, 0], x[1, 0, 0, 1] = lo, hi
    with pytest.raises(metrics.InputError, match=rf"pair 0 cached, frame 1: .*\[0, 1\].*min={lo:g}, max={hi:g}"):
        pixel_scorer.score_pairs([(x, good(), None)])


def test_no_rgb_channel_axis_and_bad_ndim():
    with pytest.raises(metrics.InputError, match="3 RGB channels"):
        to_frames(np.zeros((16, 16, 4)), "x")
    with pytest.raises(metrics.InputError, match="got shape"):
        to_frames(np.zeros((16, 16)), "x")


def test_layout_rule_channel_last_wins_then_channel_first():
    assert to_frames(np.zeros((8, 9, 3)), "x").channels_last
    assert not to_frames(np.zeros((3, 8, 9)), "x").channels_last
    amb = to_frames(np.zeros((3, 8, 9, 3)), "x")  # 3 frames of 8x9 RGB, read channel-last
    assert amb.channels_last and amb.n == 3 and amb.size == (8, 9)


def test_conversion_is_exact_and_never_rescales():
    u = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
    x = to_frames(u, "u").unit(dtype=torch.float64, device="cpu")
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    np.testing.assert_array_equal(x[0, 0].numpy(), u[..., 0] / 255.0)
    f = np.full((16, 16, 3), 0.2, np.float32)  # a float image already in [0, 1] is kept as is
    assert to_frames(f, "f").unit(dtype=torch.float32, device="cpu").unique().item() == np.float32(0.2)


def test_lists_of_frames_and_pil_images_are_accepted():
    from PIL import Image

    frames = [np.full((12, 12, 3), i * 10, np.uint8) for i in range(3)]
    assert to_frames(frames, "v").n == 3
    assert to_frames(Image.fromarray(frames[1]), "p").size == (12, 12)
    with pytest.raises(metrics.InputError, match="different shapes"):
        to_frames([frames[0], frames[1][:5]], "v")


def test_frames_too_small_for_a_metric_name_the_item(pixel_scorer):
    small = np.zeros((2, 8, 30, 3), np.uint8)
    with pytest.raises(metrics.InputError, match=r"pair 1 cached: 8x30 frames are too small for ssim"):
        pixel_scorer.score_pairs([(good(), good(), None), (small, small, None)])
