"""Choice of the torch device that metrics run on."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device", "full_precision", "pixel_device", "prefer_short_openmp_spin"]

# libgomp spin iterations before an idle OpenMP thread sleeps (its default is 300000).
_GOMP_SPINCOUNT = "10000"


def resolve_device(device: "str | torch.device" = "auto") -> "torch.device":
    """Turn ``"auto"`` (cuda > mps > cpu) or any torch device spec into a ``torch.device``.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if isinstance(device, torch.device):
        return device
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pixel_device(device: "torch.device") -> "torch.device":
    """Device for the float64 pixel metrics (PSNR, SSIM): MPS has no float64, so CPU there.

    >>> import torch
    >>> pixel_device(torch.device("mps"))
    device(type='cpu')
    """
    import torch

    return torch.device("cpu") if device.type == "mps" else device


@contextlib.contextmanager
def full_precision(device: "torch.device") -> Iterator[None]:
    """Disable TF32 for convolutions and matmuls on CUDA while metrics run.

    PyTorch lets cuDNN convolutions use TF32 (10-bit mantissa) by default on
    Ampere and newer GPUs; that would move SSIM by ~1e-4 and make LPIPS/CLIP
    values depend on the GPU generation. Restored on exit; a no-op elsewhere.

    >>> import torch
    >>> with full_precision(torch.device("cpu")):
    ...     pass
    """
    if device.type != "cuda":
        yield
        return
    import torch

    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    mm = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if conv is not None and mm is not None:  # torch >= 2.9 precision API
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            torch.backends.cudnn.conv.fp32_precision = conv
            torch.backends.cuda.matmul.fp32_precision = mm
        return
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def prefer_short_openmp_spin() -> bool:
    """Make idle OpenMP threads sleep soon instead of spinning; only works before torch loads.

    After a parallel region, GNU OpenMP (PyTorch's on Linux) keeps its threads
    spinning for ~300000 iterations (milliseconds). The NNPACK convolutions of
    LPIPS (:mod:`metrics.fast_conv`) run on their own thread pool right after
    such regions and lost ~40% of their speed to the spinners on a 2-core CPU.
    ``GOMP_SPINCOUNT`` is read once, when the OpenMP runtime loads with torch,
    so entry points call this first. A user's own ``GOMP_SPINCOUNT`` or
    ``OMP_WAIT_POLICY`` is left alone. Returns False when torch had already
    loaded, so that nothing could change.

    >>> isinstance(prefer_short_openmp_spin(), bool)
    True
    """
    if "torch" in sys.modules:
        return False
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = _GOMP_SPINCOUNT
    return True
