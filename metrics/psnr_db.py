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
    """Per-frame PSNR of two ``[n, 3, H, W]`` tensors on [0, 1]: ``10 * log10(1 / MSE)``.

    Computed in float64 whatever the input dtype, so uint8-derived values
    never wrap around and small MSEs keep their precision. Identical -> inf.

    >>> import torch
    >>> x = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    >>> psnr_frames(x, x + 0.1).tolist()
    [20.0]
    """
    import torch

    x = x.to(torch.float64)
    y = y.to(torch.float64)
    mse = (x - y).square_().mean(dim=(1, 2, 3))
    # 1/0 -> inf, log10(inf) -> inf: identical frames report inf without warnings.
    return 10.0 * torch.log10(1.0 / mse)


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
    import torch

    from .inputs import check_pair, to_frames

    from .device import pixel_device

    fa, fb = to_frames(a, "a", kind="image"), to_frames(b, "b", kind="image")
    check_pair(fa, fb)
    device = pixel_device(fa.data.device)  # float64: not on MPS
    out = []
    # Chunked so a long float64 stack never materialises at once.
    step = max(1, (1 << 22) // (fa.size[0] * fa.size[1]))
    for s in range(0, fa.n, step):
        x = fa.unit(s, s + step, dtype=torch.float64, device=device)
        y = fb.unit(s, s + step, dtype=torch.float64, device=device)
        out.append(psnr_frames(x, y).cpu())
    return torch.cat(out).numpy()
