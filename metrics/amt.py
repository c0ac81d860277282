"""AMT-S frame interpolation and VBench's ``motion_smoothness`` score, transcribed from VBench.

AMT (Li et al., CVPR 2023, "AMT: All-Pairs Multi-Field Transforms for Efficient Frame
Interpolation", github.com/MCG-NKU/AMT) predicts the frame halfway between two frames. VBench's
motion smoothness drops every second frame of a video, re-creates the dropped frames with AMT-S
and scores how close they come to the real ones. The ``vbench`` package cannot be installed here
(it pins numpy < 2 and transformers 4.33), so the inference path of its vendored copy of AMT is
transcribed below. Module and parameter names are VBench's, so its checkpoint ``amt-s.pth``
loads with ``strict=True`` exactly as VBench loads it (``ckpt['state_dict']``).

Sources: the VBench 0.1.5 wheel (PyPI ``vbench-0.1.5-py3-none-any.whl``), files
``vbench/motion_smoothness.py`` (identical to Vchitect/VBench at commit
7d95ee73f5a8b600493fe0ba59649b4855eabc67), ``vbench/third_party/amt/networks/AMT-S.py`` and
``networks/blocks/ifrnet.py`` (identical at 4539321ccabac21aec7d257b740c4448f49650e6),
``networks/blocks/multi_flow.py`` (identical at 91bece871c27d8a62a4b1be753caf2a3e2706ca1),
``networks/blocks/feat_enc.py``, ``networks/blocks/raft.py``, ``utils/utils.py``
(``InputPadder``, ``img2tensor``, ``tensor2img``), ``utils/flow_utils.py`` (``warp``),
``cfgs/AMT-S.yaml`` (``corr_radius: 3, corr_lvls: 4, num_flows: 3``) and ``vbench/utils.py``
(the checkpoint's place and URL). The files after ``multi_flow.py`` in this list were read from
the wheel only (no commit of them was at hand).

VBench's rule (``MotionSmoothness.motion_score`` / ``vfi_score`` / ``get_diff``), for one video
of ``k >= 3`` RGB uint8 frames ``f_0 .. f_(k-1)``:

* keep the even frames ``f_0, f_2, f_4, ...`` (``extract_frame(frames, start_from=0)``), as
  float32 ``/ 255`` (``img2tensor``), replicate-padded to multiples of 16 (``InputPadder``,
  divisor ``int(16 / scale)``);
* for each consecutive kept pair run AMT-S with ``embt = 0.5`` and ``scale_factor = scale``
  (one pair per forward pass), unpad, and convert to uint8 by ``* 255``, clip to 0..255 and
  truncate (``tensor2img``: ``astype(np.uint8)``, no rounding);
* prediction ``j`` (between ``f_(2j)`` and ``f_(2j+2)``) is compared with ``f_(2j+1)``:
  ``d_j = mean |f_(2j+1) - pred_j|`` over H, W and channels on 0..255 (``cv2.absdiff``,
  ``np.mean``); there are ``(k - 1) // 2`` of them (for even ``k`` the last frame is unused);
* the video's score is ``(255 - mean_j d_j) / 255``; a set's score is the mean over videos.

:func:`motion_smoothness_frames` returns the per-prediction ``(255 - d_j) / 255``; the map is
linear, so their mean is the video's score (to float64 rounding).

``scale``: VBench computes it from the GPU's memory only when ``device == 'cuda'`` compares
true. VBench's own launcher passes ``torch.device("cuda")``, which is not equal to the string
``'cuda'``, so its "cpu mode" branch runs and ``scale`` is 1 (padding divisor 16) whatever the
card; :func:`motion_smoothness_frames` does the same. (Called with the string ``'cuda'``, VBench
would shrink frames larger than about 1024 x 512 x sqrt((VRAM - 2500 MiB) / 1500 MiB) pixels;
not reproduced.)

Deviations, stated plainly:

* VBench reads MP4s with cv2 (BGR, converted to RGB before anything else: the network sees
  RGB). We take the lossless RGB frames; floats on [0, 1] are rounded to uint8 first
  (``round(x * 255)``), the 8 bits VBench would have read from a saved video.
* ``batch_size > 1`` runs several pairs per forward pass: the same arithmetic per pair, but the
  backend may order its sums differently, so a truncated pixel can move by one level. The
  default 1 is VBench's order.
* Frames under 113 px a side (under 128 once padded) are refused: AMT-S's coarsest correlation
  level is then 1 px (or 0 px) wide, VBench's ``bilinear_sampler`` divides by ``W - 1 = 0``, and
  VBench casts the resulting NaN frames to uint8 (checked with VBench's code: a 112 x 112 clip
  scores about 0.50 whatever its content).
* Training-only outputs (the flow and feature pyramids returned when ``eval=False``), the
  unused encoder / update-block variants and the dropout path are left out.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["AMTS", "AMT_S_PARAMS", "CHECKPOINT_FILE", "MIN_PADDED_SIDE", "VBENCH_CACHE_SUBDIR",
           "InputPadder", "build_amt", "interpolate_midframes", "motion_smoothness_frames", "tensor2img", "to_uint8"]

log = logging.getLogger(__name__)
RANDOM_SEED = 0
#: VBench's download (vbench/utils.py, ``init_submodules``, dimension ``motion_smoothness``): its URL is
#: ``metrics.vbench.URL_CHECKPOINTS["vbench_motion_smoothness"]``
CHECKPOINT_FILE = "amt-s.pth"
#: VBench keeps it at ``$VBENCH_CACHE_DIR/amt_model/amt-s.pth`` (default ``~/.cache/vbench``)
VBENCH_CACHE_SUBDIR = "amt_model"
#: ``network.params`` of vbench/third_party/amt/cfgs/AMT-S.yaml
AMT_S_PARAMS = {"corr_radius": 3, "corr_lvls": 4, "num_flows": 3}
#: ``int(16 / scale)`` with VBench's scale of 1 (see the module docstring)
PAD_DIVISOR = 16
#: VBench's ``embt``: the predicted frame sits halfway
EMBT = 0.5
#: Smallest padded side: below it the 4th correlation level (1/64 scale) is 1 px wide and
#: ``bilinear_sampler`` divides by ``W - 1 = 0`` (NaN; 0 px fails outright).
MIN_PADDED_SIDE = 128


# ------------------------------------------------------------------ utils/utils.py, flow_utils.py


class InputPadder:
    """Pads images such that dimensions are divisible by divisor (VBench's amt/utils/utils.py).

    Replicate padding, split ``pad // 2`` before and the rest after, on the last two dims.
    """

    def __init__(self, dims: Any, divisor: int = 16) -> None:
        self.ht, self.wd = dims[-2:]
        pad_ht = (((self.ht // divisor) + 1) * divisor - self.ht) % divisor
        pad_wd = (((self.wd // divisor) + 1) * divisor - self.wd) % divisor
        self._pad = [pad_wd // 2, pad_wd - pad_wd // 2, pad_ht // 2, pad_ht - pad_ht // 2]

    def pad(self, *inputs: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if len(inputs) == 1:
            return F.pad(inputs[0], self._pad, mode="replicate")
        return [F.pad(x, self._pad, mode="replicate") for x in inputs]

    def unpad(self, *inputs: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if len(inputs) == 1:
            return self._unpad(inputs[0])
        return [self._unpad(x) for x in inputs]

    def _unpad(self, x: torch.Tensor) -> torch.Tensor:
        ht, wd = x.shape[-2:]
        c = [self._pad[2], ht - self._pad[3], self._pad[0], wd - self._pad[1]]
        return x[..., c[0]:c[1], c[2]:c[3]]


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    B, _, H, W = flow.shape
    # built on the CPU then moved, as VBench does (a CUDA linspace may round differently)
    xx = torch.linspace(-1.0, 1.0, W).view(1, 1, 1, W).expand(B, -1, H, -1)
    yy = torch.linspace(-1.0, 1.0, H).view(1, 1, H, 1).expand(B, -1, -1, W)
    grid = torch.cat([xx, yy], 1).to(img)
    flow_ = torch.cat([flow[:, 0:1, :, :] / ((W - 1.0) / 2.0), flow[:, 1:2, :, :] / ((H - 1.0) / 2.0)], 1)
    grid_ = (grid + flow_).permute(0, 2, 3, 1)
    return F.grid_sample(input=img, grid=grid_, mode="bilinear", padding_mode="border", align_corners=True)


def resize(x: torch.Tensor, scale_factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale_factor, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------- networks/blocks/feat_enc.py


def _norm(norm_fn: str, channels: int, num_groups: int) -> nn.Module:
    if norm_fn == "group":
        return nn.GroupNorm(num_groups=num_groups, num_channels=channels)
    if norm_fn == "batch":
        return nn.BatchNorm2d(channels)
    if norm_fn == "instance":
        return nn.InstanceNorm2d(channels)
    if norm_fn == "none":
        return nn.Sequential()
    raise ValueError(f"unknown norm_fn {norm_fn!r}")


class BottleneckBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, norm_fn: str = "group", stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes // 4, kernel_size=1, padding=0)
        self.conv2 = nn.Conv2d(planes // 4, planes // 4, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(planes // 4, planes, kernel_size=1, padding=0)
        self.relu = nn.ReLU(inplace=True)
        num_groups = planes // 8
        self.norm1 = _norm(norm_fn, planes // 4, num_groups)
        self.norm2 = _norm(norm_fn, planes // 4, num_groups)
        self.norm3 = _norm(norm_fn, planes, num_groups)
        if stride == 1:
            self.downsample = None
        else:
            self.norm4 = _norm(norm_fn, planes, num_groups)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        y = self.relu(self.norm1(self.conv1(y)))
        y = self.relu(self.norm2(self.conv2(y)))
        y = self.relu(self.norm3(self.conv3(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


class SmallEncoder(nn.Module):
    def __init__(self, output_dim: int = 128, norm_fn: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        if dropout > 0:
            raise ValueError("inference only: dropout is not transcribed")  # AMT-S passes 0.
        self.norm_fn = norm_fn
        self.norm1 = _norm(norm_fn, 32, 8)
        self.conv1 = nn.Conv2d(3, 32, kernel_size=7, stride=2, padding=3)
        self.relu1 = nn.ReLU(inplace=True)
        self.in_planes = 32
        self.layer1 = self._make_layer(32, stride=1)
        self.layer2 = self._make_layer(64, stride=2)
        self.layer3 = self._make_layer(96, stride=2)
        self.conv2 = nn.Conv2d(96, output_dim, kernel_size=1)
        # AMT's own initialisation (matters only for the seeded random weights)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)):
                if m.weight is not None:
                    nn.init.constant_(m.weight, 1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def _make_layer(self, dim: int, stride: int = 1) -> nn.Sequential:
        layer1 = BottleneckBlock(self.in_planes, dim, self.norm_fn, stride=stride)
        layer2 = BottleneckBlock(dim, dim, self.norm_fn, stride=1)
        self.in_planes = dim
        return nn.Sequential(layer1, layer2)

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> Any:
        # a list is one batch: both frames go through the encoder together
        is_list = isinstance(x, (tuple, list))
        if is_list:
            batch_dim = x[0].shape[0]
            x = torch.cat(x, dim=0)
        x = self.conv1(x)
        x = self.norm1(x)
        x = self.relu1(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.conv2(x)
        if is_list:
            x = torch.split(x, [batch_dim, batch_dim], dim=0)
        return x


# ----------------------------------------------------------------------- networks/blocks/ifrnet.py


def convrelu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
             dilation: int = 1, groups: int = 1, bias: bool = True) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=bias),
        nn.PReLU(out_channels),
    )


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, side_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.side_channels = side_channels
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1, bias=bias), nn.PReLU(in_channels))
        self.conv2 = nn.Sequential(
            nn.Conv2d(side_channels, side_channels, kernel_size=3, stride=1, padding=1, bias=bias),
            nn.PReLU(side_channels))
        self.conv3 = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1, bias=bias), nn.PReLU(in_channels))
        self.conv4 = nn.Sequential(
            nn.Conv2d(side_channels, side_channels, kernel_size=3, stride=1, padding=1, bias=bias),
            nn.PReLU(side_channels))
        self.conv5 = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1, bias=bias)
        self.prelu = nn.PReLU(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        res_feat = out[:, :-self.side_channels, ...]
        side_feat = out[:, -self.side_channels:, :, :]
        side_feat = self.conv2(side_feat)
        out = self.conv3(torch.cat([res_feat, side_feat], 1))
        res_feat = out[:, :-self.side_channels, ...]
        side_feat = out[:, -self.side_channels:, :, :]
        side_feat = self.conv4(side_feat)
        out = self.conv5(torch.cat([res_feat, side_feat], 1))
        return self.prelu(x + out)


class Encoder(nn.Module):
    def __init__(self, channels: list[int], large: bool = False) -> None:
        super().__init__()
        self.channels = channels
        prev_ch = 3
        for idx, ch in enumerate(channels, 1):
            k = 7 if large and idx == 1 else 3
            p = 3 if k == 7 else 1
            self.register_module(f"pyramid{idx}",
                                 nn.Sequential(convrelu(prev_ch, ch, k, 2, p), convrelu(ch, ch, 3, 1, 1)))
            prev_ch = ch

    def forward(self, in_x: torch.Tensor) -> list[torch.Tensor]:
        fs = []
        for idx in range(len(self.channels)):
            out_x = getattr(self, f"pyramid{idx + 1}")(in_x)
            fs.append(out_x)
            in_x = out_x
        return fs


class InitDecoder(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, skip_ch: int) -> None:
        super().__init__()
        self.convblock = nn.Sequential(
            convrelu(in_ch * 2 + 1, in_ch * 2),
            ResBlock(in_ch * 2, skip_ch),
            nn.ConvTranspose2d(in_ch * 2, out_ch + 4, 4, 2, 1, bias=True),
        )

    def forward(self, f0: torch.Tensor, f1: torch.Tensor, embt: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, w = f0.shape[2:]
        embt = embt.repeat(1, 1, h, w)
        out = self.convblock(torch.cat([f0, f1, embt], 1))
        flow0, flow1 = torch.chunk(out[:, :4, ...], 2, 1)
        ft_ = out[:, 4:, ...]
        return flow0, flow1, ft_


class IntermediateDecoder(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, skip_ch: int) -> None:
        super().__init__()
        self.convblock = nn.Sequential(
            convrelu(in_ch * 3 + 4, in_ch * 3),
            ResBlock(in_ch * 3, skip_ch),
            nn.ConvTranspose2d(in_ch * 3, out_ch + 4, 4, 2, 1, bias=True),
        )

    def forward(self, ft_: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor, flow0_in: torch.Tensor,
                flow1_in: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f0_warp = warp(f0, flow0_in)
        f1_warp = warp(f1, flow1_in)
        f_in = torch.cat([ft_, f0_warp, f1_warp, flow0_in, flow1_in], 1)
        out = self.convblock(f_in)
        flow0, flow1 = torch.chunk(out[:, :4, ...], 2, 1)
        ft_ = out[:, 4:, ...]
        flow0 = flow0 + 2.0 * resize(flow0_in, scale_factor=2.0)
        flow1 = flow1 + 2.0 * resize(flow1_in, scale_factor=2.0)
        return flow0, flow1, ft_


# ------------------------------------------------------------------- networks/blocks/multi_flow.py


def multi_flow_combine(comb_block: nn.Module, img0: torch.Tensor, img1: torch.Tensor, flow0: torch.Tensor,
                       flow1: torch.Tensor, mask: torch.Tensor | None = None, img_res: torch.Tensor | None = None,
                       mean: torch.Tensor | None = None) -> torch.Tensor:
    """Warps both images along each of the ``num_flows`` flow pairs, blends them, then refines."""
    b, c, h, w = flow0.shape
    num_flows = c // 2
    flow0 = flow0.reshape(b, num_flows, 2, h, w).reshape(-1, 2, h, w)
    flow1 = flow1.reshape(b, num_flows, 2, h, w).reshape(-1, 2, h, w)
    mask = mask.reshape(b, num_flows, 1, h, w).reshape(-1, 1, h, w) if mask is not None else None
    img_res = img_res.reshape(b, num_flows, 3, h, w).reshape(-1, 3, h, w) if img_res is not None else 0
    img0 = torch.stack([img0] * num_flows, 1).reshape(-1, 3, h, w)
    img1 = torch.stack([img1] * num_flows, 1).reshape(-1, 3, h, w)
    mean = torch.stack([mean] * num_flows, 1).reshape(-1, 1, 1, 1) if mean is not None else 0
    img0_warp = warp(img0, flow0)
    img1_warp = warp(img1, flow1)
    img_warps = mask * img0_warp + (1 - mask) * img1_warp + mean + img_res
    img_warps = img_warps.reshape(b, num_flows, 3, h, w)
    return img_warps.mean(1) + comb_block(img_warps.view(b, -1, h, w))


class MultiFlowDecoder(nn.Module):
    def __init__(self, in_ch: int, skip_ch: int, num_flows: int = 3) -> None:
        super().__init__()
        self.num_flows = num_flows
        self.convblock = nn.Sequential(
            convrelu(in_ch * 3 + 4, in_ch * 3),
            ResBlock(in_ch * 3, skip_ch),
            nn.ConvTranspose2d(in_ch * 3, 8 * num_flows, 4, 2, 1, bias=True),
        )

    def forward(self, ft_: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor, flow0: torch.Tensor,
                flow1: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.num_flows
        f0_warp = warp(f0, flow0)
        f1_warp = warp(f1, flow1)
        out = self.convblock(torch.cat([ft_, f0_warp, f1_warp, flow0, flow1], 1))
        delta_flow0, delta_flow1, mask, img_res = torch.split(out, [2 * n, 2 * n, n, 3 * n], 1)
        mask = torch.sigmoid(mask)
        flow0 = delta_flow0 + 2.0 * resize(flow0, scale_factor=2.0).repeat(1, self.num_flows, 1, 1)
        flow1 = delta_flow1 + 2.0 * resize(flow1, scale_factor=2.0).repeat(1, self.num_flows, 1, 1)
        return flow0, flow1, mask, img_res


# ------------------------------------------------------------------------- networks/blocks/raft.py


def bilinear_sampler(img: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """grid_sample with pixel coordinates."""
    H, W = img.shape[-2:]
    xgrid, ygrid = coords.split([1, 1], dim=-1)
    xgrid = 2 * xgrid / (W - 1) - 1
    ygrid = 2 * ygrid / (H - 1) - 1
    grid = torch.cat([xgrid, ygrid], dim=-1)
    return F.grid_sample(img, grid, align_corners=True)


def coords_grid(batch: int, ht: int, wd: int, device: Any) -> torch.Tensor:
    coords = torch.meshgrid(torch.arange(ht, device=device), torch.arange(wd, device=device), indexing="ij")
    coords = torch.stack(coords[::-1], dim=0).float()
    return coords[None].repeat(batch, 1, 1, 1)


class SmallUpdateBlock(nn.Module):
    def __init__(self, cdim: int, hidden_dim: int, flow_dim: int, corr_dim: int, fc_dim: int,
                 corr_levels: int = 4, radius: int = 3, scale_factor: int | None = None) -> None:
        super().__init__()
        cor_planes = corr_levels * (2 * radius + 1) ** 2
        self.scale_factor = scale_factor
        self.convc1 = nn.Conv2d(2 * cor_planes, corr_dim, 1, padding=0)
        self.convf1 = nn.Conv2d(4, flow_dim * 2, 7, padding=3)
        self.convf2 = nn.Conv2d(flow_dim * 2, flow_dim, 3, padding=1)
        self.conv = nn.Conv2d(corr_dim + flow_dim, fc_dim, 3, padding=1)
        self.gru = nn.Sequential(
            nn.Conv2d(fc_dim + 4 + cdim, hidden_dim, 3, padding=1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1),
        )
        self.feat_head = nn.Sequential(
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(hidden_dim, cdim, 3, padding=1),
        )
        self.flow_head = nn.Sequential(
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(hidden_dim, 4, 3, padding=1),
        )
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)

    def forward(self, net: torch.Tensor, flow: torch.Tensor, corr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = resize(net, 1 / self.scale_factor) if self.scale_factor is not None else net
        cor = self.lrelu(self.convc1(corr))
        flo = self.lrelu(self.convf1(flow))
        flo = self.lrelu(self.convf2(flo))
        cor_flo = torch.cat([cor, flo], dim=1)
        inp = self.lrelu(self.conv(cor_flo))
        inp = torch.cat([inp, flow, net], dim=1)
        out = self.gru(inp)
        delta_net = self.feat_head(out)
        delta_flow = self.flow_head(out)
        if self.scale_factor is not None:
            delta_net = resize(delta_net, scale_factor=self.scale_factor)
            delta_flow = self.scale_factor * resize(delta_flow, scale_factor=self.scale_factor)
        return delta_net, delta_flow


class BidirCorrBlock:
    """All-pairs correlation volume of two feature maps (and its transpose), looked up by coordinates."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, num_levels: int = 4, radius: int = 4) -> None:
        self.num_levels = num_levels
        self.radius = radius
        self.corr_pyramid = []
        self.corr_pyramid_T = []
        corr = BidirCorrBlock.corr(fmap1, fmap2)
        batch, h1, w1, dim, h2, w2 = corr.shape
        corr_T = corr.clone().permute(0, 4, 5, 3, 1, 2)
        corr = corr.reshape(batch * h1 * w1, dim, h2, w2)
        corr_T = corr_T.reshape(batch * h2 * w2, dim, h1, w1)
        self.corr_pyramid.append(corr)
        self.corr_pyramid_T.append(corr_T)
        for _ in range(self.num_levels - 1):
            corr = F.avg_pool2d(corr, 2, stride=2)
            corr_T = F.avg_pool2d(corr_T, 2, stride=2)
            self.corr_pyramid.append(corr)
            self.corr_pyramid_T.append(corr_T)

    def __call__(self, coords0: torch.Tensor, coords1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.radius
        coords0 = coords0.permute(0, 2, 3, 1)
        coords1 = coords1.permute(0, 2, 3, 1)
        assert coords0.shape == coords1.shape, f"coords0 shape: [{coords0.shape}] is not equal to [{coords1.shape}]"
        batch, h1, w1, _ = coords0.shape
        out_pyramid = []
        out_pyramid_T = []
        for i in range(self.num_levels):
            corr = self.corr_pyramid[i]
            corr_T = self.corr_pyramid_T[i]
            dx = torch.linspace(-r, r, 2 * r + 1, device=coords0.device)
            dy = torch.linspace(-r, r, 2 * r + 1, device=coords0.device)
            delta = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), axis=-1)
            delta_lvl = delta.view(1, 2 * r + 1, 2 * r + 1, 2)
            centroid_lvl_0 = coords0.reshape(batch * h1 * w1, 1, 1, 2) / 2 ** i
            centroid_lvl_1 = coords1.reshape(batch * h1 * w1, 1, 1, 2) / 2 ** i
            coords_lvl_0 = centroid_lvl_0 + delta_lvl
            coords_lvl_1 = centroid_lvl_1 + delta_lvl
            corr = bilinear_sampler(corr, coords_lvl_0)
            corr_T = bilinear_sampler(corr_T, coords_lvl_1)
            out_pyramid.append(corr.view(batch, h1, w1, -1))
            out_pyramid_T.append(corr_T.view(batch, h1, w1, -1))
        out = torch.cat(out_pyramid, dim=-1)
        out_T = torch.cat(out_pyramid_T, dim=-1)
        return out.permute(0, 3, 1, 2).contiguous().float(), out_T.permute(0, 3, 1, 2).contiguous().float()

    @staticmethod
    def corr(fmap1: torch.Tensor, fmap2: torch.Tensor) -> torch.Tensor:
        batch, dim, ht, wd = fmap1.shape
        fmap1 = fmap1.view(batch, dim, ht * wd)
        fmap2 = fmap2.view(batch, dim, ht * wd)
        corr = torch.matmul(fmap1.transpose(1, 2), fmap2)
        corr = corr.view(batch, ht, wd, 1, ht, wd)
        return corr / torch.sqrt(torch.tensor(dim).float())


# ------------------------------------------------------------------------------ networks/AMT-S.py


class AMTS(nn.Module):
    """AMT-S (VBench's ``networks.AMT-S.Model``, renamed; its attributes keep VBench's names).

    ``forward`` returns ``{'imgt_pred': [b, 3, H, W]}`` on [0, 1]; ``embt`` is ``[b, 1, 1, 1]``.

    H and W must be multiples of 16 (pad with :class:`InputPadder` first).
    """

    def __init__(self, corr_radius: int = 3, corr_lvls: int = 4, num_flows: int = 3,
                 channels: tuple[int, ...] = (20, 32, 44, 56), skip_channels: int = 20) -> None:
        super().__init__()
        channels = list(channels)
        self.radius = corr_radius
        self.corr_levels = corr_lvls
        self.num_flows = num_flows
        self.channels = channels
        self.skip_channels = skip_channels
        # construction order is VBench's, so the seeded random init draws in the same order
        self.feat_encoder = SmallEncoder(output_dim=84, norm_fn="instance", dropout=0.0)
        self.encoder = Encoder(channels)
        self.decoder4 = InitDecoder(channels[3], channels[2], skip_channels)
        self.decoder3 = IntermediateDecoder(channels[2], channels[1], skip_channels)
        self.decoder2 = IntermediateDecoder(channels[1], channels[0], skip_channels)
        self.decoder1 = MultiFlowDecoder(channels[0], skip_channels, num_flows)
        self.update4 = self._get_updateblock(44)
        self.update3 = self._get_updateblock(32, 2)
        self.update2 = self._get_updateblock(20, 4)
        self.comb_block = nn.Sequential(
            nn.Conv2d(3 * num_flows, 6 * num_flows, 3, 1, 1),
            nn.PReLU(6 * num_flows),
            nn.Conv2d(6 * num_flows, 3, 3, 1, 1),
        )

    def _get_updateblock(self, cdim: int, scale_factor: int | None = None) -> SmallUpdateBlock:
        return SmallUpdateBlock(cdim=cdim, hidden_dim=76, flow_dim=20, corr_dim=64, fc_dim=68,
                                scale_factor=scale_factor, corr_levels=self.corr_levels, radius=self.radius)

    def _corr_scale_lookup(self, corr_fn: BidirCorrBlock, coord: torch.Tensor, flow0: torch.Tensor,
                           flow1: torch.Tensor, embt: torch.Tensor, downsample: int = 1
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        # flows t->0 and t->1 rescaled to 0->1 and 1->0 under a linear-motion assumption
        t1_scale = 1. / embt
        t0_scale = 1. / (1. - embt)
        if downsample != 1:
            inv = 1 / downsample
            flow0 = inv * resize(flow0, scale_factor=inv)
            flow1 = inv * resize(flow1, scale_factor=inv)
        corr0, corr1 = corr_fn(coord + flow1 * t1_scale, coord + flow0 * t0_scale)
        corr = torch.cat([corr0, corr1], dim=1)
        flow = torch.cat([flow0, flow1], dim=1)
        return corr, flow

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, embt: torch.Tensor, scale_factor: float = 1.0,
                eval: bool = True, **kwargs: Any) -> dict[str, torch.Tensor]:
        if not eval:
            raise NotImplementedError("inference only: the training outputs are not transcribed")
        mean_ = torch.cat([img0, img1], 2).mean(1, keepdim=True).mean(2, keepdim=True).mean(3, keepdim=True)
        img0 = img0 - mean_
        img1 = img1 - mean_
        img0_ = resize(img0, scale_factor) if scale_factor != 1.0 else img0
        img1_ = resize(img1, scale_factor) if scale_factor != 1.0 else img1
        b, _, h, w = img0_.shape
        coord = coords_grid(b, h // 8, w // 8, img0.device)

        fmap0, fmap1 = self.feat_encoder([img0_, img1_])  # [b, 84, H/8, W/8]
        corr_fn = BidirCorrBlock(fmap0, fmap1, radius=self.radius, num_levels=self.corr_levels)
        # f*_1 .. f*_4: [b, c_i, H / 2^i, W / 2^i]
        f0_1, f0_2, f0_3, f0_4 = self.encoder(img0_)
        f1_1, f1_2, f1_3, f1_4 = self.encoder(img1_)

        # 4th decoder, then a residual update from the correlation lookup
        up_flow0_4, up_flow1_4, ft_3_ = self.decoder4(f0_4, f1_4, embt)
        corr_4, flow_4 = self._corr_scale_lookup(corr_fn, coord, up_flow0_4, up_flow1_4, embt, downsample=1)
        delta_ft_3_, delta_flow_4 = self.update4(ft_3_, flow_4, corr_4)
        delta_flow0_4, delta_flow1_4 = torch.chunk(delta_flow_4, 2, 1)
        up_flow0_4 = up_flow0_4 + delta_flow0_4
        up_flow1_4 = up_flow1_4 + delta_flow1_4
        ft_3_ = ft_3_ + delta_ft_3_

        # 3rd decoder
        up_flow0_3, up_flow1_3, ft_2_ = self.decoder3(ft_3_, f0_3, f1_3, up_flow0_4, up_flow1_4)
        corr_3, flow_3 = self._corr_scale_lookup(corr_fn, coord, up_flow0_3, up_flow1_3, embt, downsample=2)
        delta_ft_2_, delta_flow_3 = self.update3(ft_2_, flow_3, corr_3)
        delta_flow0_3, delta_flow1_3 = torch.chunk(delta_flow_3, 2, 1)
        up_flow0_3 = up_flow0_3 + delta_flow0_3
        up_flow1_3 = up_flow1_3 + delta_flow1_3
        ft_2_ = ft_2_ + delta_ft_2_

        # 2nd decoder
        up_flow0_2, up_flow1_2, ft_1_ = self.decoder2(ft_2_, f0_2, f1_2, up_flow0_3, up_flow1_3)
        corr_2, flow_2 = self._corr_scale_lookup(corr_fn, coord, up_flow0_2, up_flow1_2, embt, downsample=4)
        delta_ft_1_, delta_flow_2 = self.update2(ft_1_, flow_2, corr_2)
        delta_flow0_2, delta_flow1_2 = torch.chunk(delta_flow_2, 2, 1)
        up_flow0_2 = up_flow0_2 + delta_flow0_2
        up_flow1_2 = up_flow1_2 + delta_flow1_2
        ft_1_ = ft_1_ + delta_ft_1_

        # 1st decoder: num_flows flow pairs, blend masks and residuals at full resolution
        up_flow0_1, up_flow1_1, mask, img_res = self.decoder1(ft_1_, f0_1, f1_1, up_flow0_2, up_flow1_2)
        if scale_factor != 1.0:
            up_flow0_1 = resize(up_flow0_1, scale_factor=(1.0 / scale_factor)) * (1.0 / scale_factor)
            up_flow1_1 = resize(up_flow1_1, scale_factor=(1.0 / scale_factor)) * (1.0 / scale_factor)
            mask = resize(mask, scale_factor=(1.0 / scale_factor))
            img_res = resize(img_res, scale_factor=(1.0 / scale_factor))

        imgt_pred = multi_flow_combine(self.comb_block, img0, img1, up_flow0_1, up_flow1_1, mask, img_res, mean_)
        return {"imgt_pred": torch.clamp(imgt_pred, 0, 1)}


# --------------------------------------------------------------------------------- loading, scoring


def build_amt(path: str | None, device: Any = "cpu") -> AMTS:
    """AMT-S in eval mode on ``device``: the checkpoint at ``path`` (VBench's ``amt-s.pth``), or seeded random weights.

    The checkpoint is read as VBench reads it: ``torch.load(...)['state_dict']``, loaded strictly.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = AMTS(**AMT_S_PARAMS)
    if path is None:
        log.warning("AMT-S: pretrained weights (%s) not available; using RANDOM weights (seed %d).",
                    CHECKPOINT_FILE, RANDOM_SEED)
    else:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
            raise ValueError(f"{path}: not an AMT checkpoint (VBench reads ckpt['state_dict'])")
        model.load_state_dict(ckpt["state_dict"])  # strict, as VBench's load_model
    model = model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """``[k, 3, H, W]`` frames as uint8: uint8 as it is, floats on [0, 1] as ``round(x * 255)``."""
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise TypeError(f"frames must be uint8 (0..255) or floats on [0, 1], got {x.dtype}")
    return (x.to(torch.float64).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def interpolate_midframes(model: nn.Module, frames: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
    """AMT's frame halfway between each consecutive pair of ``frames`` (uint8 ``[n, 3, H, W]``, RGB).

    Returns ``[n - 1, 3, H, W]`` float32 on [0, 1] on the CPU, before VBench's uint8 conversion:
    ``img2tensor`` (``/ 255``), ``InputPadder`` (divisor 16), the model with ``embt = 0.5`` and
    ``scale_factor = 1``, unpad.
    """
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected uint8 frames [n, 3, H, W], got {frames.dtype} {tuple(frames.shape)}")
    padder = InputPadder(frames.shape, PAD_DIVISOR)
    hp, wp = (frames.shape[2] + sum(padder._pad[2:]), frames.shape[3] + sum(padder._pad[:2]))
    if min(hp, wp) < MIN_PADDED_SIDE:
        # VBench would go on and cast the NaN predictions to uint8 (a meaningless score)
        raise ValueError(f"AMT-S needs frames of at least {MIN_PADDED_SIDE - PAD_DIVISOR + 1} px a side "
                         f"({MIN_PADDED_SIDE} once padded to {PAD_DIVISOR}); got {frames.shape[2]}x{frames.shape[3]}")
    dev = _model_device(model)
    inputs = frames.to(dev).to(torch.float32) / 255.0  # img2tensor
    inputs = padder.pad(inputs)
    n = inputs.shape[0] - 1
    out = []
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            e = min(n, s + batch_size)
            embt = torch.tensor(EMBT).float().view(1, 1, 1, 1).to(dev).repeat(e - s, 1, 1, 1)
            pred = model(inputs[s:e], inputs[s + 1:e + 1], embt, scale_factor=1.0, eval=True)["imgt_pred"]
            out.append(padder.unpad(pred.cpu()))
    return torch.cat(out)


def tensor2img(x: torch.Tensor) -> np.ndarray:
    """VBench's ``tensor2img`` on a batch: ``* 255``, clip to 0..255, truncate to uint8 (no rounding)."""
    return (x * 255.0).detach().cpu().numpy().clip(0, 255).astype(np.uint8)


def motion_smoothness_frames(model: nn.Module, x: torch.Tensor, batch_size: int = 1) -> np.ndarray:
    """VBench's motion smoothness of one video ``[k, 3, H, W]`` (RGB; uint8, or floats on [0, 1]); ``k >= 3``.

    Returns one float64 value per re-created frame, ``(255 - d_j) / 255`` with
    ``d_j = mean |f_(2j+1) - AMT(f_(2j), f_(2j+2))|`` on 0..255 (the prediction truncated to uint8),
    ``j = 0 .. (k - 1) // 2 - 1``. VBench's video score is ``(255 - mean_j d_j) / 255``, which is the
    mean of these values; VBench's dimension score is the mean of the video scores.
    """
    frames = to_uint8(x).cpu()
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected frames [k, 3, H, W], got {tuple(frames.shape)}")
    if frames.shape[0] < 3:
        # VBench asserts more than one kept frame: at least one to re-create
        raise ValueError(f"motion smoothness needs at least 3 frames, got {frames.shape[0]}")
    kept = frames[0::2]  # extract_frame(frames, start_from=0)
    preds = tensor2img(interpolate_midframes(model, kept, batch_size))
    # extract_frame(frames, start_from=1); for even k the last frame has no prediction and is unused
    ref = frames[1::2].numpy()[: preds.shape[0]]
    # |a - b| of uint8 (cv2.absdiff); the integer sums are exact, so layout and order do not matter
    diff = np.abs(ref.astype(np.int16) - preds.astype(np.int16))
    d = diff.reshape(diff.shape[0], -1).mean(axis=1, dtype=np.float64)
    return (255.0 - d) / 255.0
