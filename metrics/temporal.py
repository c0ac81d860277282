"""Temporal quality of a cached video against its baseline: how the change between frames differs.

A cache that reuses a residual across denoising steps can leave every frame close to the
baseline while the motion between frames is wrong (jitter, a frozen stretch, a jump). The
per-frame metrics (PSNR, SSIM, LPIPS) cannot see that; these compare the *difference videos*:

    D_t(x) = x_(t+1) - x_t          (t = 0 .. F-2, pixels on [0, 1], per RGB channel)
    E_t    = D_t(cached) - D_t(baseline)

* ``mae_tdiff``: per transition ``mean |E_t|`` over pixels and channels (pixels on [0, 1]);
* ``psnr_tdiff``: per transition ``10 log10(R^2 / mean E_t^2)`` with ``R = 1`` (the pixel
  range; D_t spans [-1, 1], so an error as large as a full-range pixel step is 0 dB). A
  transition that changes exactly as the baseline's is inf (as PSNR of identical frames).

An item's value is the mean over its F-1 transitions (inf transitions counted as 100 dB in
PSNR's mean, as for per-frame PSNR; every transition identical: inf). ``per_frame`` holds the
F-1 transition values (index t: frames t -> t+1). A 1-frame item (an image) has no
transition: these metrics do not apply to it, and the Scorer says so instead of a value.

Model-free and exact: uint8 frames are differenced in integers (no wrap-around), floats in float64.

>>> import numpy as np
>>> still = np.zeros((3, 8, 8, 3), np.uint8)
>>> moving = still.copy(); moving[1] = 51  # frame 1 jumps by 0.2 and back
>>> r = transition_errors(moving, still)
>>> [round(float(v), 6) for v in r["mae_tdiff"]], [round(float(v), 4) for v in r["psnr_tdiff"]]
([0.2, 0.2], [13.9794, 13.9794])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from .inputs import Frames

__all__ = ["NAMES", "not_applicable", "transition_errors", "transition_errors_frames"]

#: the metrics this module computes (metrics.registry)
NAMES = ("psnr_tdiff", "mae_tdiff")


def not_applicable(n_frames: int, label: str) -> dict[str, Any]:
    """The Scorer's entry for a metric that needs 2+ frames on an item with fewer: no value, a note."""
    return {"value": None, "per_frame": [], "label": label,
            "note": f"not applicable: {n_frames} frame (an image has no frame-to-frame change)"}


def _differences(x: "torch.Tensor") -> "torch.Tensor":
    """``x[1:] - x[:-1]`` of ``[k, 3, H, W]`` frames, exact: int16 for uint8, float64 on [0, 1] otherwise."""
    import torch

    if x.dtype == torch.uint8:
        x = x.to(torch.int16)
    else:
        x = x.to(torch.float64)
    return x[1:] - x[:-1]


def transition_errors_frames(x: "torch.Tensor", y: "torch.Tensor") -> dict[str, np.ndarray]:
    """Per-transition ``mae_tdiff`` and ``psnr_tdiff`` of ``[k, 3, H, W]`` frames (k-1 values each).

    Both uint8 (exact integer differences, scaled by 1/255 once) or both floats on [0, 1].
    """
    import torch

    e = _differences(x) - _differences(y)  # int16 stays exact: |e| <= 510
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    flat = e.reshape(e.shape[0], -1).to(torch.float64)
    n = flat.shape[1]
    mae = flat.abs().sum(dim=1) / (n * scale)
    mse = flat.square().sum(dim=1) / (n * scale * scale)
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10(1.0 / mse.cpu().numpy())  # mse 0 -> inf: the change is the baseline's
    return {"mae_tdiff": mae.cpu().numpy(), "psnr_tdiff": psnr}


def transition_errors(cached: Any, baseline: Any) -> dict[str, np.ndarray]:
    """Per-transition values of both temporal metrics for one video pair (any accepted input)."""
    from .inputs import check_pair, to_frames

    fc, fb = to_frames(cached, "cached"), to_frames(baseline, "baseline")
    check_pair(fc, fb)
    return item_errors(fc, fb, chunk=16, device="cpu")


def item_errors(fc: "Frames", fb: "Frames", chunk: int, device: Any) -> dict[str, np.ndarray]:
    """Per-transition values of one checked pair, ``chunk`` transitions at a time (chunks overlap by a frame)."""
    from .inputs import all_uint8, metric_pixels
    import torch

    exact = all_uint8(fc, fb)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, fc.n - 1, chunk):
        stop = min(fc.n, start + chunk + 1)
        x, y = (metric_pixels(f, start, stop, exact=exact, dtype=torch.float64, device=device) for f in (fc, fb))
        parts.append(transition_errors_frames(x, y))
    if not parts:
        return {k: np.zeros(0) for k in NAMES}
    return {k: np.concatenate([p[k] for p in parts]) for k in NAMES}
