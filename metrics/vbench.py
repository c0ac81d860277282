"""VBench's per-video dimensions, re-implemented from VBench's source (the ``vbench`` package pins
numpy < 2 and transformers 4.33 and cannot be installed beside this project).

Source: Vchitect/VBench at commit 5a069552bfaf96d314440ece110c051973bfd91c (utils.py read at
00c4b29cf313eddd2ac456a3af829c528fa31da2; background_consistency.py at fc4620b4d620114b77842c336f7a193c37e8e12e,
aesthetic_quality.py at 2665156e8c3c06b64bbbd716f63289a859dddb4f). Each output is scored alone;
in a sweep the baseline has its own value, stored with the baseline.

``vbench_temporal_flickering`` (model-free; vbench/temporal_flickering.py ``cal_score``)
    ``(255 - mean_t mean|f_t - f_(t+1)|) / 255`` on 0..255 pixels (``calculate_mae``: float32
    ``cv2.absdiff``, mean over H, W, channels). ``per_frame`` holds the per-transition
    ``(255 - mae_t) / 255``, whose mean is the video's score (the map is linear). VBench reads
    MP4s with cv2; we score the lossless frames (floats on [0, 1] times 255, not rounded), and
    VBench's static filter (RAFT) is not applied: the score is of the video as generated.
``vbench_subject_consistency`` (vbench/subject_consistency.py)
    DINO ViT-B/16 CLS features ``f_i`` of each frame, L2-normalised; per frame ``i >= 1``:
    ``(max(0, cos(f_(i-1), f_i)) + max(0, cos(f_0, f_i))) / 2``; the video's value is their mean
    (``video_sim / (len(images) - 1)``). Preprocessing is VBench's ``dino_transform`` on the
    tensors ``load_video`` returns: resize the short side to 224 (bilinear, antialiased, no crop),
    then ImageNet mean/std applied to pixel values on 0..255 (VBench never divides by 255 on
    this path; we do as it does). The network is timm's ``vit_base_patch16_224.dino``, the DINO
    checkpoint VBench loads through torch.hub (``facebookresearch/dino:main``, ``dino_vitb16``). For a
    non-square frame the position embeddings are resampled by timm (bicubic to the token grid) where
    DINO's code scales by ``(w0 + 0.1) / 14``: identical at 224 x 224, slightly different otherwise.
``vbench_background_consistency`` (vbench/background_consistency.py)
    The same rule on CLIP ViT-B/32 (OpenAI) image features; ``clip_transform``: short side to
    224 (bicubic), centre crop 224, /255, CLIP mean/std (open_clip's ViT-B-32 ``openai``).
``vbench_aesthetic_quality`` (vbench/aesthetic_quality.py)
    LAION's aesthetic predictor: ``nn.Linear(768, 1)`` (``sa_0_4_vit_l_14_linear.pth``) on
    L2-normalised CLIP ViT-L/14 (OpenAI) image features, divided by 10, mean over frames.

``vbench_imaging_quality`` (vbench/imaging_quality.py)
    MUSIQ (SPAQ checkpoint) score / 100 per frame, frames longer than 512 px resized first; the
    network and VBench's rule in :mod:`metrics.musiq` (transcribed from pyiqa 0.1.16).
``vbench_motion_smoothness`` (vbench/motion_smoothness.py)
    The even frames kept, each odd frame predicted by AMT-S from its neighbours and compared:
    ``(255 - mean |prediction - frame| on 0..255) / 255`` per odd frame; the network and the
    rule in :mod:`metrics.amt` (transcribed from VBench's third_party/amt).

Not implemented: ``dynamic_degree`` (RAFT, vendored by VBench). VBench's set score is the mean over videos
(temporal flickering, aesthetic quality) or over all frames of all videos (the two consistency
dimensions); we keep one value per video and average per item like every other metric.

>>> import numpy as np
>>> v = np.zeros((3, 4, 4, 3), np.uint8); v[1] = 51
>>> [round(float(x), 6) for x in temporal_flickering(v)]  # |0-51| = 51 in both transitions
[0.8, 0.8]
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .registry import RANDOM_WEIGHTS_TAG, with_random_tag

if TYPE_CHECKING:
    import torch

    from .inputs import Frames

__all__ = ["NETWORK_DIMENSIONS", "VBenchNet", "consistency", "load_dimension", "score_dimension",
           "temporal_flickering", "temporal_flickering_frames"]

log = logging.getLogger(__name__)
RANDOM_SEED = 0
#: network dimensions: metric name -> what it loads
NETWORK_DIMENSIONS = {
    "vbench_subject_consistency": "DINO ViT-B/16 (timm vit_base_patch16_224.dino)",
    "vbench_background_consistency": "CLIP ViT-B-32 (openai)",
    "vbench_aesthetic_quality": "CLIP ViT-L-14 (openai) + LAION aesthetic linear head",
    "vbench_imaging_quality": "MUSIQ (pyiqa's SPAQ checkpoint; metrics.musiq)",
    "vbench_motion_smoothness": "AMT-S (VBench's third_party/amt; metrics.amt)",
}
#: the single checkpoint file of a dimension, downloaded by URL as VBench's vbench/utils.py does: name -> (URL, what)
URL_CHECKPOINTS = {
    "vbench_imaging_quality": ("https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/"
                               "musiq_spaq_ckpt-358bb6af.pth", "MUSIQ (SPAQ) checkpoint"),
    "vbench_motion_smoothness": ("https://huggingface.co/lalala125/AMT/resolve/main/amt-s.pth", "AMT-S checkpoint"),
}
DINO_REPO, DINO_FILE = "timm/vit_base_patch16_224.dino", "model.safetensors"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------ temporal flickering


def temporal_flickering_frames(x: "torch.Tensor") -> np.ndarray:
    """Per-transition ``(255 - mae_t) / 255`` of ``[k, 3, H, W]`` frames (uint8, or floats on [0, 1])."""
    import torch

    v = x.to(torch.float64) if x.dtype == torch.uint8 else x.to(torch.float64) * 255.0
    mae = (v[1:] - v[:-1]).abs().reshape(v.shape[0] - 1, -1).mean(dim=1)
    return ((255.0 - mae) / 255.0).cpu().numpy()


def temporal_flickering(frames: Any) -> np.ndarray:
    """Per-transition temporal-flickering values of one video (any accepted input); the score is their mean."""
    from .inputs import to_frames

    fr = to_frames(frames, "video")
    return item_flickering(fr, chunk=16, device="cpu")


def item_flickering(fr: "Frames", chunk: int, device: Any) -> np.ndarray:
    parts = []
    for start in range(0, fr.n - 1, chunk):
        parts.append(temporal_flickering_frames(fr.pixels(start, min(fr.n, start + chunk + 1), device=device)))
    return np.concatenate(parts) if parts else np.zeros(0)


# --------------------------------------------------------------------------- consistency


def consistency(features: "torch.Tensor") -> np.ndarray:
    """VBench's consistency of one video from per-frame features ``[n, D]``: values for frames 1..n-1.

    Frame ``i``: ``(max(0, cos(f_(i-1), f_i)) + max(0, cos(f_0, f_i))) / 2`` (features normalised first).
    """
    import torch.nn.functional as F

    f = F.normalize(features.double(), dim=-1, p=2)
    prev = (f[1:] * f[:-1]).sum(dim=-1).clamp(min=0.0)
    first = (f[1:] * f[:1]).sum(dim=-1).clamp(min=0.0)
    return ((prev + first) / 2.0).cpu().numpy()


# ------------------------------------------------------------------------------- networks


@dataclass(frozen=True)
class VBenchNet:
    """A network dimension ready to score: its model(s), and how to label its values."""

    name: str
    model: Any  # DINO module, or a metrics.clip_similarity.ClipNet
    head: Any = None  # the aesthetic linear head
    random_weights: bool = False

    @property
    def label(self) -> str:
        return with_random_tag(self.name, self.random_weights)


def load_dimension(name: str, device: Any = "auto", allow_random_weights: bool = False) -> VBenchNet:
    """The network(s) of a VBench dimension from the caches; WeightsMissing (or labelled random weights)."""
    from .clip_similarity import load_clip
    from .device import resolve_device

    dev = resolve_device(device)
    if name == "vbench_subject_consistency":
        from .weights import resolve_hub_file

        path = resolve_hub_file(DINO_REPO, DINO_FILE, f"DINO ViT-B/16 ({name})", metric=name,
                                allow_random_weights=allow_random_weights)
        return VBenchNet(name, _dino(str(dev), None if path is None else str(path)), random_weights=path is None)
    if name == "vbench_background_consistency":
        net = load_clip("ViT-B-32", "openai", dev, allow_random_weights)
        return VBenchNet(name, net, random_weights=net.random_weights)
    if name == "vbench_aesthetic_quality":
        from .weights import AESTHETIC_URL, resolve_url_file

        net = load_clip("ViT-L-14", "openai", dev, allow_random_weights)
        head_path = resolve_url_file(AESTHETIC_URL, "LAION aesthetic head", name, allow_random_weights)
        head = _aesthetic_head(str(dev), None if head_path is None else str(head_path))
        return VBenchNet(name, net, head, random_weights=net.random_weights or head_path is None)
    if name in URL_CHECKPOINTS:
        from .weights import resolve_url_file

        path = resolve_url_file(*URL_CHECKPOINTS[name], metric=name, allow_random_weights=allow_random_weights)
        return VBenchNet(name, _url_network(name, str(dev), None if path is None else str(path)),
                         random_weights=path is None)
    raise ValueError(f"{name!r} is not a VBench network dimension; known: {', '.join(NETWORK_DIMENSIONS)}")


@functools.lru_cache(maxsize=2)
def _dino(device: str, path: str | None) -> "torch.nn.Module":
    import timm
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        if path is None:
            log.warning("DINO ViT-B/16: pretrained weights not available; using RANDOM weights (seed %d); "
                        "results are labelled %s.", RANDOM_SEED, RANDOM_WEIGHTS_TAG)
        # dynamic_img_size: VBench resizes the short side to 224 without cropping, and DINO's ViT
        # interpolates its position embeddings to the token grid (timm does the same).
        model = timm.create_model("vit_base_patch16_224.dino", pretrained=path is not None, num_classes=0,
                                  dynamic_img_size=True,
                                  pretrained_cfg_overlay=None if path is None else {"file": path})
    model = model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@functools.lru_cache(maxsize=2)
def _url_network(name: str, device: str, path: str | None) -> "torch.nn.Module":
    if name == "vbench_motion_smoothness":
        from .amt import build_amt

        return build_amt(path, device)
    from .musiq import build_musiq

    return build_musiq(path, device)


@functools.lru_cache(maxsize=2)
def _aesthetic_head(device: str, path: str | None) -> "torch.nn.Module":
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        head = torch.nn.Linear(768, 1)
    if path is not None:
        head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    head.requires_grad_(False)
    return head.eval().to(device)


def dino_pixels(x: "torch.Tensor") -> "torch.Tensor":
    """VBench's ``dino_transform(224)`` on ``load_video``'s tensors: 0..255 values, short side 224, ImageNet mean/std."""
    import torch
    import torch.nn.functional as F

    from .clip_similarity import _resized_size

    v = x.to(torch.float32) if x.dtype == torch.uint8 else x.to(torch.float32) * 255.0
    nh, nw = _resized_size(*v.shape[-2:], 224)
    if (nh, nw) != tuple(v.shape[-2:]):
        v = F.interpolate(v, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=v.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=v.device).view(1, 3, 1, 1)
    # DINO's patch embedding (a stride-16 convolution) ignores the last H % 16 rows and W % 16 columns;
    # timm refuses such sizes, so they are cropped here: the same patches.
    return ((v - mean) / std)[..., : nh // 16 * 16, : nw // 16 * 16]


def frame_features(net: VBenchNet, fr: "Frames", batch_size: int) -> "torch.Tensor":
    """Per-frame features ``[n, D]`` (CPU float32) of a network dimension's backbone."""
    import torch

    from .clip_similarity import ClipNet, encode_images

    out = []
    for s in range(0, fr.n, batch_size):
        if isinstance(net.model, ClipNet):
            x = fr.pixels(s, s + batch_size, device=net.model.device)
            out.append(encode_images(net.model, x, batch_size).float().cpu())
        else:
            dev = next(net.model.parameters()).device
            with torch.inference_mode():
                out.append(net.model(dino_pixels(fr.pixels(s, s + batch_size, device=dev))).float().cpu())
    return torch.cat(out)


def score_dimension(net: VBenchNet, fr: "Frames", batch_size: int = 16) -> np.ndarray:
    """Per-frame (aesthetic, imaging quality), per-odd-frame (motion smoothness) or per-transition (consistency)
    values of one video; `batch_size` frames at a time (the Scorer passes its pixel-bounded chunk)."""
    import torch

    if net.name == "vbench_motion_smoothness":  # each odd frame from its two neighbours: the whole clip at once
        from .amt import motion_smoothness_frames

        # one pair at a time, as VBench: AMT-S's all-pairs correlation takes ~0.7 GB per pair at 480x832
        return motion_smoothness_frames(net.model, fr.pixels(0, fr.n, device="cpu"), batch_size=1)
    if net.name == "vbench_imaging_quality":
        from .musiq import imaging_quality_frames

        dev = next(net.model.parameters()).device
        return np.concatenate([imaging_quality_frames(net.model, fr.pixels(s, s + batch_size, device=dev))
                               for s in range(0, fr.n, batch_size)])
    feats = frame_features(net, fr, batch_size)
    if net.head is None:
        return consistency(feats)
    dev = next(net.head.parameters()).device
    with torch.inference_mode():
        # encode_images already L2-normalises, as VBench's F.normalize does
        return (net.head(feats.to(dev)).squeeze(-1) / 10.0).double().cpu().numpy()
