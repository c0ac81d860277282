"""What each quality metric is: the one definition every other module reads.

A :class:`Metric` carries its direction (as torchmetrics' ``higher_is_better``), its display
label and unit, its identity value (what an output scores against itself: a baseline's
value "by definition", never a measurement), whether it needs network weights, and the
protocol it is computed with. The scorer, the aggregate tables, the Pareto fronts,
``repro best``, the figures and the exports all read it from here; exports write
:func:`records` next to the tables, so the definitions travel with the numbers.

Columns in the result tables:

* ``lpips``, ``psnr``, ``ssim``: a cached output against its uncached baseline (``reference``);
* ``clip``: an output against its prompt (the baseline has its own, measured CLIP score);
* ``clip_delta``: derived, ``clip`` of the cached output minus ``clip`` of its baseline;
* ``psnr_tdiff``, ``mae_tdiff``: the change from frame t to t+1 of a cached video against the
  same change in its baseline (:mod:`metrics.temporal`; videos only);
* ``vbench_*``: VBench's dimensions of each output alone (:mod:`metrics.vbench`): the cached
  output's value next to its baseline's own, measured value; videos only;
* ``image_reward``: ImageReward of each output against its prompt (:mod:`metrics.image_reward`).

``DEFAULT_NAMES`` are what a spec that leaves ``metrics.names`` out is scored with (the four
long-standing metrics, so its hash and its needs for weights do not change); every other
metric is scored when ``metrics.names`` lists it.

Example::

    >>> from metrics.registry import METRICS, better
    >>> METRICS["lpips"].higher_is_better, better("psnr"), METRICS["psnr"].identity
    (False, 'max', inf)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Metric", "METRICS", "SCORED", "DEFAULT_NAMES", "REFERENCE", "ALONE", "QUALITY", "FRONT",
           "RANDOM_WEIGHTS_TAG", "get", "better", "default_labels", "records", "with_random_tag", "has_random_tag",
           "sample_size_warning", "capped"]

#: The one spelling of "this number was made with random (not pretrained) network weights".
RANDOM_WEIGHTS_TAG = "[random weights]"


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    higher_is_better: bool
    unit: str | None = None
    #: value of an output scored against itself (None: no such value, e.g. CLIP against a prompt)
    identity: float | None = None
    needs_weights: bool = False
    #: True: compares a cached output with its baseline; False: scores one output alone
    reference: bool = True
    #: computed by metrics.Scorer (False: derived from other columns at aggregation)
    scored: bool = True
    #: how the value is computed (data range, window, pooling over frames, ...)
    protocol: dict[str, Any] = field(default_factory=dict)
    #: scored when a spec leaves metrics.names out
    default: bool = False
    #: fewest frames an item needs; an item with fewer (an image) gets no value, only a note
    min_frames: int = 1
    #: smallest frame side (px) its network can score; smaller frames get no value, only a note
    min_side: int = 1
    #: what ``per_frame`` is indexed by: "frame" (one value per frame), "transition" (value i
    #: is about the change from frame i to frame i+1: one value fewer than frames) or "odd_frame"
    #: (value i is about frame 2i+1, predicted from frames 2i and 2i+2)
    per_frame_axis: str = "frame"
    #: the number of samples the metric's source asks for (a set-level score), and where it says so
    recommended_samples: int | None = None
    samples_source: str | None = None

    def frame_position(self, i: int) -> float:
        """Where value ``i`` of ``per_frame`` sits on the clip's frame axis.

        >>> [METRICS[n].frame_position(1) for n in ("psnr", "psnr_tdiff", "vbench_motion_smoothness")]
        [1.0, 1.5, 3.0]
        """
        return {"frame": float(i), "transition": i + 0.5, "odd_frame": 2.0 * i + 1.0}[self.per_frame_axis]

    @property
    def direction(self) -> str:
        """"max" or "min": which way is better (Pareto fronts, gates, tie-breaks)."""
        return "max" if self.higher_is_better else "min"

    def record(self) -> dict[str, Any]:
        """A JSON-ready description (inf identity written as the string "inf", see docs/metrics.md)."""
        out = asdict(self)
        if out["identity"] is not None and math.isinf(out["identity"]):
            out["identity"] = "inf"
        out["direction"] = self.direction
        return out


_FRAMES = "per frame, then the mean over the frames of a video"
_TRANSITIONS = "per transition (frame t to t+1), then the mean over the transitions of a video"
_VIDEO_ONLY = "not applicable to an image (1 frame): no value, a note says why"
# Vchitect/VBench prompts/README.md (commit fed9982): "For each prompt, sample 5 videos"; the prompt
# counts are the lines of prompts/prompts_per_dimension/<dimension>.txt at that commit.
_VBENCH_SAMPLES = "VBench prompts/README.md: {n} prompts in prompts_per_dimension/{dim}.txt x 5 videos per prompt"
_VBENCH_APPROX = ("VBench prompts/README.md: 'around 100 prompts' per dimension x 5 videos per prompt "
                  "(this dimension's own list was not counted here)")

METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("lpips", "LPIPS", higher_is_better=False, identity=0.0, needs_weights=True, default=True,
           protocol={"pooling": _FRAMES, "input_range": "[-1, 1]", "net": "alex or vgg (metrics.lpips_net)"}),
    Metric("psnr", "PSNR (dB)", higher_is_better=True, unit="dB", identity=math.inf, default=True,
           protocol={"pooling": _FRAMES, "data_range": 1.0, "identical_frame": "inf",
                     "inf_in_means": "counted as 100 dB (metrics.PSNR_CAP_DB) and noted"}),
    Metric("ssim", "SSIM", higher_is_better=True, identity=1.0, default=True,
           protocol={"pooling": _FRAMES, "data_range": 1.0, "window": "gaussian 11 taps, sigma 1.5",
                     "channels": "per RGB channel, averaged", "covariance": "population"}),
    Metric("clip", "CLIP score", higher_is_better=True, needs_weights=True, reference=False, default=True,
           protocol={"pooling": _FRAMES, "score": "100 x cosine(image, prompt), clipped at 0",
                     "model": "metrics.clip_model / clip_pretrained (published FLUX tables: ViT-g-14)"}),
    Metric("clip_delta", "ΔCLIP score", higher_is_better=True, identity=0.0, needs_weights=True, scored=False,
           protocol={"definition": "clip(cached) - clip(baseline), same prompt"}),
    # --- temporal quality against the baseline (metrics.temporal) ---
    Metric("psnr_tdiff", "frame-difference PSNR (dB)", higher_is_better=True, unit="dB", identity=math.inf,
           min_frames=2, per_frame_axis="transition",
           protocol={"definition": "PSNR of the difference videos: D_t = x_(t+1) - x_t of the cached video "
                                   "against the same D_t of its baseline",
                     "pooling": _TRANSITIONS, "data_range": 1.0,
                     "data_range_note": "pixels on [0, 1], so differences lie in [-1, 1]; the peak is the "
                                        "pixel range 1 (a full-range error in the change is 0 dB)",
                     "identical_transition": "inf", "inf_in_means": "counted as 100 dB (metrics.PSNR_CAP_DB)",
                     "images": _VIDEO_ONLY}),
    Metric("mae_tdiff", "frame-difference MAE", higher_is_better=False, identity=0.0,
           min_frames=2, per_frame_axis="transition",
           protocol={"definition": "mean |D_t(cached) - D_t(baseline)| over pixels and RGB channels, "
                                   "D_t = x_(t+1) - x_t",
                     "pooling": _TRANSITIONS, "data_range": 1.0,
                     "unit": "pixels on [0, 1] (multiply by 255 for 8-bit levels)", "images": _VIDEO_ONLY}),
    # --- VBench dimensions, each output alone (metrics.vbench) ---
    Metric("vbench_temporal_flickering", "VBench temporal flickering", higher_is_better=True, reference=False,
           min_frames=2, per_frame_axis="transition", recommended_samples=375,
           samples_source=_VBENCH_SAMPLES.format(n=75, dim="temporal_flickering"),
           protocol={"definition": "(255 - mean over transitions of mean |x_(t+1) - x_t| on 0..255) / 255, "
                                   "Vchitect/VBench vbench/temporal_flickering.py",
                     "flicker": "the flicker measure of an output alone: 1 is a still video; the baseline's "
                                "own value is stored with the baseline",
                     "pixels": "lossless frames (VBench reads MP4 with cv2); floats on [0, 1] x 255, not rounded",
                     "static_filter": "not applied (VBench scores only videos its RAFT static filter keeps)",
                     "pooling": _TRANSITIONS, "images": _VIDEO_ONLY}),
    Metric("vbench_subject_consistency", "VBench subject consistency", higher_is_better=True, reference=False,
           needs_weights=True, min_frames=2, per_frame_axis="transition", recommended_samples=360,
           samples_source=_VBENCH_SAMPLES.format(n=72, dim="subject_consistency"),
           protocol={"definition": "mean over frames i >= 1 of (max(0, cos(f_(i-1), f_i)) + max(0, cos(f_0, f_i))) "
                                   "/ 2, f = DINO ViT-B/16 CLS features; vbench/subject_consistency.py",
                     "network": "DINO ViT-B/16 (timm vit_base_patch16_224.dino)",
                     "pooling": "per video (VBench's set score weights videos by frame count)",
                     "images": _VIDEO_ONLY}),
    Metric("vbench_background_consistency", "VBench background consistency", higher_is_better=True,
           reference=False, needs_weights=True, min_frames=2, per_frame_axis="transition",
           recommended_samples=500, samples_source=_VBENCH_APPROX,
           protocol={"definition": "as subject consistency with CLIP ViT-B/32 (OpenAI) image features; "
                                   "vbench/background_consistency.py",
                     "network": "open_clip ViT-B-32 / openai", "pooling": "per video", "images": _VIDEO_ONLY}),
    Metric("vbench_aesthetic_quality", "VBench aesthetic quality", higher_is_better=True, reference=False,
           needs_weights=True, recommended_samples=500, samples_source=_VBENCH_APPROX,
           protocol={"definition": "LAION aesthetic predictor (linear head on normalised CLIP ViT-L/14 features) "
                                   "/ 10, mean over frames; vbench/aesthetic_quality.py",
                     "network": "open_clip ViT-L-14 / openai + LAION sa_0_4_vit_l_14_linear.pth",
                     "pooling": _FRAMES}),
    Metric("vbench_motion_smoothness", "VBench motion smoothness", higher_is_better=True, reference=False,
           needs_weights=True, min_frames=3, min_side=113, per_frame_axis="odd_frame", recommended_samples=500,
           samples_source=_VBENCH_APPROX,
           protocol={"definition": "(255 - mean over odd frames of mean |AMT-S(x_(2i), x_(2i+2)) - x_(2i+1)| on "
                                   "0..255) / 255: the even frames kept, each odd frame predicted by AMT-S "
                                   "interpolation (embt 0.5, padding to 16) and compared; "
                                   "vbench/motion_smoothness.py",
                     "network": "AMT-S transcribed from VBench's third_party/amt (metrics.amt) + amt-s.pth",
                     "frame_size": "at least 113 px a side (smaller frames make VBench's AMT-S divide by 0 and "
                                   "score NaN): no value below, a note says why",
                     "pooling": "per predicted (odd) frame, then the mean over them",
                     "images": _VIDEO_ONLY}),
    Metric("vbench_imaging_quality", "VBench imaging quality", higher_is_better=True, reference=False,
           needs_weights=True, recommended_samples=500, samples_source=_VBENCH_APPROX,
           protocol={"definition": "MUSIQ (SPAQ) score / 100 per frame, mean over frames; frames whose longer "
                                   "side exceeds 512 resized to it first (bilinear, no antialias); "
                                   "vbench/imaging_quality.py",
                     "network": "MUSIQ transcribed from pyiqa 0.1.16 (metrics.musiq) + musiq_spaq_ckpt-358bb6af.pth",
                     "pooling": _FRAMES}),
    # --- image reward against the prompt (metrics.image_reward) ---
    Metric("image_reward", "ImageReward", higher_is_better=True, reference=False, needs_weights=True,
           protocol={"definition": "ImageReward-v1.0 (THUDM/ImageReward): BLIP ViT-L/16 + BERT cross-attention, "
                                   "MLP head on the [CLS] feature, (r - 0.16717) / 1.03334",
                     "prompt": "BERT tokens, padded/truncated to 35 (ImageReward.score)",
                     "pooling": _FRAMES}),
)}

#: metrics a spec may request and metrics.Scorer computes
SCORED: tuple[str, ...] = tuple(n for n, m in METRICS.items() if m.scored)
#: what a spec (and a Scorer) without a list of names computes
DEFAULT_NAMES: tuple[str, ...] = tuple(n for n, m in METRICS.items() if m.scored and m.default)
#: scored against the baseline (need the baseline's frames)
REFERENCE: tuple[str, ...] = tuple(n for n, m in METRICS.items() if m.scored and m.reference)
#: scored on each output alone (the baseline gets its own value): metrics.Scorer.score_alone
ALONE: tuple[str, ...] = tuple(n for n, m in METRICS.items() if m.scored and not m.reference)
#: every quality column of the result tables
QUALITY: tuple[str, ...] = tuple(METRICS)
#: the quality axes of the speed-vs-quality fronts (each compares with the baseline)
FRONT: tuple[str, ...] = tuple(n for n, m in METRICS.items() if m.reference)


def get(name: str) -> Metric:
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def better(name: str) -> str:
    """"max" or "min" for a quality metric."""
    return get(name).direction


def requested_columns(names: Any) -> tuple[str, ...]:
    """The table columns a spec's ``metrics.names`` produce (clip also gives clip_delta), in registry order."""
    names = set(names)
    return tuple(n for n in QUALITY if n in names or (n == "clip_delta" and "clip" in names))


def capped(name: str) -> bool:
    """Whether inf (identical) values of `name` are counted as metrics.PSNR_CAP_DB in means (the PSNRs).

    >>> capped("psnr"), capped("psnr@pooled_video"), capped("psnr_tdiff"), capped("ssim")
    (True, True, True, False)
    """
    m = METRICS.get(name.partition("@")[0])
    return m is not None and m.identity == math.inf


def sample_size_warning(name: str, n: int) -> str | None:
    """A warning when a set-level metric is averaged over fewer samples than its source asks for.

    >>> sample_size_warning("vbench_temporal_flickering", 4)[:59]
    'vbench_temporal_flickering: computed on 4 samples; its sour'
    >>> sample_size_warning("psnr", 4) is None
    True
    """
    m = METRICS.get(name.partition("@")[0])
    if m is None or m.recommended_samples is None or n >= m.recommended_samples:
        return None
    return (f"{m.name}: computed on {n} samples; its source asks for {m.recommended_samples} "
            f"({m.samples_source}), so it is not comparable with published values")


def default_labels() -> dict[str, str]:
    return {n: m.label for n, m in METRICS.items()}


def records() -> dict[str, dict[str, Any]]:
    return {n: m.record() for n, m in METRICS.items()}


def with_random_tag(label: str, random_weights: bool) -> str:
    """`label` with the random-weights tag appended when the network had random weights."""
    return f"{label} {RANDOM_WEIGHTS_TAG}" if random_weights and not has_random_tag(label) else label


def has_random_tag(label: Any) -> bool:
    return RANDOM_WEIGHTS_TAG in str(label or "")
