"""Checks on pixel inputs and their single conversion to float on [0, 1].

Every public function of the package passes its inputs through
:func:`to_frames` (validation) and reads pixels through :meth:`Frames.pixels`
(the caller's uint8 or [0, 1] floats, as ``[n, 3, H, W]``), converting them
to floats on [0, 1] only with :func:`as_unit`, so the rules below hold
everywhere. PSNR and SSIM also accept a uint8 pair as it is: they compute on
0..255 with a data range of 255, which is the same quantity.

Accepted inputs
    numpy arrays, torch tensors, PIL images, or a list/tuple of frames of one
    of those. dtype ``uint8`` (0..255) or floating point (float16, bfloat16,
    float32, float64) with every value in [0, 1]. Anything else (int32, bool,
    floats outside [0, 1], NaN/inf) is an :class:`~metrics.errors.InputError`;
    values are never rescaled silently.

Layout rule
    RGB only. The channel axis is the last one if its size is 3 (HWC, NHWC,
    FHWC); otherwise dim -3 if its size is 3 (CHW, NCHW, FCHW). A 3-D input is
    one image; a 4-D input is a batch of images (free functions) or the frames
    of one video (one item of :class:`~metrics.scorer.Scorer`). A
    ``[3, H, W, 3]`` input is therefore read as channel-last.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["Frames", "all_uint8", "as_unit", "check_pair", "metric_pixels", "pixel_metric", "to_frames"]

_FLOAT_KINDS = ("float16", "bfloat16", "float32", "float64")
_HOW_TO_FIX = (
    "values are never rescaled silently; convert explicitly, e.g. (x + 1) / 2 for data on "
    "[-1, 1] or x / 255 for floats on 0..255, or pass uint8"
)


@dataclass(frozen=True)
class Frames:
    """Checked pixels of one item: ``n`` RGB frames, still in the caller's dtype and layout.

    >>> import numpy as np
    >>> f = to_frames(np.zeros((4, 6, 3), np.uint8), "img")
    >>> f.n, f.size, tuple(f.unit(dtype=__import__("torch").float64, device="cpu").shape)
    (1, (4, 6), (1, 3, 4, 6))
    """

    data: "torch.Tensor"  # [n, H, W, 3] when channels_last else [n, 3, H, W]
    channels_last: bool
    name: str
    kind: str  # "frame" (video item) or "image" (batch); used in messages only

    @property
    def n(self) -> int:
        return int(self.data.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        s = self.data.shape
        return (int(s[1]), int(s[2])) if self.channels_last else (int(s[2]), int(s[3]))

    def pixels(self, start: int = 0, stop: int | None = None, *, device: "torch.device | str") -> "torch.Tensor":
        """Frames ``start:stop`` as a ``[k, 3, H, W]`` tensor in the caller's dtype, on ``device``.

        Channel-last input stays channel-last in memory (a permuted view, i.e.
        ``torch.channels_last`` strides): no transposing copy, and it is the
        layout the convolutions here prefer. uint8 travels to the device at a
        quarter of the bytes of float32. May share memory with the caller's
        tensor, so never modify it in place.
        """
        chunk = self.data[start:stop].to(device)
        return chunk.permute(0, 3, 1, 2) if self.channels_last else chunk

    def unit(
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        dtype: "torch.dtype",
        device: "torch.device | str",
    ) -> "torch.Tensor":
        """Frames ``start:stop`` as a ``[k, 3, H, W]`` tensor of ``dtype`` on [0, 1] (see :func:`as_unit`)."""
        return as_unit(self.pixels(start, stop, device=device), dtype)


def as_unit(pixels: "torch.Tensor", dtype: "torch.dtype") -> "torch.Tensor":
    """Checked pixels (uint8 0..255, or floats on [0, 1]) as ``dtype`` on [0, 1]: the one conversion.

    uint8 is divided by 255; floats are only cast. The result may share memory
    with the input (floats of the same dtype), so never modify it in place.

    >>> import torch
    >>> as_unit(torch.tensor([0, 51, 255], dtype=torch.uint8), torch.float64).tolist()
    [0.0, 0.2, 1.0]
    """
    import torch

    if pixels.dtype == torch.uint8:
        return pixels.to(dtype).div_(255.0)  # to() made a new tensor, so in place is safe
    return pixels.to(dtype)


def all_uint8(*frames: Frames) -> bool:
    """Whether all items are uint8, so PSNR and SSIM may use their exact integer path on them."""
    import torch

    return all(f.data.dtype == torch.uint8 for f in frames)


def metric_pixels(
    frames: Frames, start: int, stop: int, *, exact: bool, dtype: "torch.dtype", device: "torch.device | str"
) -> "torch.Tensor":
    """Frames ``start:stop`` for the metrics: as they are when ``exact`` (the whole batch is uint8,
    see :func:`all_uint8`), otherwise as ``dtype`` on [0, 1]. Both sides of a pair must agree."""
    if exact:
        return frames.pixels(start, stop, device=device)
    return frames.unit(start, stop, dtype=dtype, device=device)


def pixel_metric(frame_metric: Any, a: Any, b: Any) -> np.ndarray:
    """Per-image values of ``frame_metric(x, y)`` (PSNR or SSIM on ``[n, 3, H, W]``) for two inputs.

    Checks the inputs, then feeds uint8 pairs as they are and anything else as float64 on
    [0, 1], in chunks of ~4M pixels so a long float64 stack never materialises at once.
    """
    import torch

    from .device import pixel_device

    fa, fb = to_frames(a, "a", kind="image"), to_frames(b, "b", kind="image")
    check_pair(fa, fb)
    exact = all_uint8(fa, fb)
    device = pixel_device(fa.data.device)  # float64: not on MPS
    step = max(1, (1 << 22) // (fa.size[0] * fa.size[1]))
    out = []
    for s in range(0, fa.n, step):
        x, y = (metric_pixels(f, s, s + step, exact=exact, dtype=torch.float64, device=device) for f in (fa, fb))
        out.append(frame_metric(x, y).cpu())
    return torch.cat(out).numpy()


def _describe(name: str, kind: str, index: int | None) -> str:
    return name if index is None else f"{name}, {kind} {index}"


def _as_tensor(x: Any, name: str) -> "torch.Tensor":
    """numpy / torch / PIL / list of frames -> torch tensor, without copying where possible."""
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, (list, tuple)):
        if len(x) == 0:
            raise InputError(f"{name}: is empty (a list with no frames)")
        if all(isinstance(e, torch.Tensor) for e in x):
            shapes = {tuple(e.shape) for e in x}
            if len(shapes) != 1:
                raise InputError(f"{name}: frames have different shapes {sorted(shapes)}")
            return torch.stack([e.detach() for e in x])
        try:
            arrs = [np.asarray(e) for e in x]
        except Exception as err:  # pragma: no cover - exotic objects
            raise InputError(f"{name}: cannot read frames as arrays ({err})") from err
        shapes = {a.shape for a in arrs}
        if len(shapes) != 1:
            raise InputError(f"{name}: frames have different shapes {sorted(shapes)}")
        x = np.stack(arrs)
    if not isinstance(x, np.ndarray):
        if hasattr(x, "mode") and hasattr(x, "size"):  # PIL image
            x = np.asarray(x)
        else:
            raise InputError(
                f"{name}: expected a numpy array, torch tensor or PIL image, got {type(x).__name__}"
            )
    if x.dtype.name not in ("uint8", "float16", "float32", "float64"):
        raise InputError(f"{name}: dtype {x.dtype} is not accepted; use uint8 (0..255) or float on [0, 1]")
    if any(s < 0 for s in x.strides) or not x.dtype.isnative:
        x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))
    with warnings.catch_warnings():
        # Read-only arrays (e.g. np.asarray(PIL image)) are fine: nothing here writes to them.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(x)


def to_frames(x: Any, name: str, kind: str = "frame") -> Frames:
    """Validate one item and describe it as frames, raising :class:`InputError` naming ``name``.

    ``kind`` ("frame" or "image") only changes how a bad frame is named in messages.

    >>> import numpy as np
    >>> to_frames(np.full((2, 3, 8, 8), 0.5), "video").n
    2
    >>> to_frames(np.full((8, 8, 3), 2.0), "x")
    Traceback (most recent call last):
    ...
    metrics.errors.InputError: x: float pixels must lie in [0, 1]; observed min=2, max=2; ...
    """
    import torch

    t = _as_tensor(x, name)
    dt = str(t.dtype).removeprefix("torch.")
    if dt != "uint8" and dt not in _FLOAT_KINDS:
        raise InputError(f"{name}: dtype {dt} is not accepted; use uint8 (0..255) or float on [0, 1]")
    if t.ndim not in (3, 4):
        raise InputError(
            f"{name}: expected an image (HWC/CHW) or a stack of images/frames (NHWC/NCHW), "
            f"got shape {tuple(t.shape)}"
        )
    if t.numel() == 0:
        raise InputError(f"{name}: is empty (shape {tuple(t.shape)})")
    single = t.ndim == 3
    if single:
        t = t.unsqueeze(0)
    if t.shape[-1] == 3:
        channels_last = True
    elif t.shape[-3] == 3:
        channels_last = False
    else:
        raise InputError(
            f"{name}: cannot find 3 RGB channels in shape {tuple(t.shape[1:] if single else t.shape)}: "
            "the last dim (channel-last) or dim -3 (channel-first) must be 3"
        )
    if dt != "uint8":
        flat = t.reshape(t.shape[0], -1)
        finite = torch.isfinite(flat).all(dim=1)
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0, 0])
            what = "NaN" if bool(torch.isnan(flat[i]).any()) else "inf"
            raise InputError(f"{_describe(name, kind, None if single else i)}: contains {what} pixels")
        lo, hi = flat.amin(dim=1), flat.amax(dim=1)
        bad = (lo < 0) | (hi > 1)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise InputError(
                f"{_describe(name, kind, None if single else i)}: float pixels must lie in [0, 1]; "
                f"observed min={float(lo[i]):.6g}, max={float(hi[i]):.6g}; {_HOW_TO_FIX}"
            )
    return Frames(data=t, channels_last=channels_last, name=name, kind=kind)


def check_pair(a: Frames, b: Frames) -> None:
    """Raise :class:`InputError` unless ``a`` and ``b`` have the same frame count and size.

    >>> import numpy as np
    >>> check_pair(to_frames(np.zeros((8, 8, 3)), "a"), to_frames(np.zeros((8, 9, 3)), "b"))
    Traceback (most recent call last):
    ...
    metrics.errors.InputError: shape mismatch: a is 8x8 but b is 8x9 (H x W)
    """
    if a.n != b.n:
        raise InputError(f"different frame counts: {a.name} has {a.n} {a.kind}s but {b.name} has {b.n}")
    if a.size != b.size:
        (h1, w1), (h2, w2) = a.size, b.size
        raise InputError(f"shape mismatch: {a.name} is {h1}x{w1} but {b.name} is {h2}x{w2} (H x W)")
