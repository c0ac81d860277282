"""AMT-S and VBench's motion smoothness (metrics/amt.py).

The golden values in data/amt_golden.npz come from VBench 0.1.5's own code (its AMT-S network,
``MotionSmoothness.motion_score``) run with our seeded random weights; see
data/make_amt_golden.py for how they were made.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from metrics import amt

DATA = Path(__file__).parent / "data"
ATOL = 1e-5


def _load_generator() -> ModuleType:
    # the clips are rebuilt with the generator's own (integer-only) frame builder
    spec = importlib.util.spec_from_file_location("make_amt_golden", DATA / "make_amt_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _load_generator()


@pytest.fixture(scope="module")
def golden() -> dict:
    with np.load(DATA / "amt_golden.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def model() -> amt.AMTS:
    return amt.build_amt(None, "cpu")


def _clip(golden: dict, name: str) -> np.ndarray:
    k, h, w, dy, dx = (int(v) for v in golden[f"{name}_meta"])
    frames = GEN.make_frames(golden[f"{name}_canvas"], k, h, w, (dy, dx))
    assert GEN.frames_digest(frames) == str(golden[f"{name}_frames_sha256"]), "clip rebuilt differently"
    return frames


# ------------------------------------------------------------------------------ (a) golden values


def test_seeded_weights_are_the_golden_ones(model, golden):
    # the golden run loaded exactly these weights into VBench's network
    ps = [p.double() for p in model.parameters()]
    assert sum(p.sum().item() for p in ps) == pytest.approx(float(golden["param_sum"]), rel=1e-9, abs=1e-9)
    assert sum(p.abs().sum().item() for p in ps) == pytest.approx(float(golden["param_abs_sum"]), rel=1e-9)


@pytest.mark.parametrize("name", ["a", "b"])  # a: 5 frames 117x130 (padded); b: 4 frames 128x144 (even k)
def test_matches_vbench(model, golden, name):
    frames = _clip(golden, name)
    preds = amt.interpolate_midframes(model, torch.from_numpy(frames[0::2])).numpy()
    for key, ours in GEN.pred_stats(preds).items():
        np.testing.assert_allclose(ours, golden[f"{name}_{key}"], atol=ATOL, rtol=0, err_msg=key)
    # truncation to uint8 can move a pixel by one level when a value sits on an integer boundary
    u8_sum = amt.tensor2img(torch.from_numpy(preds)).reshape(len(preds), -1).astype(np.int64).sum(axis=1)
    assert np.abs(u8_sum - golden[f"{name}_pred_u8_sum"]).max() <= 8

    vals = amt.motion_smoothness_frames(model, torch.from_numpy(frames))
    assert vals.dtype == np.float64 and vals.shape == golden[f"{name}_diffs"].shape
    np.testing.assert_allclose(vals, (255.0 - golden[f"{name}_diffs"]) / 255.0, atol=ATOL, rtol=0)
    assert abs(vals.mean() - float(golden[f"{name}_score"])) <= ATOL


def test_channel_order_matters(model, golden):
    # the golden test can fail: BGR frames (what cv2 reads before VBench converts) score differently
    frames = _clip(golden, "a")
    bgr = amt.motion_smoothness_frames(model, torch.from_numpy(frames[:, ::-1].copy()))
    assert abs(bgr.mean() - float(golden["a_score"])) > 1e-3


# --------------------------------------------------------------------------------- (b) InputPadder


@pytest.mark.parametrize("hw, pad", [
    ((128, 144), [0, 0, 0, 0]),  # already multiples of 16
    ((117, 130), [7, 7, 5, 6]),  # ht: 128 - 117 = 11 -> 5 | 6; wd: 144 - 130 = 14 -> 7 | 7
    ((1, 17), [7, 8, 7, 8]),  # 16 - 1 = 15 -> 7 | 8; 32 - 17 = 15 -> 7 | 8
    ((40, 33), [7, 8, 4, 4]),  # 48 - 40 = 8 -> 4 | 4; 48 - 33 = 15 -> 7 | 8
])
def test_input_padder(hw, pad):
    h, w = hw
    x = torch.arange(2 * 3 * h * w, dtype=torch.float32).reshape(2, 3, h, w)
    p = amt.InputPadder(x.shape, 16)
    assert p._pad == pad  # [left, right, top, bottom]
    y = p.pad(x)
    assert y.shape == (2, 3, h + pad[2] + pad[3], w + pad[0] + pad[1])
    # replicate: the corners repeat the corner pixel, the borders the edge rows / columns
    assert torch.equal(y[..., : pad[2] + 1, : pad[0] + 1], x[..., :1, :1].expand(-1, -1, pad[2] + 1, pad[0] + 1))
    assert torch.equal(y[..., -1, pad[0]: pad[0] + w], x[..., -1, :])
    assert torch.equal(p.unpad(y), x)
    a, b = p.pad(x, x + 1)  # several inputs: a list, as VBench's padder.pad(*inputs)
    assert torch.equal(b - a, torch.ones_like(a))
    assert [t.shape for t in p.unpad(a, b)] == [x.shape, x.shape]


# ------------------------------------------------------------------------- (c) uint8 and float


def test_uint8_and_float_inputs_agree(model, golden):
    frames = torch.from_numpy(_clip(golden, "b"))
    ref = amt.motion_smoothness_frames(model, frames)
    for dt in (torch.float32, torch.float64):
        x = frames.to(dt) / 255.0
        assert torch.equal(amt.to_uint8(x), frames)
        np.testing.assert_array_equal(amt.motion_smoothness_frames(model, x), ref)
    assert amt.to_uint8(torch.tensor([0.0, 0.3 / 255, 0.7 / 255, 1.2, -0.1])).tolist() == [0, 0, 1, 255, 0]


# --------------------------------------------------------------------- (d) selection and arithmetic


class _Average(torch.nn.Module):
    """Stub interpolator: the mean of its two inputs (no parameters). Records the pairs it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.pairs: list[tuple[float, float]] = []

    def forward(self, img0, img1, embt, scale_factor=1.0, eval=True):
        assert scale_factor == 1.0 and eval and torch.all(embt == 0.5) and embt.shape == (img0.shape[0], 1, 1, 1)
        self.pairs += [(round(float(a[0, 0, 0]) * 255), round(float(b[0, 0, 0]) * 255)) for a, b in zip(img0, img1)]
        return {"imgt_pred": (img0 + img1) / 2}


def _flat_clip(levels: list[int], h: int = 113, w: int = 120) -> torch.Tensor:
    return torch.tensor(levels, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, h, w).contiguous()


@pytest.mark.parametrize("batch_size", [1, 2])
def test_frame_selection_by_hand(batch_size):
    # frames 0, 2, 4, 6 are kept; the middles of (0, 21), (21, 40), (40, 91) are 10.5, 30.5, 65.5,
    # truncated to 10, 30, 65 (tensor2img does not round), and compared with frames 1, 3, 5
    # (13, 100, 50): |d| = 3, 70, 15 -> values (255 - d) / 255; the score is their mean.
    stub = _Average()
    vals = amt.motion_smoothness_frames(stub, _flat_clip([0, 13, 21, 100, 40, 50, 91]), batch_size=batch_size)
    assert stub.pairs == [(0, 21), (21, 40), (40, 91)]
    np.testing.assert_allclose(vals, [252 / 255, 185 / 255, 240 / 255], rtol=0, atol=1e-12)
    assert vals.mean() == pytest.approx((255 - (3 + 70 + 15) / 3) / 255, abs=1e-12)


def test_even_length_drops_the_last_frame():
    # 6 frames: kept 0, 2, 4; frame 5 is never compared
    stub = _Average()
    vals = amt.motion_smoothness_frames(stub, _flat_clip([0, 13, 21, 100, 40, 255]))
    assert stub.pairs == [(0, 21), (21, 40)]
    np.testing.assert_allclose(vals, [252 / 255, 185 / 255], rtol=0, atol=1e-12)


def test_too_short_or_too_small_refused(model):
    with pytest.raises(ValueError, match="at least 3 frames"):
        amt.motion_smoothness_frames(_Average(), _flat_clip([0, 10]))
    # 112 px pads to 112: VBench's coarsest correlation level would be 1 px wide (NaN)
    with pytest.raises(ValueError, match="113 px"):
        amt.motion_smoothness_frames(model, _flat_clip([0, 10, 20], h=112, w=200))


# ------------------------------------------------------------------------------- (e) checkpoints


def test_checkpoint_round_trip(model, tmp_path, caplog):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["comb_block.2.bias"] += 0.25  # a change, so a silent fall-back to random weights would show
    path = tmp_path / amt.CHECKPOINT_FILE
    torch.save({"state_dict": sd}, path)
    with caplog.at_level(logging.WARNING, logger="metrics.amt"):
        loaded = amt.build_amt(str(path), "cpu")
    assert "RANDOM" not in caplog.text
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    got = loaded.state_dict()
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


def test_checkpoint_with_missing_key_refused(model, tmp_path):
    sd = dict(model.state_dict())
    del sd["update2.flow_head.2.weight"]
    path = tmp_path / "missing.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(RuntimeError, match="Missing key"):
        amt.build_amt(str(path), "cpu")
    torch.save(dict(model.state_dict()), tmp_path / "bare.pth")  # VBench reads ckpt['state_dict']
    with pytest.raises(ValueError, match="state_dict"):
        amt.build_amt(str(tmp_path / "bare.pth"), "cpu")


def test_random_weights_announced(caplog):
    with caplog.at_level(logging.WARNING, logger="metrics.amt"):
        amt.build_amt(None, "cpu")
    assert "RANDOM" in caplog.text


def test_names_and_constants(model):
    sd = model.state_dict()
    # a few of VBench's parameter names (the golden run's strict load checks all of them)
    for key in ("feat_encoder.conv1.weight", "feat_encoder.layer2.0.downsample.0.weight", "encoder.pyramid4.1.1.weight",
                "decoder4.convblock.1.conv5.weight", "decoder1.convblock.2.bias", "update3.gru.2.weight",
                "comb_block.1.weight"):
        assert key in sd, key
    assert sum(p.numel() for p in model.parameters()) == 2_990_543  # AMT-S: "3.0M parameters"
    from metrics import registry
    from metrics.vbench import URL_CHECKPOINTS

    url, _ = URL_CHECKPOINTS["vbench_motion_smoothness"]
    assert url == "https://huggingface.co/lalala125/AMT/resolve/main/amt-s.pth"
    assert url.endswith("/" + amt.CHECKPOINT_FILE)
    # the registry's smallest frame side is the one AMT-S can score (below it VBench's sampler divides by 0)
    assert registry.METRICS["vbench_motion_smoothness"].min_side == amt.MIN_PADDED_SIDE - amt.PAD_DIVISOR + 1
