"""LPIPS perceptual distance through the ``lpips`` package.

The network is ``lpips.LPIPS(net=...)`` (AlexNet by default, VGG16 or
SqueezeNet selectable) in eval mode, run without autograd. Our inputs are
checked pixels (:mod:`metrics.inputs`: uint8, or floats on [0, 1]);
:func:`_to_lpips_range` maps them to the [-1, 1] range the network expects,
and that is the only place the scaling happens (we never pass
``normalize=True`` as well, which would scale twice). On CPU the backbone's
larger convolutions run through NNPACK (:mod:`metrics.fast_conv`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .registry import RANDOM_WEIGHTS_TAG, with_random_tag

if TYPE_CHECKING:
    import torch

__all__ = ["LpipsNet", "load_lpips", "lpips_frames", "lpips_features", "lpips_from_features", "lpips"]

log = logging.getLogger(__name__)
RANDOM_SEED = 0
# On CPU a forward pass gets at most this many pixels per image batch: 4 frames
# of 480x832 per forward measured ~15% slower per frame than 1 (activations fall
# out of cache), while small frames still batch together. GPUs take batch_size.
_CPU_PIXELS_PER_FORWARD = 1 << 18
#: Smallest frame side each backbone accepts (its pooling stages need that many pixels).
MIN_SIZE = {"alex": 31, "vgg": 16, "squeeze": 17}


@dataclass(frozen=True)
class LpipsNet:
    """A ready LPIPS network and how to label its results."""

    module: "torch.nn.Module"
    net: str
    random_weights: bool

    @property
    def label(self) -> str:
        return with_random_tag(f"lpips_{self.net}", self.random_weights)


@contextlib.contextmanager
def _quiet_torchvision():
    # lpips calls torchvision with the deprecated `pretrained=` argument; the warning is noise.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        warnings.filterwarnings("ignore", message=".*pretrained.*")
        warnings.filterwarnings("ignore", message=".*weights.*")
        yield


def load_lpips(net: str = "alex", device: Any = "auto", allow_random_weights: bool = False) -> LpipsNet:
    """The LPIPS network: pretrained backbone from the torch cache, else (if allowed) random.

    Built once per (net, device, weights) and shared by Scorers and :func:`lpips`.

    Random weights need ``allow_random_weights=True`` *and* missing pretrained
    weights; they are drawn with ``torch.manual_seed(0)`` inside a forked RNG
    (reproducible, caller's RNG untouched) and logged as a warning.

    >>> n = load_lpips("alex", "cpu", allow_random_weights=True)
    >>> n.label in ("lpips_alex", "lpips_alex [random weights]")
    True
    """
    from .device import resolve_device
    from .weights import resolve_lpips_backbone

    dev = resolve_device(device)
    backbone = resolve_lpips_backbone(net, allow_random_weights=allow_random_weights)
    return _build(net, str(dev), backbone is None)


@functools.lru_cache(maxsize=1)
def _build(net: str, device: str, random_weights: bool) -> LpipsNet:
    # Cached so Scorers and the free function share one network per (net, device, weights).
    import lpips as lpips_pkg
    import torch

    with _quiet_torchvision():
        if random_weights:
            log.warning(
                "LPIPS %s: pretrained backbone not available; using RANDOM backbone weights "
                "(seed %d). Results are labelled %s and are not comparable to real LPIPS.",
                net, RANDOM_SEED, RANDOM_WEIGHTS_TAG,
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                module = lpips_pkg.LPIPS(net=net, pnet_rand=True, verbose=False)
        else:
            # torchvision finds the checkpoint in torch.hub.get_dir()/checkpoints and loads it offline.
            module = lpips_pkg.LPIPS(net=net, pnet_rand=False, verbose=False)
    # channels-last convolutions measured ~15% faster on CPU and are what GPUs prefer.
    module = module.eval().to(device=device, memory_format=torch.channels_last)
    for p in module.parameters():
        p.requires_grad_(False)
    if torch.device(device).type == "cpu":
        from .fast_conv import use_nnpack

        use_nnpack(module.net)  # the backbone only: its 1x1 "lin" layers gain nothing
    return LpipsNet(module=module, net=net, random_weights=random_weights)


def _to_lpips_range(pixels: "torch.Tensor", device: "torch.device") -> "torch.Tensor":
    """uint8 (0..255) or [0, 1] float pixels -> float32 on [-1, 1], channels-last, a new tensor."""
    import torch

    if pixels.dtype == torch.uint8:
        t = pixels.to(device, torch.float32).mul_(2.0 / 255.0)
    else:
        t = torch.mul(pixels.to(device, torch.float32), 2.0)  # never in place: may be the caller's
    return t.sub_(1.0).contiguous(memory_format=torch.channels_last)


def lpips_frames(net: LpipsNet, x: "torch.Tensor", y: "torch.Tensor", batch_size: int = 16,
                 spatial: bool = False) -> "torch.Tensor":
    """Per-frame LPIPS (float64, on CPU) of two ``[n, 3, H, W]`` pixel tensors (uint8, or floats on [0, 1]).

    ``spatial=True`` is the ``upsampled_map_mean`` protocol (:mod:`metrics.protocol`): the
    network's ``spatial=True`` distance map (each layer upsampled to the frame size), then
    its mean; the default averages each layer's map at its own resolution.

    >>> import torch
    >>> n = load_lpips("alex", "cpu", allow_random_weights=True)
    >>> x = torch.rand(2, 3, 64, 64)
    >>> lpips_frames(n, x, x).tolist()
    [0.0, 0.0]
    """
    import torch

    from .device import full_precision

    _check_size(net, x)
    dev = next(net.module.parameters()).device
    step = _forward_step(net, x, batch_size, dev)
    out = []
    module = net.module
    with torch.inference_mode(), full_precision(dev), _spatial_output(module, spatial):
        for s in range(0, x.shape[0], step):
            a = _to_lpips_range(x[s : s + step], dev)
            b = _to_lpips_range(y[s : s + step], dev)
            d = module(a, b)
            out.append(d.flatten(1).mean(dim=1).to("cpu", torch.float64))  # [k,1,1,1] or the [k,1,H,W] map
    return torch.cat(out)


@contextlib.contextmanager
def _spatial_output(module: "torch.nn.Module", spatial: bool):
    """lpips.LPIPS reads its ``spatial`` flag at each forward: set it for this call only (the module is shared)."""
    before = module.spatial
    module.spatial = spatial
    try:
        yield
    finally:
        module.spatial = before


def lpips_features(net: LpipsNet, x: "torch.Tensor", batch_size: int = 16) -> list["torch.Tensor"]:
    """The normalised backbone features of ``[n, 3, H, W]`` pixels, one tensor per LPIPS layer.

    A baseline's features are computed once and reused for every cached output scored against
    it (:func:`lpips_from_features`); together they compute exactly what ``lpips.LPIPS.forward``
    does (scaling layer, backbone, unit-normalised features, learned 1x1 weights, spatial mean).
    """
    import lpips as lpips_pkg
    import torch

    from .device import full_precision

    _check_size(net, x)
    dev = next(net.module.parameters()).device
    step = _forward_step(net, x, batch_size, dev)
    chunks: list[list[torch.Tensor]] = []
    with torch.inference_mode(), full_precision(dev):
        for s in range(0, x.shape[0], step):
            a = net.module.scaling_layer(_to_lpips_range(x[s : s + step], dev))
            chunks.append([lpips_pkg.normalize_tensor(o) for o in net.module.net.forward(a)])
    return [torch.cat(layer) if len(layer) > 1 else layer[0] for layer in zip(*chunks)]


def lpips_from_features(net: LpipsNet, fx: list["torch.Tensor"], fy: list["torch.Tensor"],
                        spatial_size: tuple[int, int] | None = None) -> "torch.Tensor":
    """Per-frame LPIPS (float64, on CPU) from two feature lists of :func:`lpips_features`.

    ``spatial_size`` (the frames' H, W) gives the ``spatial=True`` protocol of :func:`lpips_frames`.
    """
    import torch
    from lpips.lpips import upsample

    from .device import full_precision

    module = net.module
    dev = next(module.parameters()).device
    with torch.inference_mode(), full_precision(dev):
        total = 0
        for kk in range(module.L):
            d = module.lins[kk]((fx[kk] - fy[kk]) ** 2)
            total = total + (upsample(d, out_HW=spatial_size) if spatial_size else d.mean([2, 3], keepdim=True))
    return total.flatten(1).mean(dim=1).to("cpu", torch.float64)


def _check_size(net: LpipsNet, x: "torch.Tensor") -> None:
    from .errors import InputError

    if min(x.shape[-2:]) < MIN_SIZE.get(net.net, 1):
        m = MIN_SIZE[net.net]
        raise InputError(f"LPIPS {net.net} needs frames of at least {m}x{m} pixels, got {x.shape[-2]}x{x.shape[-1]}")


def _forward_step(net: LpipsNet, x: "torch.Tensor", batch_size: int, dev: "torch.device") -> int:
    if dev.type == "cpu":
        return max(1, min(batch_size, _CPU_PIXELS_PER_FORWARD // (x.shape[-2] * x.shape[-1])))
    return batch_size


def lpips(
    a: Any,
    b: Any,
    net: str = "alex",
    device: Any = "auto",
    allow_random_weights: bool = False,
    batch_size: int = 16,
) -> np.ndarray:
    """LPIPS distance per image (per frame) of two images or batches (uint8 or floats on [0, 1]).

    Raises :class:`~metrics.WeightsMissing` when the pretrained backbone is not
    cached and cannot be downloaded, unless ``allow_random_weights=True``.

    >>> import numpy as np, metrics
    >>> a = np.zeros((2, 64, 64, 3), np.uint8)
    >>> metrics.lpips(a, a, allow_random_weights=True).tolist()
    [0.0, 0.0]
    """
    import torch

    from .device import resolve_device
    from .inputs import check_pair, to_frames

    fa, fb = to_frames(a, "a", kind="image"), to_frames(b, "b", kind="image")
    check_pair(fa, fb)
    dev = resolve_device(device)
    model = load_lpips(net, dev, allow_random_weights)
    out = []
    for s in range(0, fa.n, batch_size):
        x = fa.pixels(s, s + batch_size, device=dev)
        y = fb.pixels(s, s + batch_size, device=dev)
        out.append(lpips_frames(model, x, y, batch_size))
    return torch.cat(out).numpy()
