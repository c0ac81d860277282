"""CLIP score: text-image agreement of an open_clip model.

Per image: ``100 * max(cos(image_embedding, text_embedding), 0)`` (Hessel et
al. 2021 without their 2.5 rescaling); per video: the mean over frames.

Images are preprocessed as one batched torch op on the model's device that
reproduces the tensor path of open_clip's eval transform for the model/tag:
resize the shortest side to the model's input size (bicubic, antialiased, the
torchvision ``Resize`` rule for the long side), centre crop, normalise with
the mean/std from ``model.visual.preprocess_cfg``. ``squash`` resizing is also
supported; other modes raise. Pixels are never rounded to uint8 in between
(open_clip's PIL path does that, so its scores differ very slightly).

A model may also be an open_clip ``local-dir:FOLDER`` (``open_clip_config.json``, tokenizer
files, ``open_clip_model.safetensors``): a CLIP trained elsewhere, such as the project's
reference CLIP. The folder's config may carry a ``label``, which names its scores everywhere
(e.g. "reference-CLIP (toy world; not comparable with published CLIP scores)").
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .registry import RANDOM_WEIGHTS_TAG, with_random_tag

if TYPE_CHECKING:
    import torch

__all__ = ["ClipNet", "load_clip", "preprocess", "encode_texts", "encode_images", "clip_frames", "clip_score"]

log = logging.getLogger(__name__)
RANDOM_SEED = 0
LOCAL_DIR = "local-dir:"


@dataclass(frozen=True)
class ClipNet:
    """A ready open_clip model, its tokenizer, preprocessing constants and label."""

    model: "torch.nn.Module"
    tokenizer: Callable[..., "torch.Tensor"]
    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    resize_mode: str
    name: str
    pretrained: str
    random_weights: bool
    display_name: str | None = None  # a local-dir folder's own label, used instead of name_pretrained

    @property
    def label(self) -> str:
        if self.display_name:
            return f"clip_{self.display_name}"
        return with_random_tag(f"clip_{self.name}_{self.pretrained}", self.random_weights)

    @property
    def device(self) -> "torch.device":
        return next(self.model.parameters()).device


def load_clip(
    model: str = "ViT-B-32",
    pretrained: str = "laion2b_s34b_b79k",
    device: Any = "auto",
    allow_random_weights: bool = False,
) -> ClipNet:
    """An open_clip model from the cached checkpoint (else, if allowed, random weights).

    ``pretrained`` is an open_clip tag (weights from the Hugging Face cache) or a
    local checkpoint file. ``model="local-dir:FOLDER"`` loads a trained folder instead
    (``pretrained`` is then ignored, and random weights are never substituted).
    Built once per (model, tag, device, weights) and shared by Scorers and :func:`clip_score`.
    The checkpoint is loaded from its local path, so no network call is made
    when it is cached. Random weights (``allow_random_weights=True`` and weights
    unavailable) use ``pretrained=None`` under ``torch.manual_seed(0)`` in a forked RNG.

    >>> net = load_clip(device="cpu", allow_random_weights=True)  # doctest: +SKIP
    >>> net.size  # doctest: +SKIP
    (224, 224)
    """
    from .device import resolve_device
    from .weights import resolve_clip_checkpoint

    dev = resolve_device(device)
    if model.startswith(LOCAL_DIR):
        return _build_local(model[len(LOCAL_DIR):], str(dev))
    path, _ = resolve_clip_checkpoint(model, pretrained, allow_random_weights=allow_random_weights)
    return _build(model, pretrained, str(dev), None if path is None else str(path))


@functools.lru_cache(maxsize=1)
def _build(model: str, pretrained: str, device: str, path: str | None) -> ClipNet:
    # Cached so Scorers and clip_score share one model per (model, tag, device, weights).
    import open_clip
    import torch

    from .errors import WeightsMissing
    from .weights import clip_source, fetch_command, hf_cache_dir

    src = clip_source(model, pretrained)
    # The tag's preprocessing (mean/std/interpolation/resize) is forced explicitly because
    # open_clip only applies it automatically when given the tag, and we give it a path.
    force_pp = {k: src.cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if src.cfg and k in src.cfg}
    # OpenAI's CLIPs use QuickGELU; open_clip only switches it on from the tag, never for a path.
    quick_gelu = bool(src.cfg and src.cfg.get("quick_gelu"))
    if path is None:
        log.warning(
            "CLIP %s/%s: pretrained weights not available; using RANDOM weights (seed %d). "
            "Results are labelled %s and are meaningless as CLIP scores.",
            model, pretrained, RANDOM_SEED, RANDOM_WEIGHTS_TAG,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            net = open_clip.create_model(
                model, pretrained=None, pretrained_image=False, pretrained_text=False,
                force_preprocess_cfg=force_pp or None, force_quick_gelu=quick_gelu,
            )
    else:
        net = open_clip.create_model(model, pretrained=path, force_preprocess_cfg=force_pp or None,
                                     force_quick_gelu=quick_gelu)
    try:
        tokenizer = open_clip.get_tokenizer(model)
    except Exception as err:  # noqa: BLE001 - HF tokenizers download on first use
        raise WeightsMissing(
            f"tokenizer for CLIP {model} could not be loaded from {hf_cache_dir()} ({err}). "
            f"Fix: run `repro fetch-weights SPEC` or `{fetch_command(clip_model=model, clip_pretrained=pretrained)}`"
        ) from err
    net = net.eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    cfg = net.visual.preprocess_cfg
    size = cfg["size"]
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return ClipNet(
        model=net,
        tokenizer=tokenizer,
        size=size,
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"),
        resize_mode=cfg.get("resize_mode", "shortest"),
        name=model,
        pretrained=pretrained,
        random_weights=path is None,
    )


def local_clip_config(folder: str) -> dict:
    """The ``open_clip_config.json`` of a local-dir CLIP folder; WeightsMissing when it is incomplete."""
    import json
    from pathlib import Path

    from .errors import WeightsMissing

    root = Path(folder)
    config, weights = root / "open_clip_config.json", root / "open_clip_model.safetensors"
    missing = [p.name for p in (config, weights) if not p.is_file()]
    if missing:
        raise WeightsMissing(
            f"CLIP folder {root} lacks {', '.join(missing)}; a local-dir CLIP needs open_clip_config.json, "
            "its tokenizer files and open_clip_model.safetensors"
        )
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise WeightsMissing(f"CLIP folder {root}: open_clip_config.json is not readable JSON ({err})") from err
    if not isinstance(data, dict) or "model_cfg" not in data:
        raise WeightsMissing(f"CLIP folder {root}: open_clip_config.json has no model_cfg")
    return data


@functools.lru_cache(maxsize=1)
def _build_local(folder: str, device: str) -> ClipNet:
    import open_clip
    import torch

    config = local_clip_config(folder)
    ident = f"{LOCAL_DIR}{folder}"
    with torch.random.fork_rng(devices=[]):  # building initialises weights before loading: keep global RNG intact
        net = open_clip.create_model(ident, require_pretrained=True)
    tokenizer = open_clip.get_tokenizer(ident)
    net = net.eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    cfg = net.visual.preprocess_cfg
    size = cfg["size"]
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return ClipNet(
        model=net, tokenizer=tokenizer, size=size,
        mean=tuple(float(v) for v in cfg["mean"]), std=tuple(float(v) for v in cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"), resize_mode=cfg.get("resize_mode", "shortest"),
        name=ident, pretrained="local", random_weights=False,
        display_name=str(config.get("label") or f"local:{os.path.basename(os.path.normpath(folder))}"),
    )


def _resized_size(h: int, w: int, target: int) -> tuple[int, int]:
    """torchvision ``Resize(int)``: shortest side -> target, long side truncated."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = target, int(target * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def preprocess(net: ClipNet, x: "torch.Tensor") -> "torch.Tensor":
    """``[n, 3, H, W]`` pixels (uint8, or floats on [0, 1]) -> normalised ``[n, 3, S, S]`` model input on ``x``'s device."""
    return resize_crop_normalize(x, net.size, net.mean, net.std, net.interpolation, net.resize_mode)


def resize_crop_normalize(x: "torch.Tensor", size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
                          interpolation: str = "bicubic", resize_mode: str = "shortest") -> "torch.Tensor":
    """The tensor path of torchvision's ``Resize(S)`` (antialiased), ``CenterCrop(S)``, ``Normalize(mean, std)``
    on pixels brought to [0, 1]; ``squash`` resizes straight to ``size``. Shared by CLIP and ImageReward."""
    import torch
    import torch.nn.functional as F

    from .inputs import as_unit

    mode = "bilinear" if interpolation == "bilinear" else "bicubic"
    sh, sw = size
    x = as_unit(x, torch.float32)
    h, w = x.shape[-2:]
    if resize_mode == "squash":
        x = F.interpolate(x, size=(sh, sw), mode=mode, align_corners=False, antialias=True)
    elif resize_mode == "shortest" and sh == sw:
        nh, nw = _resized_size(h, w, sh)
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode=mode, align_corners=False, antialias=True)
        top, left = int(round((nh - sh) / 2.0)), int(round((nw - sw) / 2.0))
        x = x[..., top : top + sh, left : left + sw]
    else:
        raise ValueError(f"preprocessing mode {resize_mode!r} with size {size} is not supported")
    mean_t = torch.tensor(tuple(mean), device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(tuple(std), device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def encode_texts(net: ClipNet, prompts: Sequence[str], batch_size: int = 64) -> "torch.Tensor":
    """L2-normalised text embeddings ``[len(prompts), D]`` (float32, model device)."""
    import torch

    from .device import full_precision

    out = []
    with torch.inference_mode(), full_precision(net.device):
        for s in range(0, len(prompts), batch_size):
            tokens = net.tokenizer(list(prompts[s : s + batch_size])).to(net.device)
            out.append(torch.nn.functional.normalize(net.model.encode_text(tokens).float(), dim=-1))
    return torch.cat(out)


def encode_images(net: ClipNet, x: "torch.Tensor", batch_size: int = 16) -> "torch.Tensor":
    """L2-normalised image embeddings ``[n, D]`` of ``[n, 3, H, W]`` pixels (uint8, or floats on [0, 1])."""
    import torch

    from .device import full_precision

    out = []
    with torch.inference_mode(), full_precision(net.device):
        for s in range(0, x.shape[0], batch_size):
            pix = preprocess(net, x[s : s + batch_size].to(net.device))
            out.append(torch.nn.functional.normalize(net.model.encode_image(pix).float(), dim=-1))
    return torch.cat(out)


def clip_frames(net: ClipNet, x: "torch.Tensor", text_emb: "torch.Tensor", batch_size: int = 16) -> "torch.Tensor":
    """Per-frame CLIP score (float64, CPU): ``100 * max(cos, 0)`` against row i of ``text_emb``."""
    import torch

    img = encode_images(net, x, batch_size)
    cos = (img * text_emb.to(img.device)).sum(dim=-1)
    return (100.0 * cos.clamp(min=0)).to("cpu", torch.float64)


def clip_score(
    images: Any,
    prompts: str | Sequence[str],
    model: str = "ViT-B-32",
    pretrained: str = "laion2b_s34b_b79k",
    device: Any = "auto",
    allow_random_weights: bool = False,
    batch_size: int = 16,
) -> np.ndarray:
    """CLIP score per image of an image or batch against one prompt or one prompt per image.

    Raises :class:`~metrics.WeightsMissing` when the weights are neither cached
    nor downloadable, unless ``allow_random_weights=True``.

    >>> import numpy as np, metrics
    >>> imgs = np.zeros((2, 64, 64, 3), np.uint8)
    >>> s = metrics.clip_score(imgs, "a black square", allow_random_weights=True)  # doctest: +SKIP
    >>> s.shape  # doctest: +SKIP
    (2,)
    """
    import torch

    from .errors import InputError
    from .inputs import to_frames

    frames = to_frames(images, "images", kind="image")
    if isinstance(prompts, str):
        prompts = [prompts] * frames.n
    prompts = list(prompts)
    if len(prompts) != frames.n:
        raise InputError(f"prompts: got {len(prompts)} prompts for {frames.n} images")
    net = load_clip(model, pretrained, device, allow_random_weights)
    index = {p: i for i, p in enumerate(dict.fromkeys(prompts))}  # each distinct prompt encoded once
    emb = encode_texts(net, list(index))
    rows = emb[torch.tensor([index[p] for p in prompts], device=emb.device)]
    out = []
    for s in range(0, frames.n, batch_size):
        x = frames.pixels(s, s + batch_size, device=net.device)
        out.append(clip_frames(net, x, rows[s : s + batch_size], batch_size))
    return torch.cat(out).numpy()
