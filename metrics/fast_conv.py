"""Faster CPU convolutions for the LPIPS backbones, through NNPACK.

On a CPU, LPIPS time is the backbone's convolutions, and oneDNN's direct
convolution already runs near the FLOP peak. NNPACK (built into PyTorch)
computes the same convolution with fewer multiplications: Winograd transforms
for 3x3 kernels, FFT tiles for larger ones. On AlexNet at 480x832 that made
the backbone ~1.5x faster on a 2-core AVX2 machine. Winograd rounds more than
a direct float32 sum (layer outputs differ by up to ~1e-5 of their largest
value), but LPIPS, a mean over normalised features, moves by ~1e-9
(``benchmarks/bench_metrics.py`` prints the difference; tests hold it to 1e-7).

:func:`use_nnpack` switches eligible ``Conv2d`` layers of a module in place:
stride 1, no dilation or groups, zero padding, kernels 3..16 (1x1 and strided
layers gain nothing, NNPACK rejects bigger kernels), at least
``_MIN_CHANNEL_PRODUCT`` input x output channels; they use NNPACK on feature
maps of at least ``_MIN_PIXELS`` pixels, one image per call. Each layer is probed once
against ``F.conv2d``; a layer whose result differs by more than
``_PROBE_RTOL`` stays on the default path. Layers keep their class's
parameters and state-dict keys. Only float32 CPU inputs take the NNPACK route;
anything else (CUDA, autograd, other dtypes) runs the normal convolution.

NNPACK has its own thread pool, sized by ``torch.get_num_threads()`` when it
is first used. The OpenMP threads the rest of the network uses spin for a
while after each parallel region and then compete with it for the cores;
:func:`metrics.device.prefer_short_openmp_spin` (called by the command-line
entry points before torch loads) keeps that spin short. Without it, NNPACK is
about as fast as the default path, not slower.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

__all__ = ["NnpackConv2d", "use_nnpack", "nnpack_available"]

log = logging.getLogger(__name__)
_PROBE_RTOL = 1e-4
_MAX_KERNEL = 16  # NNPACK's limit
# NNPACK transforms the kernels on every call, a fixed cost that only large feature maps
# repay: on AlexNet's layers it lost below ~30x30 and won above ~30x50 (2-core AVX2).
_MIN_PIXELS = 1200
# Thin layers do too little work per kernel transform: NNPACK lost on VGG's 3->64 and
# 64->64 layers and won from 64->128 (and AlexNet's 64->192) up.
_MIN_CHANNEL_PRODUCT = 8192


def nnpack_available() -> bool:
    """Whether this PyTorch build can run NNPACK on this CPU.

    ``torch._nnpack_available()`` also initialises NNPACK; without that call
    every NNPACK convolution fails, so it must run before the first one.
    """
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without the op
        return False


class NnpackConv2d(torch.nn.Conv2d):
    """A ``Conv2d`` whose float32 CPU inference runs NNPACK (see the module docstring)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (
            input.device.type != "cpu"
            or input.dtype != torch.float32
            or torch.is_grad_enabled()
            or input.shape[-2] * input.shape[-1] < _MIN_PIXELS
        ):
            return super()._conv_forward(input, weight, bias)
        pad, stride = list(self.padding), list(self.stride)
        # One image per call: NNPACK's batched (training) path measured 1.5-2.5x slower per
        # image, and it keeps every image's result independent of the batch it came in.
        outs = [
            torch._nnpack_spatial_convolution(x.contiguous(), weight.contiguous(), bias, pad, stride)
            for x in input.split(1)
        ]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        # NNPACK writes NCHW; the pooling and normalisation that follow are faster channels-last.
        return out.contiguous(memory_format=torch.channels_last)


def _eligible(m: torch.nn.Module) -> bool:
    return (
        type(m) is torch.nn.Conv2d
        and m.groups == 1
        and m.stride == (1, 1)
        and m.dilation == (1, 1)
        and m.padding_mode == "zeros"
        and isinstance(m.padding, tuple)
        and all(3 <= k <= _MAX_KERNEL for k in m.kernel_size)
        and all(p < k for p, k in zip(m.padding, m.kernel_size))
        and m.in_channels * m.out_channels >= _MIN_CHANNEL_PRODUCT
    )


def _agrees(m: torch.nn.Conv2d) -> bool:
    """Probe one layer: NNPACK against ``F.conv2d`` on a seeded random input."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, m.in_channels, 40, 40, generator=g)
    with torch.inference_mode():
        want = F.conv2d(x, m.weight, m.bias, m.stride, m.padding)
        try:
            got = torch._nnpack_spatial_convolution(x, m.weight.contiguous(), m.bias, list(m.padding), list(m.stride))
        except RuntimeError as err:
            log.info("NNPACK refused a %s: %s", m, err)
            return False
    return bool(((got - want).abs().max() <= _PROBE_RTOL * want.abs().max()).item())


def use_nnpack(module: torch.nn.Module) -> int:
    """Switch the eligible CPU ``Conv2d`` layers of ``module`` to NNPACK; return how many were switched."""
    if not nnpack_available():
        return 0
    switched = 0
    for m in module.modules():
        if _eligible(m) and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32 and _agrees(m):
            # Changing the class keeps parameters, hooks and state-dict keys as they are.
            m.__class__ = NnpackConv2d
            m.weight.data = m.weight.data.contiguous()  # NNPACK reads NCHW weights: no copy per call
            switched += 1
    return switched
