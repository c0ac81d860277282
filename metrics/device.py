"""Choice of the torch device that metrics run on."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device", "full_precision", "pixel_device"]


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
