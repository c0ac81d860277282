"""Structural similarity (SSIM), batched in torch, matching scikit-image.

Definition (Wang et al. 2004 as implemented by
``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1.0, channel_axis=-1)``):

* Gaussian window of 11 taps (radius ``int(3.5 * 1.5 + 0.5) = 5``), sigma 1.5,
  K1 = 0.01, K2 = 0.03, population (not sample) covariance;
* ``data_range`` is fixed at 1.0 for pixels on [0, 1]: it is never estimated
  from the data, so a dark image scores the same alone or next to a bright one
  (a uint8 pair is used as it is, with data range 255: the same SSIM);
* the SSIM map is computed per RGB channel and each channel's map is averaged
  over the *valid* region only (skimage filters with reflect padding and then
  crops ``(11 - 1) // 2 = 5`` pixels on each side, which is exactly the region
  a padding-free filter produces); the three channel means are averaged. Per
  channel RGB (not luma) is what skimage does with ``channel_axis``.

Implementation: one depthwise ``conv2d`` pass per axis (separable Gaussian,
``groups`` = number of maps, channels-last so oneDNN/cuDNN use their fast
depthwise kernels). The local statistics are taken of ``u = x + y`` and
``d = x - y`` (each minus its per-frame, per-channel mean) instead of ``x``
and ``y``: SSIM only needs ``var_x + var_y = (var_u + var_d) / 2`` and
``2 cov_xy = (var_u - var_d) / 2``, a rounding error in ``var_u`` then mostly
cancels between numerator and denominator, and centring keeps the squares
small. For uint8 pairs ``u`` and ``d`` are exact integers; for floats they
are formed in float64. That makes float32 filtering and formula (the default)
agree with scikit-image's float64 to ~1e-8 on the test pairs and ~1e-7 on
480x832 frames, while float64 on CPU is several times slower;
``filter_dtype=torch.float64`` gives the tight reference (~1e-14).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["ssim", "ssim_frames", "WIN_SIZE", "SIGMA", "K1", "K2", "DATA_RANGE"]

SIGMA = 1.5
TRUNCATE = 3.5  # skimage's choice for gaussian_weights=True
RADIUS = int(TRUNCATE * SIGMA + 0.5)
WIN_SIZE = 2 * RADIUS + 1  # 11
K1, K2 = 0.01, 0.03
DATA_RANGE = 1.0
# Pixels (frames x rows x cols) per tile. The SSIM pipeline is ~25 passes over
# a dozen maps, so on CPU it is memory-bound: tiles that fit in cache measured
# ~2x faster than whole frames. GPUs want large launches instead.
_TILE_PIXELS_CPU = 1 << 16
_TILE_PIXELS_GPU = 1 << 23


#: window name -> (taps, sample covariance?); "gaussian11" is the default (see the module docstring)
WINDOWS = {"gaussian11": (WIN_SIZE, False), "uniform7": (7, True)}


def _window_taps(window: str, dtype: "torch.dtype", device: "torch.device | str") -> "torch.Tensor":
    """The 1-D filter: scipy.ndimage's normalised Gaussian (what skimage uses), or a uniform 7-tap box."""
    import torch

    if window not in WINDOWS:
        raise InputError(f"SSIM window {window!r} is not one of {', '.join(WINDOWS)}")
    if window == "uniform7":
        return torch.full((7,), 1.0 / 7.0, dtype=torch.float64).to(device=device, dtype=dtype)
    x = torch.arange(-RADIUS, RADIUS + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / SIGMA) ** 2)
    return (g / g.sum()).to(device=device, dtype=dtype)


def _ssim_sums(x: "torch.Tensor", y: "torch.Tensor", kernels: tuple, data_range: float,
               cov_norm: float = 1.0) -> "torch.Tensor":
    """Sum of the valid SSIM map per frame and channel, ``[n, c]`` float64, of one tile."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    k_v, k_h = kernels
    fdt = k_v.dtype
    # Allocated NHWC so the [n, 4c, H, W] view is channels-last, the fast depthwise layout.
    maps = torch.empty(n, h, w, 4 * c, dtype=fdt, device=x.device).permute(0, 3, 1, 2)
    u, d = maps[:, 0:c], maps[:, c : 2 * c]
    if x.dtype == torch.uint8:  # exact integer sums and differences, in pixel units
        xi, yi = x.to(torch.int16), y.to(torch.int16)
        s, dd = xi + yi, xi - yi
    else:
        x64 = x.to(torch.float64)
        s, dd = x64 + y, x64 - y
    # Centre u = x + y and d = x - y on their per-(frame, channel) tile means: variances do
    # not change, but the float32 squares stay small, which keeps rounding at ~1e-8. Any
    # centre works as long as the same one is added back, so it is rounded to fdt first.
    cu = s.mean(dim=(2, 3), keepdim=True, dtype=torch.float64).to(fdt)
    cd = dd.mean(dim=(2, 3), keepdim=True, dtype=torch.float64).to(fdt)
    torch.sub(s, cu, out=u)
    torch.sub(dd, cd, out=d)
    del s, dd
    torch.mul(u, u, out=maps[:, 2 * c : 3 * c])
    torch.mul(d, d, out=maps[:, 3 * c :])
    f = F.conv2d(F.conv2d(maps, k_v, groups=4 * c), k_h, groups=4 * c)
    del maps, u, d
    # Channel-first from here: each statistic is then one contiguous block for the
    # elementwise formula (strided channel slices of NHWC measured ~1.5x slower).
    f = f.contiguous()
    mu_u, mu_d, var_u, var_d = f[:, 0:c], f[:, c : 2 * c], f[:, 2 * c : 3 * c], f[:, 3 * c :]
    var_u.sub_(mu_u.square())  # E[u^2] - E[u]^2, in place
    var_d.sub_(mu_d.square())
    if cov_norm != 1.0:  # sample covariance (uniform window): N / (N - 1)
        var_u.mul_(cov_norm)
        var_d.mul_(cov_norm)
    mu_u.add_(cu)  # back to the uncentred local means
    mu_d.add_(cd)
    two_mu_x = mu_u + mu_d  # 2 * mu_x = E[x + y] + E[x - y]
    two_mu_y = mu_u.sub_(mu_d)  # 2 * mu_y
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    # 2 mu_x mu_y + C1 and 2 cov_xy + C2 = (var_u - var_d) / 2 + C2
    num = (two_mu_x * two_mu_y).mul_(0.5).add_(c1).mul_(torch.sub(var_u, var_d).mul_(0.5).add_(c2))
    # mu_x^2 + mu_y^2 + C1 and var_x + var_y + C2 = (var_u + var_d) / 2 + C2
    den = two_mu_x.square_().add_(two_mu_y.square_()).mul_(0.25).add_(c1)
    den.mul_(var_u.add_(var_d).mul_(0.5).add_(c2))
    return num.div_(den).sum(dim=(2, 3), dtype=torch.float64)


def ssim_frames(
    x: "torch.Tensor", y: "torch.Tensor", filter_dtype: "torch.dtype | None" = None,
    window: str = "gaussian11", data_range: float = DATA_RANGE,
) -> "torch.Tensor":
    """Per-frame SSIM (float64) of two ``[n, 3, H, W]`` tensors, both uint8 or both floats on [0, 1].

    ``window`` is ``"gaussian11"`` (default) or ``"uniform7"`` (scikit-image's defaults:
    7x7 box, sample covariance); ``data_range`` the peak value on the [0, 1] scale
    (:mod:`metrics.protocol`).

    ``filter_dtype`` is the precision of the filtering and the formula: float32 by
    default (matches scikit-image to ~1e-7), float64 for a tighter reference
    (~1e-14, slower on CPU). Work is split into tiles of whole frames, or of
    rows of one frame for large frames (valid filtering needs 10 overlapping
    rows), which bounds memory and keeps CPU tiles in cache; the Python loop
    runs over tiles, each processed as one batched torch computation.

    >>> import torch
    >>> x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    >>> [round(v, 12) for v in ssim_frames(x, x).tolist()]
    [1.0, 1.0]
    """
    import torch

    from .device import full_precision

    filter_dtype = filter_dtype or torch.float32
    g = _window_taps(window, filter_dtype, x.device)
    win, sample_cov = WINDOWS[window]
    cov_norm = win * win / (win * win - 1.0) if sample_cov else 1.0
    # uint8 pixels are used as they are (0..255): SSIM is the same with data range 255.
    data_range = float(data_range) * (255.0 if x.dtype == torch.uint8 else 1.0)
    n, c, h, w = x.shape
    if h < win or w < win:
        raise InputError(f"SSIM needs frames of at least {win}x{win} pixels, got {h}x{w}")
    ho, wo = h - win + 1, w - win + 1
    m = 4 * c
    kernels = (
        g.view(1, 1, win, 1).expand(m, 1, win, 1).contiguous(),
        g.view(1, 1, 1, win).expand(m, 1, 1, win).contiguous(),
    )
    budget = _TILE_PIXELS_CPU if x.device.type == "cpu" else _TILE_PIXELS_GPU
    sums = torch.zeros(n, c, dtype=torch.float64, device=x.device)
    frames_per_tile = budget // (h * w)
    with full_precision(x.device):  # TF32 convolutions would cost SSIM ~1e-4
        if frames_per_tile >= 1:
            for s in range(0, n, frames_per_tile):
                t = slice(s, s + frames_per_tile)
                sums[t] = _ssim_sums(x[t], y[t], kernels, data_range, cov_norm)
        else:
            rows = max(16, budget // w - (win - 1))  # output rows per tile
            for i in range(n):
                for r in range(0, ho, rows):
                    stop = min(r + rows, ho) + win - 1
                    sums[i : i + 1] += _ssim_sums(x[i : i + 1, :, r:stop], y[i : i + 1, :, r:stop], kernels, data_range,
                                                  cov_norm)
    return (sums / (ho * wo)).mean(dim=1)


def ssim(a: Any, b: Any, window: str = "gaussian11", data_range: float = DATA_RANGE) -> np.ndarray:
    """SSIM per image (per frame) of two images or batches, as float64.

    Same result as scikit-image's ``structural_similarity(a, b, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1)`` on the
    [0, 1] images; ``window="uniform7"`` gives skimage's defaults (7x7 box, sample
    covariance) and ``data_range`` its ``data_range`` (on the [0, 1] scale). Inputs follow
    :mod:`metrics.inputs`.

    >>> import numpy as np, metrics
    >>> a = np.random.default_rng(0).random((2, 32, 48, 3))
    >>> [round(v, 9) for v in metrics.ssim(a, a).tolist()]
    [1.0, 1.0]
    """
    import functools

    from .inputs import pixel_metric

    return pixel_metric(functools.partial(ssim_frames, window=window, data_range=data_range), a, b)
