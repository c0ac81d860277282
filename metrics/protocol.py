"""How a metric value is computed: the choices evaluation scripts make differently.

Published tables disagree on the same method partly because their scripts differ exactly
here, so every score records the protocol it was made with, and a point scored under two
protocols keeps both (each protocol variant has its own score key, see :meth:`Protocol.key`).

Options and defaults (the defaults are this package's long-standing behaviour):

``psnr``
    ``per_frame_mean`` (default): PSNR of each frame, then the mean over the video's frames
    (an identical frame is inf, counted as ``PSNR_CAP_DB`` in the mean);
    ``pooled_video``: PSNR of the MSE pooled over all frames of the video
    (``10 log10(R^2 / mean over all pixels of all frames)``), as scripts that call
    ``mse(video_a, video_b)`` on the whole clip do. Pooled is never above per-frame mean
    (Jensen), and differs most when a few frames are bad.
``ssim``
    ``gaussian11`` (default): Gaussian window 11 taps, sigma 1.5, population covariance
    (``skimage ... gaussian_weights=True, sigma=1.5, use_sample_covariance=False``; also
    torchmetrics' default kernel); ``uniform7``: 7x7 uniform window with sample covariance
    (scikit-image's defaults). Both per RGB channel, valid region only.
``lpips_spatial``
    ``average`` (default): ``lpips.LPIPS(spatial=False)``, each layer's distance map averaged
    at its own resolution; ``upsampled_map_mean``: ``spatial=True`` (each layer's map
    upsampled to the input size, summed) and then the mean of that map, as scripts that build
    LPIPS with ``spatial=True`` and call ``.mean()`` do. The network (``alex``/``vgg``) is
    ``metrics.lpips_net`` of the spec.
``averaging``
    ``per_item`` (default): a point's value is the mean over its items (each video counts
    once); ``per_frame``: the mean over all frames of all items (longer videos count more).
    Affects point means only, not item values.
``data_range``
    The peak value ``R`` on the [0, 1] pixel scale (default 1.0). Scripts that score [-1, 1]
    tensors with ``data_range=1`` effectively use 0.5 here: PSNR moves by ``20 log10(R)``
    dB, SSIM's constants by ``R^2``.

>>> p = Protocol(psnr="pooled_video")
>>> p.key("psnr"), p.key("ssim"), Protocol().key("psnr")
('psnr@pooled_video', 'ssim', 'psnr')
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Protocol", "CHOICES", "DEFAULT", "psnr_item", "weighted_mean"]

#: option -> allowed values (first = default)
CHOICES: dict[str, tuple[str, ...]] = {
    "psnr": ("per_frame_mean", "pooled_video"),
    "ssim": ("gaussian11", "uniform7"),
    "lpips_spatial": ("average", "upsampled_map_mean"),
    "averaging": ("per_item", "per_frame"),
}
#: which options change which metric's item values
AFFECTS: dict[str, tuple[str, ...]] = {"psnr": ("psnr", "data_range"), "ssim": ("ssim", "data_range"),
                                        "lpips": ("lpips_spatial",)}


@dataclass(frozen=True)
class Protocol:
    psnr: str = "per_frame_mean"
    ssim: str = "gaussian11"
    lpips_spatial: str = "average"
    averaging: str = "per_item"
    data_range: float = 1.0

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"metrics.protocol.{name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        r = self.data_range
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r <= 0:
            raise ValueError(f"metrics.protocol.data_range: {r!r} must be a positive number (1.0 for pixels on [0, 1])")
        object.__setattr__(self, "data_range", float(r))

    def record(self) -> dict[str, Any]:
        return asdict(self)

    def variant(self, metric: str) -> str:
        """'' when `metric` is computed with the defaults, else the non-default choices, e.g. 'pooled_video'."""
        parts = []
        for opt in AFFECTS.get(metric, ()):
            value = getattr(self, opt)
            if value != getattr(DEFAULT, opt):
                parts.append(f"range={value:g}" if opt == "data_range" else str(value))
        return ",".join(parts)

    def key(self, metric: str) -> str:
        """The score key of `metric` under this protocol: the bare name for the defaults."""
        v = self.variant(metric)
        return f"{metric}@{v}" if v else metric

    def describe(self, metric: str) -> str:
        """What the value of `metric` means under this protocol, in words (stored with each score)."""
        if metric == "psnr":
            how = "PSNR of the pooled MSE of all frames" if self.psnr == "pooled_video" else "per-frame PSNR, mean over frames"
            return f"{how}; data range {self.data_range:g}"
        if metric == "ssim":
            how = ("uniform 7x7 window, sample covariance" if self.ssim == "uniform7"
                   else "Gaussian 11 taps sigma 1.5, population covariance")
            return f"SSIM {how}, per RGB channel; data range {self.data_range:g}; mean over frames"
        if metric == "lpips":
            how = "spatial=True map, upsampled and averaged" if self.lpips_spatial == "upsampled_map_mean" \
                else "spatial average per layer"
            return f"LPIPS {how}; mean over frames"
        return ""


DEFAULT = Protocol()


def psnr_item(per_frame_db: Any, protocol: Protocol = DEFAULT) -> tuple[float, np.ndarray, int]:
    """(item value, per-frame values, n identical frames) from per-frame PSNR on data range 1.

    Per-frame values move by ``20 log10(R)``; the item value is their capped mean
    (``per_frame_mean``) or the PSNR of the mean MSE (``pooled_video``, recovered exactly
    from the per-frame values as ``mse = 10^(-psnr/10)``). All frames identical -> inf.

    >>> v, f, n = psnr_item([20.0, 40.0], Protocol(psnr="pooled_video"))
    >>> round(v, 4), n   # MSEs 0.01 and 0.0001: 10 log10(1 / 0.00505)
    (22.9671, 0)
    """
    from .psnr_db import video_psnr

    base = np.asarray(per_frame_db, dtype=np.float64).reshape(-1)
    shift = 20.0 * math.log10(protocol.data_range)
    frames = base + shift
    n_inf = int(np.isposinf(base).sum())
    if protocol.psnr == "pooled_video":
        mse = float(np.mean(np.power(10.0, -base / 10.0)))  # inf -> 0
        value = math.inf if mse == 0.0 else 10.0 * math.log10(protocol.data_range**2 / mse)
        return value, frames, n_inf
    value, _ = video_psnr(frames)
    return value, frames, n_inf


def weighted_mean(values: Any, frames: Any, protocol: Protocol = DEFAULT) -> float:
    """A point's mean of per-item values: plain (``per_item``) or weighted by frame count (``per_frame``).

    >>> weighted_mean([1.0, 4.0], [1, 3]), weighted_mean([1.0, 4.0], [1, 3], Protocol(averaging="per_frame"))
    (2.5, 3.25)
    """
    v = np.asarray(values, dtype=np.float64)
    if protocol.averaging == "per_item":
        return float(v.mean())
    w = np.asarray(frames, dtype=np.float64)
    return float((v * w).sum() / w.sum())
