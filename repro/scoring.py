"""Scoring generations in a run directory with the `metrics` package.

Reference metrics (LPIPS, PSNR, SSIM) compare a cached output with its quality baseline
(the unoptimized, uncached generation of the same prompt and seed); CLIP scores each
output against its prompt, so the baseline's own CLIP score is stored once under the
baseline and the change is taken at aggregation. Frames are always the lossless PNGs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.media import read_frames
from metrics.registry import REFERENCE
from repro.store import Store


def build_scorer(metrics_spec: Any):
    """The metrics.Scorer a spec's ``metrics`` section asks for (raises WeightsMissing if weights are missing)."""
    import metrics

    s = metrics_spec
    return metrics.Scorer(
        names=tuple(s.names), device=s.device, batch_size=s.batch_size, lpips_net=s.lpips_net,
        clip_model=s.clip_model, clip_pretrained=s.clip_pretrained, allow_random_weights=s.allow_random_weights,
        protocol=s.scoring_protocol(),
    )


class RunScorer:
    """One metrics.Scorer per run (networks built once, or given), writing into the store."""

    def __init__(self, metrics_spec: Any, store: Store, scorer: Any = None):
        self.spec = metrics_spec
        self.store = store
        self._scorer = scorer
        # Scores are stored under their protocol's key ("psnr", "psnr@pooled_video", ...): a point
        # rescored under another protocol keeps both.
        self.protocol = metrics_spec.scoring_protocol()

    @property
    def reference_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.spec.names if n in REFERENCE)

    @property
    def wants_clip(self) -> bool:
        return "clip" in self.spec.names

    @property
    def scorer(self):
        if self._scorer is None:
            self._scorer = build_scorer(self.spec)
        return self._scorer

    def score_baseline(self, key: str, prompt: str, frames: np.ndarray | None = None) -> None:
        if not self.wants_clip:
            return
        frames = frames if frames is not None else self._frames(key)
        self.store.put_scores(key, {"clip": self.scorer.score_prompt(frames, prompt)}, reference_key=None)

    def score_cached(self, key: str, baseline_key: str, prompt: str, frames: np.ndarray | None = None,
                     baseline_frames: np.ndarray | None = None) -> dict[str, Any]:
        frames = frames if frames is not None else self._frames(key)
        baseline_frames = baseline_frames if baseline_frames is not None else self._frames(baseline_key)
        scores: dict[str, Any] = {}
        if self.reference_names:
            pair = self.scorer.score_pair(frames, baseline_frames, prompt=None)
            scores.update({self.protocol.key(n): pair[n] for n in self.reference_names if n in pair})
        if self.wants_clip:
            scores["clip"] = self.scorer.score_prompt(frames, prompt)
        self.store.put_scores(key, scores, reference_key=baseline_key)
        return scores

    def score_missing(self, force: bool = False) -> int:
        """(Re)score every ok generation that lacks a requested metric; returns how many were scored."""
        done = {n: self.store.scored_keys(self.protocol.key(n)) for n in (*self.reference_names, "clip")}
        gens = {g["key"]: g for g in self.store.generations(status="ok")}
        count = 0
        for g in gens.values():
            if not g.get("quality_baseline_key"):  # an unoptimized baseline: only its CLIP score
                if self.wants_clip and (force or g["key"] not in done["clip"]):
                    self.score_baseline(g["key"], g["prompt"])
                    count += 1
                continue
            wanted = [*self.reference_names, *(["clip"] if self.wants_clip else [])]
            if not force and all(g["key"] in done[n] for n in wanted):
                continue
            ref = gens.get(g["quality_baseline_key"])
            if ref is None:
                continue  # its baseline failed or is not generated yet
            self.score_cached(g["key"], ref["key"], g["prompt"])
            count += 1
        return count

    def _frames(self, key: str) -> np.ndarray:
        g = self.store.generation(key)
        if g is None or g["status"] != "ok":
            raise LookupError(f"generation {key} has no output to score")
        return read_frames(self.store.run_dir / g["media_dir"])
