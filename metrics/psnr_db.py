"""Peak signal-to-noise ratio, in dB, on pixels scaled to [0, 1]."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["PSNR_CAP_DB", "psnr", "psnr_frames", "video_psnr"]

#: Identical frames have infinite PSNR. Means over frames or items replace inf by this
#: value (and say so) so that one identical frame does not turn an average into inf.
PSNR_CAP_DB = 100.0


def psnr_frames(x: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
    """Per-frame PSNR of two ``[n, 3, H, W]`` tensors: ``10 * log10(1 / MSE)`` on [0, 1].

    Both are uint8 (0..255) or both floats on [0, 1]. uint8 differences and
    their squared sum are exact integers (so nothing wraps around), divided by
    255^2 once; floats are subtracted in float64. Identical frames -> inf.

    >>> import torch
    >>> x = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    >>> psnr_frames(x, x + 0.1).tolist()
    [20.0]
    >>> psnr_frames(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)).tolist()
    [0.0]
    """
    import torch

    n = x[0].numel()
    if x.dtype == torch.uint8 and y.dtype == torch.uint8:
        # Differences are exact in int16 and their squares (<= 255^2) in float32; the float64
        # sum of those integers is exact too. Cheaper than int32/int64 arithmetic on CPU.
        d = _frames_flat(x).to(torch.int16) - _frames_flat(y).to(torch.int16)
        mse = d.to(torch.float32).square_().sum(dim=1, dtype=torch.float64) / (n * 255.0**2)
    else:
        mse = (_frames_flat(x).to(torch.float64) - _frames_flat(y).to(torch.float64)).square_().sum(dim=1) / n
    # 1/0 -> inf, log10(inf) -> inf: identical frames report inf without warnings.
    return 10.0 * torch.log10(1.0 / mse)


def _frames_flat(t: "torch.Tensor") -> "torch.Tensor":
    """``[n, H*W*C]`` in H, W, C order: a view for channels-last frames (how frames usually
    arrive), a copy otherwise. Both sides of a difference must use the same order."""
    return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1)


def video_psnr(per_frame: np.ndarray) -> tuple[float, int]:
    """One item's PSNR and its number of inf frames.

    An item whose every frame is identical to the baseline is ``inf`` (it *is* identical);
    otherwise the mean over frames with inf capped at :data:`PSNR_CAP_DB`.

    >>> video_psnr(np.array([30.0, np.inf]))
    (65.0, 1)
    >>> video_psnr(np.array([np.inf, np.inf]))
    (inf, 2)
    """
    per_frame = np.asarray(per_frame, dtype=np.float64)
    n_inf = int(np.isposinf(per_frame).sum())
    if n_inf == per_frame.size:
        return float("inf"), n_inf
    return float(np.minimum(per_frame, PSNR_CAP_DB).mean()), n_inf


def psnr(a: Any, b: Any) -> np.ndarray:
    """PSNR in dB per image (per frame) of two images or batches; float64, identical -> inf.

    Inputs follow :mod:`metrics.inputs` (uint8 or floats on [0, 1]; HWC/CHW or NHWC/NCHW).

    >>> import numpy as np, metrics
    >>> a = np.zeros((2, 8, 8, 3), np.uint8)
    >>> metrics.psnr(a, a).tolist()
    [inf, inf]
    >>> round(float(metrics.psnr(np.zeros((8, 8, 3)), np.full((8, 8, 3), 0.1))[0]), 6)
    20.0
    """
    from .inputs import pixel_metric

    return pixel_metric(psnr_frames, a, b)
