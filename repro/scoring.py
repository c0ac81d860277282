"""Scoring generations with the `metrics` package: what a generation needs, and the one path that scores it.

Reference metrics (LPIPS, PSNR, SSIM, temporal errors: ``metrics.registry.REFERENCE``) compare a
generation with its quality baseline (the unoptimized, uncached generation of the same prompt and
seed); metrics of an output alone (CLIP against its prompt, VBench's dimensions, ImageReward:
``metrics.registry.ALONE``) score every output, so the baseline's own value is stored once under the
baseline and the change is taken at aggregation. Frames are the lossless media, or during a sweep the very
arrays they were written from.

Scoring never overlaps a timed call. A sweep scores an item once its timed generations are done,
in the process that generated them (``repro.executors.item``): the baseline is prepared once (its
frames and network features, :meth:`metrics.Scorer.reference`) for all its variants. `repro score`,
and a sweep at its end, fill in whatever is still missing (:func:`score_missing`) through the same
:meth:`Scoring.score_item`. Only the sweep driver (or `repro score`) writes scores into the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Iterable

import numpy as np

from metrics.registry import ALONE, REFERENCE


def build_scorer(metrics_spec: Any):
    """The metrics.Scorer a spec's ``metrics`` section asks for (raises WeightsMissing if weights are missing)."""
    import metrics

    s = metrics_spec
    return metrics.Scorer(
        names=tuple(s.names), device=s.device, batch_size=s.batch_size, lpips_net=s.lpips_net,
        clip_model=s.clip_model_id, clip_pretrained=s.clip_pretrained, allow_random_weights=s.allow_random_weights,
        protocol=s.scoring_protocol(),
    )


def needed(metrics_spec: Any, quality_baseline_key: str | None, stored: Collection[str] = ()) -> tuple[str, ...]:
    """The store keys of the metrics a generation still lacks (the one definition of "needs scoring").

    A generation with a quality baseline gets the requested reference metrics (stored under their
    protocol's key, e.g. ``psnr@pooled_video``: a rescore under another protocol keeps both); every
    generation gets the requested metrics of an output alone. ``stored``: the keys it already has.
    """
    key = metrics_spec.scoring_protocol().key
    wanted = [key(n) for n in metrics_spec.names if n in REFERENCE] if quality_baseline_key else []
    wanted += [n for n in metrics_spec.names if n in ALONE]
    return tuple(k for k in wanted if k not in stored)


@dataclass
class Output:
    """One generation to score: its key, prompt, frames and quality baseline (None for a reference)."""

    key: str
    prompt: str
    frames: Any  # np.ndarray [F, H, W, 3] uint8, or a callable that reads them (loaded only when needed)
    quality_baseline_key: str | None
    stored: Collection[str] = ()  # metric keys it already has


def _pixels(frames: Any) -> np.ndarray:
    return frames() if callable(frames) else frames


@dataclass
class ScoreResult:
    """The scores of one generation (``error`` set instead when scoring it failed)."""

    key: str
    reference_key: str | None
    scores: dict[str, Any]
    error: str | None = None


class Scoring:
    """Scores generations with one metrics.Scorer (its networks built once, on first use, or given)."""

    def __init__(self, metrics_spec: Any, scorer: Any = None):
        self.spec = metrics_spec
        self._scorer = scorer
        self.protocol = metrics_spec.scoring_protocol()

    @property
    def scorer(self):
        if self._scorer is None:
            self._scorer = build_scorer(self.spec)
        return self._scorer

    def score_item(self, outputs: Iterable[Output], baselines: dict[str, Any] | None = None,
                   force: bool = False) -> list[ScoreResult]:
        """Score each output that needs it (all requested metrics with `force`), in order.

        A reference metric compares an output with its quality baseline: an earlier output of the same call,
        or ``baselines[key]`` (frames, or a callable reading them). Each baseline is prepared once. One output
        that cannot be scored gets an ``error`` and the others are still scored.
        """
        baselines = dict(baselines or {})
        prepared: dict[str, Any] = {}
        results = []
        for out in outputs:
            names = needed(self.spec, out.quality_baseline_key, () if force else out.stored)
            if out.quality_baseline_key is None:
                baselines[out.key] = out.frames  # the reference of the variants that follow
            if not names:
                continue
            try:
                frames = _pixels(out.frames)
                scores: dict[str, Any] = {}
                reference = [n for n in self.spec.names if n in REFERENCE and self.protocol.key(n) in names]
                if reference:
                    ref = prepared.get(out.quality_baseline_key)
                    if ref is None:
                        source = baselines.get(out.quality_baseline_key)
                        if source is None:
                            raise LookupError(f"its baseline {out.quality_baseline_key} has no output to score against")
                        ref = prepared[out.quality_baseline_key] = self.scorer.reference(_pixels(source))
                    pair = self.scorer.score_pair(frames, ref, prompt=None)
                    scores.update({self.protocol.key(n): pair[n] for n in reference if n in pair})
                if any(n in ALONE for n in names):
                    alone = self.scorer.score_alone(frames, out.prompt)
                    scores.update({n: v for n, v in alone.items() if n in names})
                results.append(ScoreResult(out.key, out.quality_baseline_key, scores))
            except Exception as exc:  # a scoring problem must not lose the generation; `repro score` retries it
                results.append(ScoreResult(out.key, out.quality_baseline_key, {}, f"{type(exc).__name__}: {exc}"))
        return results


def write(store: Any, result: ScoreResult) -> None:
    """Store one generation's scores, or its scoring error (cleared by a later successful scoring)."""
    store.put_scores(result.key, result.scores, reference_key=result.reference_key, error=result.error)


def unscored(store: Any, metrics_spec: Any) -> bool:
    """Whether an ok generation with media lacks a requested metric (cheap: no rows decoded, no frames read)."""
    have = store.score_keys()
    return any(needed(metrics_spec, g["quality_baseline_key"], have.get(g["key"], ()))
               for g in store.generation_states() if g["status"] == "ok" and g["media_dir"])


def score_missing(store: Any, scoring: Scoring, force: bool = False) -> tuple[int, list[ScoreResult]]:
    """(Re)score every ok generation of the store that lacks a requested metric; returns how many were scored
    and the results of those that could not be (their errors are stored too).

    Generations are taken baseline by baseline, so each baseline is read and prepared once. Only generations
    whose media still exist: a row without its frames is generated again by the next sweep.
    """
    from experiments.media import read_frames
    from repro.run_dir import media_present

    if not force and not unscored(store, scoring.spec):
        return 0, []  # nothing missing (a finished re-run): no networks built
    have = store.score_keys()
    gens = {g["key"]: g for g in store.generations(status="ok") if media_present(store.run_dir, g)}

    def reader(g: dict[str, Any]):
        return lambda: read_frames(store.run_dir / g["media_dir"])

    by_baseline: dict[str | None, list[Output]] = {}
    for g in gens.values():
        baseline_key, stored = g.get("quality_baseline_key"), have.get(g["key"], ())
        if force or needed(scoring.spec, baseline_key, stored):
            by_baseline.setdefault(baseline_key, []).append(Output(g["key"], g["prompt"], reader(g), baseline_key,
                                                                   stored))
    count, failed = 0, []
    for baseline_key, group in sorted(by_baseline.items(), key=lambda kv: kv[0] or ""):
        base = gens.get(baseline_key) if baseline_key else None
        if baseline_key and base is None:
            continue  # its baseline failed, lost its media or is not generated yet
        for result in scoring.score_item(group, {baseline_key: reader(base)} if base else {}, force=force):
            write(store, result)
            count += result.error is None
            failed += [result] if result.error else []
    return count, failed
