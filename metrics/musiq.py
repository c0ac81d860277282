"""MUSIQ (Ke et al., "MUSIQ: Multi-scale Image Quality Transformer", ICCV 2021) for VBench's
``imaging_quality`` dimension, transcribed from pyiqa (the ``pyiqa`` package cannot be installed
beside this project: it requires transformers>=5, bitsandbytes and more).

Sources (module, class, attribute and parameter names kept identical, so pyiqa's checkpoints
load with ``strict=True``):

* pyiqa 0.1.16 wheel (``pyiqa-0.1.16-py3-none-any.whl``, git ``18dd7a196``, sha256
  ``42bbcf1c274a8b53...``): ``pyiqa/archs/musiq_arch.py`` (the network), ``pyiqa/archs/arch_util.py``
  (``dist_to_mos``, ``clean_state_dict``, ``load_pretrained_network``, ``get_url_from_name``),
  ``pyiqa/matlab_utils/padding.py`` (``exact_padding_2d``, ``ExactPadding2d``),
  ``pyiqa/data/multiscale_trans_util.py`` (``get_multiscale_patches``). The same computations
  were read in chaofengc/IQA-PyTorch at 7f6ef4dac3d02e499121b36721d48c60f1314eda (musiq_arch.py),
  3f0b9a49c189e5e33a9faaf6b095931211e21f36 (multiscale_trans_util.py) and
  b7540e6d3b3ff40208bc5d6bd6a540c07f3f30c8 (arch_util.py, then holding the padding code).
* VBench 0.1.5 wheel (``vbench-0.1.5-py3-none-any.whl``): ``vbench/imaging_quality.py``
  (``transform``, ``technical_quality``, ``compute_imaging_quality``) and ``vbench/utils.py``
  (``load_video``; the SPAQ checkpoint path and URL).

VBench's imaging quality, as :func:`imaging_quality_frames` computes it per frame:
``load_video`` gives ``torch.Tensor(frames)``, i.e. float32 values on 0..255 (the comment there
says uint8; ``torch.Tensor`` makes float32). ``transform(images, 'longer')`` (the default mode):
when ``max(h, w) > 512``, ``scale = 512. / max(h, w)`` and ``transforms.Resize(size=(int(scale *
h), int(scale * w)), antialias=False)`` (bilinear; ``int`` truncates, so e.g. 561 wide becomes
511, not 512); then ``/ 255.``. The network is ``MUSIQ(pretrained_model_path=...)`` (one output
class: ``head`` is ``Linear(384, 1)``, and ``dist_to_mos`` of one class is the value itself), run
on one frame at a time; the video's value is the mean of the frame scores and the set's value
the mean over videos divided by 100. The map is linear, so each frame's value here is its
score / 100 and the video's value their mean.

Deviations, stated plainly:

* Inference only: no dropout / DropPath modules (VBench's configuration has all rates 0 and
  they hold no parameters; VBench sets ``model.training = False`` on the top module only, so its
  submodules run "in training mode", which with rate 0 changes nothing). :class:`MUSIQ`'s
  ``forward`` always takes images on [0, 1] (pyiqa takes ready patches when ``training``) and
  returns the MOS only (no ``return_dist``). Its constructor has no ``pretrained`` /
  ``pretrained_model_path`` / dropout / ``use_sinusoid_pos_emb`` (unused in pyiqa) arguments:
  :func:`build_musiq` loads the weights.
* Frames are scored as a batch (VBench: one at a time); all frames of a clip have one size, so
  the patch masks are the same and only float rounding differs.
* Float inputs (our lossless frames on [0, 1]) are multiplied by 255 and go through the same
  resize, unrounded, where VBench would read 8-bit frames from an MP4.
* The stored VBench GitHub source (Vchitect/VBench fc4620b4d620114b77842c336f7a193c37e8e12e)
  calls ``transforms.Resize`` without ``antialias=False``; the 0.1.5 release passes it, and we
  follow the release. Only frames longer than 512 pixels are affected.
* Checkpoints load with ``torch.load(..., weights_only=True)`` (pyiqa: ``weights_only=False``);
  the key handling is pyiqa's (optional ``weight_keys``, None for MUSIQ, then a ``module.``
  prefix stripped), always ``strict=True``.
* pyiqa's ``exact_padding_2d`` does not clamp the padding at 0 as TensorFlow's SAME does: when a
  kernel is smaller than its stride the "padding" turns into a crop. No MUSIQ layer has such a
  kernel (7/2, 3/2, 1/1, 3/1), so the network equals TF SAME padding throughout.
"""

from __future__ import annotations

# torch is imported at module level (the classes subclass nn.Module): import this module lazily,
# ``import metrics`` must stay free of torch.
import logging
import math
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MUSIQ", "MUSIQ_SPAQ_FILE", "VBENCH_MAX_SIDE",
           "VBENCH_SCORE_SCALE", "build_musiq", "clean_state_dict", "dist_to_mos", "exact_padding_2d",
           "ExactPadding2d", "get_multiscale_patches", "imaging_quality_frames", "vbench_pixels"]

log = logging.getLogger(__name__)
RANDOM_SEED = 0
#: pyiqa's SPAQ checkpoint, the one VBench loads (vbench/utils.py, ``musiq_spaq_path``)
MUSIQ_SPAQ_FILE = "musiq_spaq_ckpt-358bb6af.pth"
#: VBench's 'longer' preprocessing: frames whose longer side exceeds this are downsized
VBENCH_MAX_SIDE = 512
#: VBench divides the mean MUSIQ score (~0..100) by this
VBENCH_SCORE_SCALE = 100.0


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, Sequence) else (int(v), int(v))


# ------------------------------------------------------------------------------ padding


def exact_padding_2d(x: torch.Tensor, kernel: int | Sequence[int], stride: int | Sequence[int] = 1,
                     dilation: int | Sequence[int] = 1, mode: str = "same") -> torch.Tensor:
    """pyiqa's TF-"SAME" padding of ``[b, c, h, w]``: zeros, the odd pixel after (bottom / right).

    ``symmetric`` padding (pyiqa's ``symm_pad``) is not transcribed: MUSIQ never uses it.
    """
    assert x.dim() == 4, f"Only support 4D tensor input, but got {tuple(x.shape)}"
    kernel, stride, dilation = _pair(kernel), _pair(stride), _pair(dilation)
    h, w = x.shape[-2:]
    h2, w2 = math.ceil(h / stride[0]), math.ceil(w / stride[1])
    pad_row = (h2 - 1) * stride[0] + (kernel[0] - 1) * dilation[0] + 1 - h
    pad_col = (w2 - 1) * stride[1] + (kernel[1] - 1) * dilation[1] + 1 - w
    pad = (pad_col // 2, pad_col - pad_col // 2, pad_row // 2, pad_row - pad_row // 2)
    if mode == "symmetric":
        raise NotImplementedError("symmetric padding is not part of MUSIQ")
    return F.pad(x, pad, mode="constant" if mode == "same" else mode)


class ExactPadding2d(nn.Module):
    def __init__(self, kernel: int | Sequence[int], stride: int | Sequence[int] = 1,
                 dilation: int | Sequence[int] = 1, mode: str | None = "same") -> None:
        super().__init__()
        self.kernel, self.stride, self.dilation, self.mode = _pair(kernel), _pair(stride), _pair(dilation), mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is None:
            return x
        return exact_padding_2d(x, self.kernel, self.stride, self.dilation, self.mode)


# --------------------------------------------------------------------- multi-scale patches


def extract_image_patches(x: torch.Tensor, kernel: int, stride: int = 1, dilation: int = 1) -> torch.Tensor:
    """TF ``extract_image_patches`` with SAME padding: ``[b, c * kernel**2, n_patches]`` (unfold order)."""
    h, w = x.shape[-2:]
    h2, w2 = math.ceil(h / stride), math.ceil(w / stride)
    pad_row = (h2 - 1) * stride + (kernel - 1) * dilation + 1 - h
    pad_col = (w2 - 1) * stride + (kernel - 1) * dilation + 1 - w
    x = F.pad(x, (pad_col // 2, pad_col - pad_col // 2, pad_row // 2, pad_row - pad_row // 2))
    return F.unfold(x, kernel, dilation, stride=stride)


def resize_preserve_aspect_ratio(image: torch.Tensor, h: int, w: int,
                                 longer_side_length: int) -> tuple[torch.Tensor, int, int]:
    """Longer side to ``longer_side_length`` (Python ``round`` of each side), bicubic, no antialias."""
    ratio = longer_side_length / max(h, w)
    rh, rw = round(h * ratio), round(w * ratio)
    return F.interpolate(image, (rh, rw), mode="bicubic", align_corners=False), rh, rw


def _pad_or_cut_to_max_seq_len(x: torch.Tensor, max_seq_len: int) -> torch.Tensor:
    # zero columns: their mask (last row) is 0, so attention ignores them
    n_crops, c, _ = x.shape
    x = torch.cat([x, torch.zeros((n_crops, c, max_seq_len)).to(x)], dim=-1)
    return x[:, :, :max_seq_len]


def get_hashed_spatial_pos_emb_index(grid_size: int, count_h: int, count_w: int) -> torch.Tensor:
    """``[1, count_h * count_w]`` hashed positions: row and column each mapped to ``grid_size`` cells
    by nearest-neighbour resampling of ``arange(grid_size)``, then ``row * grid_size + col``."""
    grid = torch.arange(grid_size).float()
    hash_w = F.interpolate(grid.reshape(1, 1, grid_size), (count_w), mode="nearest").repeat(1, count_h, 1)
    hash_h = F.interpolate(grid.reshape(1, 1, grid_size), (count_h), mode="nearest")
    hash_h = hash_h.transpose(1, 2).repeat(1, 1, count_w)
    return (hash_h * grid_size + hash_w).reshape(1, -1)


def _extract_patches_and_positions_from_image(image: torch.Tensor, patch_size: int, patch_stride: int,
                                              hse_grid_size: int, scale_id: int,
                                              max_seq_len: int) -> torch.Tensor:
    """``[n_crops, c * patch_size**2 + 3, n]``: patches, then hashed position, scale id and mask rows."""
    n_crops, c, h, w = image.shape
    p = extract_image_patches(image, patch_size, patch_stride)
    assert p.shape[1] == c * patch_size**2
    count_h, count_w = int(math.ceil(h / patch_stride)), int(math.ceil(w / patch_stride))
    spatial_p = get_hashed_spatial_pos_emb_index(hse_grid_size, count_h, count_w)
    spatial_p = spatial_p.unsqueeze(1).repeat(n_crops, 1, 1)
    scale_p = torch.ones_like(spatial_p) * scale_id
    mask_p = torch.ones_like(spatial_p)
    out = torch.cat([p, spatial_p.to(p), scale_p.to(p), mask_p.to(p)], dim=1)
    if max_seq_len >= 0:  # < 0: all patches (the original resolution in MUSIQ)
        out = _pad_or_cut_to_max_seq_len(out, max_seq_len)
    return out


def get_multiscale_patches(image: torch.Tensor, patch_size: int = 32, patch_stride: int = 32,
                           hse_grid_size: int = 10, longer_side_lengths: Sequence[int] = (224, 384),
                           max_seq_len_from_original_res: int | None = None) -> torch.Tensor:
    """pyiqa's multi-scale representation of ``[n, 3, h, w]``: ``[n, tokens, 3 * patch_size**2 + 3]``.

    Per scale (longer side resized to each of ``sorted(longer_side_lengths)``, then the original
    resolution when ``max_seq_len_from_original_res`` is not None): the SAME-padded patches, padded
    with zero tokens to ``ceil(longer / stride) ** 2`` (the original: to that many, or all if < 0).
    The last three columns hold the hashed spatial position, the scale index and the mask.
    """
    longer_side_lengths = sorted(longer_side_lengths)
    if image.dim() == 3:
        image = image.unsqueeze(0)
    h, w = image.shape[-2:]
    outputs = []
    for scale_id, longer in enumerate(longer_side_lengths):
        resized, _, _ = resize_preserve_aspect_ratio(image, h, w, longer)
        max_seq_len = int(np.ceil(longer / patch_stride) ** 2)
        outputs.append(_extract_patches_and_positions_from_image(resized, patch_size, patch_stride,
                                                                 hse_grid_size, scale_id, max_seq_len))
    if max_seq_len_from_original_res is not None:
        outputs.append(_extract_patches_and_positions_from_image(image, patch_size, patch_stride, hse_grid_size,
                                                                 len(longer_side_lengths),
                                                                 max_seq_len_from_original_res))
    return torch.cat(outputs, dim=-1).transpose(1, 2)


def dist_to_mos(dist_score: torch.Tensor) -> torch.Tensor:
    """``(*, C)`` class scores -> ``(*, 1)`` MOS ``sum_i (i + 1) * p_i`` (one class: the value itself)."""
    num_classes = dist_score.shape[-1]
    return (dist_score * torch.arange(1, num_classes + 1).to(dist_score)).sum(dim=-1, keepdim=True)


# -------------------------------------------------------------------------------- network


class StdConv(nn.Conv2d):
    """Weight-standardised convolution with TF SAME padding (BiT's ResNet root)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = exact_padding_2d(x, self.kernel_size, self.stride, mode="same")
        weight = self.weight
        weight = weight - weight.mean((1, 2, 3), keepdim=True)
        weight = weight / (weight.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, weight, self.bias, self.stride)


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, outplanes: int, stride: int = 1) -> None:
        super().__init__()
        width = inplanes
        self.conv1 = StdConv(inplanes, width, 1, 1, bias=False)
        self.gn1 = nn.GroupNorm(32, width, eps=1e-4)
        self.conv2 = StdConv(width, width, 3, 1, bias=False)
        self.gn2 = nn.GroupNorm(32, width, eps=1e-4)
        self.conv3 = StdConv(width, outplanes, 1, 1, bias=False)
        self.gn3 = nn.GroupNorm(32, outplanes, eps=1e-4)
        self.relu = nn.ReLU(True)
        self.needs_projection = inplanes != outplanes or stride != 1
        if self.needs_projection:
            self.conv_proj = StdConv(inplanes, outplanes, 1, stride, bias=False)
            self.gn_proj = nn.GroupNorm(32, outplanes, eps=1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        if self.needs_projection:
            identity = self.gn_proj(self.conv_proj(identity))
        x = self.relu(self.gn1(self.conv1(x)))
        x = self.relu(self.gn2(self.conv2(x)))
        x = self.gn3(self.conv3(x))
        return self.relu(x + identity)


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features or in_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features or in_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MultiHeadAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int = 6, bias: bool = False) -> None:
        super().__init__()
        assert dim % num_heads == 0, "dim should be divisible by num_heads"
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.query = nn.Linear(dim, dim, bias=bias)
        self.key = nn.Linear(dim, dim, bias=bias)
        self.value = nn.Linear(dim, dim, bias=bias)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        q = self.query(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        k = self.key(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        v = self.value(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        if mask is not None:
            mask2d = mask.reshape(B, 1, N, 1) * mask.reshape(B, 1, 1, N)
            # pyiqa fills -1e3 (not -inf): kept, the softmax weights of padding tokens are ~e-1000 anyway
            attn = attn.masked_fill(mask2d == 0, -1e3)
        attn = attn.softmax(dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(B, N, C))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, mlp_dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attention = MultiHeadAttention(dim, num_heads, bias=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=mlp_dim)

    def forward(self, x: torch.Tensor, inputs_masks: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), inputs_masks)
        return x + self.mlp(self.norm2(x))


class AddHashSpatialPositionEmbs(nn.Module):
    """Learnable hash-based spatial embeddings."""

    def __init__(self, spatial_pos_grid_size: int, dim: int) -> None:
        super().__init__()
        # randn then normal_: pyiqa's order of random draws, so seeded inits agree with pyiqa's
        self.position_emb = nn.Parameter(torch.randn(1, spatial_pos_grid_size * spatial_pos_grid_size, dim))
        nn.init.normal_(self.position_emb, std=0.02)

    def forward(self, inputs: torch.Tensor, inputs_positions: torch.Tensor) -> torch.Tensor:
        return inputs + self.position_emb.squeeze(0)[inputs_positions.long()]


class AddScaleEmbs(nn.Module):
    """Learnable scale embeddings."""

    def __init__(self, num_scales: int, dim: int) -> None:
        super().__init__()
        self.scale_emb = nn.Parameter(torch.randn(num_scales, dim))
        nn.init.normal_(self.scale_emb, std=0.02)

    def forward(self, inputs: torch.Tensor, inputs_scale_positions: torch.Tensor) -> torch.Tensor:
        return inputs + self.scale_emb[inputs_scale_positions.long()]


class TransformerEncoder(nn.Module):
    def __init__(self, input_dim: int, mlp_dim: int = 1152, num_heads: int = 6, num_layers: int = 14,
                 num_scales: int = 3, spatial_pos_grid_size: int = 10, use_scale_emb: bool = True) -> None:
        super().__init__()
        self.use_scale_emb = use_scale_emb
        self.posembed_input = AddHashSpatialPositionEmbs(spatial_pos_grid_size, input_dim)
        self.scaleembed_input = AddScaleEmbs(num_scales, input_dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, input_dim))
        self.encoder_norm = nn.LayerNorm(input_dim, eps=1e-6)
        self.transformer = nn.ModuleDict()
        for i in range(num_layers):
            self.transformer[f"encoderblock_{i}"] = TransformerBlock(input_dim, mlp_dim, num_heads)

    def forward(self, x: torch.Tensor, inputs_spatial_positions: torch.Tensor,
                inputs_scale_positions: torch.Tensor, inputs_masks: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.posembed_input(x, inputs_spatial_positions)
        if self.use_scale_emb:
            x = self.scaleembed_input(x, inputs_scale_positions)
        x = torch.cat([self.cls.repeat(n, 1, 1), x], dim=1)
        inputs_mask = torch.cat([torch.ones((n, 1)).to(inputs_masks), inputs_masks], dim=1)
        for m in self.transformer.values():
            x = m(x, inputs_mask)
        return self.encoder_norm(x)


class MUSIQ(nn.Module):
    """pyiqa's MUSIQ, inference only: ``forward`` takes ``[b, 3, h, w]`` on [0, 1] and returns ``[b, 1]``.

    Defaults are pyiqa's (and VBench's): 32-pixel patches, scales 224 and 384 plus the original
    resolution (all its patches), 14 layers of width 384, one output class (SPAQ).
    """

    def __init__(self, patch_size: int = 32, num_class: int = 1, hidden_size: int = 384, mlp_dim: int = 1152,
                 num_heads: int = 6, num_layers: int = 14, num_scales: int = 3, spatial_pos_grid_size: int = 10,
                 use_scale_emb: bool = True, longer_side_lengths: Sequence[int] = (224, 384),
                 max_seq_len_from_original_res: int | None = -1) -> None:
        super().__init__()
        resnet_token_dim = 64
        self.patch_size = patch_size
        self.data_preprocess_opts: dict[str, Any] = {
            "patch_size": patch_size, "patch_stride": patch_size, "hse_grid_size": spatial_pos_grid_size,
            "longer_side_lengths": list(longer_side_lengths),
            "max_seq_len_from_original_res": max_seq_len_from_original_res,
        }
        self.conv_root = StdConv(3, resnet_token_dim, 7, 2, bias=False)
        self.gn_root = nn.GroupNorm(32, resnet_token_dim, eps=1e-6)
        self.root_pool = nn.Sequential(nn.ReLU(True), ExactPadding2d(3, 2, mode="same"), nn.MaxPool2d(3, 2))
        token_patch_size = patch_size // 4
        self.block1 = Bottleneck(resnet_token_dim, resnet_token_dim * 4)
        self.embedding = nn.Linear(resnet_token_dim * 4 * token_patch_size**2, hidden_size)
        self.transformer_encoder = TransformerEncoder(hidden_size, mlp_dim, num_heads, num_layers, num_scales,
                                                      spatial_pos_grid_size, use_scale_emb)
        if num_class > 1:
            self.head: nn.Module = nn.Sequential(nn.Linear(hidden_size, num_class), nn.Softmax(dim=-1))
        else:
            self.head = nn.Linear(hidden_size, num_class)

    def forward_patches(self, x: torch.Tensor) -> torch.Tensor:
        """MOS ``[b, 1]`` of ``get_multiscale_patches`` output ``[b, tokens, 3 * patch_size**2 + 3]``."""
        b, seq_len, _ = x.shape
        inputs_spatial_positions = x[:, :, -3]
        inputs_scale_positions = x[:, :, -2]
        inputs_masks = x[:, :, -1].bool()
        x = x[:, :, :-3].reshape(-1, 3, self.patch_size, self.patch_size)
        x = self.block1(self.root_pool(self.gn_root(self.conv_root(x))))
        # channels last before flattening: the order of the TF checkpoint's embedding weights
        x = x.permute(0, 2, 3, 1).reshape(b, seq_len, -1)
        x = self.transformer_encoder(self.embedding(x), inputs_spatial_positions, inputs_scale_positions,
                                     inputs_masks)
        return dist_to_mos(self.head(x[:, 0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [0, 1] -> [-1, 1] as the official code, then the multi-scale tokens
        return self.forward_patches(get_multiscale_patches((x - 0.5) * 2, **self.data_preprocess_opts))


# ---------------------------------------------------------------------------- loading


def clean_state_dict(state_dict: Mapping[str, Any]) -> OrderedDict[str, Any]:
    """pyiqa's key handling: drop a ``module.`` prefix (DataParallel checkpoints)."""
    return OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in state_dict.items())


def build_musiq(path: str | None, device: Any = "cpu", weight_keys: str | None = None) -> MUSIQ:
    """VBench's ``MUSIQ(pretrained_model_path=path)`` in eval mode without gradients.

    ``path`` None: RANDOM weights (seed 0, the global RNG untouched), with a warning. Otherwise
    the checkpoint is read as pyiqa's ``load_pretrained_network`` reads it (``state_dict[weight_keys]``
    when given, ``module.`` prefixes dropped) and must match exactly (``strict=True``).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = MUSIQ()
    if path is None:
        log.warning("MUSIQ (SPAQ): pretrained weights not available; using RANDOM weights (seed %d).", RANDOM_SEED)
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        if weight_keys is not None:
            state_dict = state_dict[weight_keys]
        model.load_state_dict(clean_state_dict(state_dict), strict=True)
    model = model.eval().to(device)
    model.requires_grad_(False)
    return model


# ------------------------------------------------------------------------- VBench's rule


def vbench_pixels(x: torch.Tensor) -> torch.Tensor:
    """VBench's ``transform(images, 'longer')`` of ``[k, 3, H, W]`` (uint8, or floats on [0, 1]).

    float32 on 0..255; if the longer side exceeds 512, bilinear resize (no antialias) to
    ``(int(s * H), int(s * W))`` with ``s = 512. / max(H, W)``; then ``/ 255.``.
    """
    v = x.to(torch.float32) if x.dtype == torch.uint8 else x.to(torch.float32) * 255.0
    h, w = v.shape[-2:]
    if max(h, w) > VBENCH_MAX_SIDE:
        scale = float(VBENCH_MAX_SIDE) / max(h, w)
        # torchvision's Resize(size, antialias=False) on a float tensor is exactly this interpolate
        v = F.interpolate(v, size=(int(scale * h), int(scale * w)), mode="bilinear", align_corners=False,
                          antialias=False)
    return v / 255.0


def imaging_quality_frames(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Per-frame imaging-quality values (MUSIQ score / 100) of ``[k, 3, H, W]`` frames; the video's is their mean."""
    dev = next(model.parameters()).device
    with torch.inference_mode():
        score = model(vbench_pixels(x.to(dev)))
    return (score[:, 0].double() / VBENCH_SCORE_SCALE).cpu().numpy()
