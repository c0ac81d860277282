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
* ``clip_delta``: derived, ``clip`` of the cached output minus ``clip`` of its baseline.

Example::

    >>> from metrics.registry import METRICS, better
    >>> METRICS["lpips"].higher_is_better, better("psnr"), METRICS["psnr"].identity
    (False, 'max', inf)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Metric", "METRICS", "SCORED", "REFERENCE", "QUALITY", "FRONT", "RANDOM_WEIGHTS_TAG",
           "get", "better", "default_labels", "records", "with_random_tag", "has_random_tag"]

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

    @property
    def direction(self) -> str:
        """"max" or "min": which way is better (Pareto fronts, gates, tie-breaks)."""
        return "max" if self.higher_is_better else "min"

    def record(self) -> dict[str, Any]:
        """A JSON-ready description (inf identity written as the string "inf", see README)."""
        out = asdict(self)
        if out["identity"] is not None and math.isinf(out["identity"]):
            out["identity"] = "inf"
        out["direction"] = self.direction
        return out


_FRAMES = "per frame, then the mean over the frames of a video"

METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("lpips", "LPIPS", higher_is_better=False, identity=0.0, needs_weights=True,
           protocol={"pooling": _FRAMES, "input_range": "[-1, 1]", "net": "alex or vgg (metrics.lpips_net)"}),
    Metric("psnr", "PSNR (dB)", higher_is_better=True, unit="dB", identity=math.inf,
           protocol={"pooling": _FRAMES, "data_range": 1.0, "identical_frame": "inf",
                     "inf_in_means": "counted as 100 dB (metrics.PSNR_CAP_DB) and noted"}),
    Metric("ssim", "SSIM", higher_is_better=True, identity=1.0,
           protocol={"pooling": _FRAMES, "data_range": 1.0, "window": "gaussian 11 taps, sigma 1.5",
                     "channels": "per RGB channel, averaged", "covariance": "population"}),
    Metric("clip", "CLIP score", higher_is_better=True, needs_weights=True, reference=False,
           protocol={"pooling": _FRAMES, "score": "100 x cosine(image, prompt), clipped at 0"}),
    Metric("clip_delta", "ΔCLIP score", higher_is_better=True, identity=0.0, needs_weights=True, scored=False,
           protocol={"definition": "clip(cached) - clip(baseline), same prompt"}),
)}

#: metrics a spec may request and metrics.Scorer computes
SCORED: tuple[str, ...] = tuple(n for n, m in METRICS.items() if m.scored)
#: scored against the baseline (need the baseline's frames)
REFERENCE: tuple[str, ...] = tuple(n for n, m in METRICS.items() if m.scored and m.reference)
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


def default_labels() -> dict[str, str]:
    return {n: m.label for n, m in METRICS.items()}


def records() -> dict[str, dict[str, Any]]:
    return {n: m.record() for n, m in METRICS.items()}


def with_random_tag(label: str, random_weights: bool) -> str:
    """`label` with the random-weights tag appended when the network had random weights."""
    return f"{label} {RANDOM_WEIGHTS_TAG}" if random_weights and not has_random_tag(label) else label


def has_random_tag(label: Any) -> bool:
    return RANDOM_WEIGHTS_TAG in str(label or "")
