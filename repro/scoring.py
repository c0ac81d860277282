"""Scoring generations in a run directory with the `metrics` package.

Reference metrics (LPIPS, PSNR, SSIM) compare a cached output with its quality baseline
(the unoptimized, uncached generation of the same prompt and seed); CLIP scores each
output against its prompt, so the baseline's own CLIP score is stored once under the
baseline and the change is taken at aggregation. Frames are always the lossless PNGs
(or, during a sweep, the very arrays those PNGs were written from).

During a sweep, scoring is off the critical path: a :class:`BackgroundScorer` thread (next to
the local engine, or inside each Ray worker, on its device) scores each generation as the
next one runs. Each baseline is prepared once (:meth:`metrics.Scorer.reference`: its frames
and LPIPS features), used for all its cached variants, and released when its item is done.
Results come back as :class:`ScoreResult` messages; only the sweep driver writes them.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from experiments.media import read_frames
from metrics.registry import ALONE, REFERENCE
from repro.store import Store


def build_scorer(metrics_spec: Any):
    """The metrics.Scorer a spec's ``metrics`` section asks for (raises WeightsMissing if weights are missing)."""
    import metrics

    s = metrics_spec
    return metrics.Scorer(
        names=tuple(s.names), device=s.device, batch_size=s.batch_size, lpips_net=s.lpips_net,
        clip_model=s.clip_model_id, clip_pretrained=s.clip_pretrained, allow_random_weights=s.allow_random_weights,
        protocol=s.scoring_protocol(),
    )


def wanted(metrics_spec: Any, scored_against: str | None) -> bool:
    """Whether a generation gets scores: reference metrics against its quality baseline, or metrics of
    the output alone (CLIP, VBench dimensions, ImageReward: metrics.registry.ALONE)."""
    if scored_against is None:
        return any(n in metrics_spec.names for n in ALONE)
    return any(n in metrics_spec.names for n in (*REFERENCE, *ALONE))


@dataclass
class ScoreResult:
    """The scores of one generation (``error`` set instead when scoring it failed)."""

    key: str
    reference_key: str | None
    scores: dict[str, Any]
    error: str | None = None


class BackgroundScorer:
    """Scores generations in a thread, in the order they were submitted; every submission gives one result.

    ``baseline(key, prompt, frames)`` prepares a reference (and CLIP-scores the baseline when
    `clip_baseline`); ``cached(key, reference_key, prompt, frames)`` scores against a prepared
    reference; ``release(key)`` drops a reference once its item is done. ``results()`` returns
    what has finished so far without waiting; ``finish()`` waits for the rest and stops the thread.
    """

    def __init__(self, metrics_spec: Any, scorer: Any = None, max_pending: int = 16, timing_lock: Any = None):
        self.spec = metrics_spec
        self.scorer = scorer if scorer is not None else build_scorer(metrics_spec)
        if timing_lock is not None:  # the engine's timed calls hold it: scoring works between them, chunk by chunk
            self.scorer.chunk_guard = lambda: timing_lock
        _stable_cuda_numerics(self.scorer.device)
        self.reference_names = tuple(n for n in metrics_spec.names if n in REFERENCE)
        self.alone_names = tuple(n for n in metrics_spec.names if n in ALONE)
        self._tasks: queue.Queue = queue.Queue(maxsize=max_pending)  # bounded: frames wait in memory
        self._done: queue.Queue = queue.Queue()
        self._refs: dict[str, Any] = {}
        self.busy_s = 0.0
        self._one_thread = str(self.scorer.device) == "cpu"
        if self._one_thread:
            import torch

            torch.get_num_threads()  # fixes this thread's own count first: the scoring thread sets only its own
        self._thread = threading.Thread(target=self._loop, name="repro-scoring", daemon=True)
        self._thread.start()

    def baseline(self, key: str, prompt: str, frames: np.ndarray, clip_baseline: bool = True) -> None:
        self._tasks.put(("baseline", key, None, prompt, frames, clip_baseline))

    def cached(self, key: str, reference_key: str, prompt: str, frames: np.ndarray) -> None:
        self._tasks.put(("cached", key, reference_key, prompt, frames, True))

    def release(self, key: str) -> None:
        self._tasks.put(("release", key, None, None, None, False))

    def results(self) -> list[ScoreResult]:
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def finish(self, wait: bool = True) -> list[ScoreResult]:
        """Stop the thread (after the submitted work when `wait`, else after the task in hand) and return the rest."""
        if not wait:
            self._drop_pending()
        self._tasks.put(None)
        self._thread.join()
        self.scorer.chunk_guard = contextlib.nullcontext  # the networks may be used in the foreground again
        return self.results()

    def _drop_pending(self) -> None:
        while True:
            try:
                self._tasks.get_nowait()
            except queue.Empty:
                return

    def _loop(self) -> None:
        import time

        if self._one_thread:
            import torch

            # One CPU thread for this thread's torch work (OpenMP's count is per thread): its own thread
            # team, idle between chunks, slowed every later demo generation 2.2x on 2 cores. NNPACK's pool
            # (LPIPS convolutions on CPU) is process-wide and keeps the size the main thread gave it.
            torch.set_num_threads(1)
        while True:
            task = self._tasks.get()
            if task is None:
                return
            kind, key, ref_key, prompt, frames, clip_baseline = task
            if kind == "release":
                self._refs.pop(key, None)
                continue
            t0 = time.perf_counter()
            try:
                result = self._score(kind, key, ref_key, prompt, frames, clip_baseline)
            except Exception as exc:  # a scoring problem must not lose the generation; `repro score` retries it
                result = ScoreResult(key, ref_key, {}, f"{type(exc).__name__}: {exc}")
            self.busy_s += time.perf_counter() - t0
            if result is not None:
                self._done.put(result)

    def _score(self, kind, key, ref_key, prompt, frames, clip_baseline) -> ScoreResult | None:
        if kind == "baseline":
            if self.reference_names:
                self._refs[key] = self.scorer.reference(frames)
            if not clip_baseline:
                return None  # a stored baseline prepared as a reference: already scored
            scores = self.scorer.score_alone(frames, prompt) if self.alone_names else {}
            return ScoreResult(key, None, scores)
        scores: dict[str, Any] = {}
        if self.reference_names:
            ref = self._refs.get(ref_key)
            if ref is None:
                raise LookupError(f"its baseline {ref_key} has no output to score against")
            pair = self.scorer.score_pair(frames, ref, prompt=None)
            key = self.spec.scoring_protocol().key  # stored per protocol, as RunScorer does
            scores.update({key(n): pair[n] for n in self.reference_names if n in pair})
        if self.alone_names:
            scores.update(self.scorer.score_alone(frames, prompt))
        return ScoreResult(key, ref_key, scores)


def _stable_cuda_numerics(device: Any) -> None:
    """Scoring on CUDA runs concurrently with generation, and metrics turn TF32 off while they run
    (metrics.device.full_precision): those flags are process-wide, so set them off for the whole
    sweep instead; generation numerics then never depend on when scoring happened to run."""
    if getattr(device, "type", str(device)) != "cuda":
        return
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


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
    def alone_names(self) -> tuple[str, ...]:
        """Requested metrics of each output alone (CLIP, VBench dimensions, ImageReward)."""
        return tuple(n for n in self.spec.names if n in ALONE)

    @property
    def scorer(self):
        if self._scorer is None:
            self._scorer = build_scorer(self.spec)
        return self._scorer

    def score_baseline(self, key: str, prompt: str, frames: np.ndarray | None = None) -> None:
        if not self.alone_names:
            return
        frames = frames if frames is not None else self._frames(key)
        self.store.put_scores(key, self.scorer.score_alone(frames, prompt), reference_key=None)

    def write(self, result: ScoreResult) -> None:
        """Store a background scorer's result (nothing when scoring failed: `score_missing` retries it)."""
        if result.error is None and result.scores:
            self.store.put_scores(result.key, result.scores, reference_key=result.reference_key)

    def score_cached(self, key: str, baseline_key: str, prompt: str, frames: np.ndarray | None = None,
                     baseline_frames: Any = None) -> dict[str, Any]:
        frames = frames if frames is not None else self._frames(key)
        baseline_frames = baseline_frames if baseline_frames is not None else self._frames(baseline_key)
        scores: dict[str, Any] = {}
        if self.reference_names:
            pair = self.scorer.score_pair(frames, baseline_frames, prompt=None)
            scores.update({self.protocol.key(n): pair[n] for n in self.reference_names if n in pair})
        if self.alone_names:
            scores.update(self.scorer.score_alone(frames, prompt))
        self.store.put_scores(key, scores, reference_key=baseline_key)
        return scores

    def score_missing(self, force: bool = False) -> int:
        """(Re)score every ok generation that lacks a requested metric; returns how many were scored."""
        from repro.run_dir import media_present

        done = {n: self.store.scored_keys(self.protocol.key(n)) for n in (*self.reference_names, *self.alone_names)}
        # only generations whose media still exist: a row without its frames is regenerated by the next sweep
        gens = {g["key"]: g for g in self.store.generations(status="ok") if media_present(self.store.run_dir, g)}
        count = 0
        reference: tuple[str, Any] | None = None  # the baseline last prepared: consecutive variants reuse it
        for g in sorted(gens.values(), key=lambda g: g.get("quality_baseline_key") or ""):
            if not g.get("quality_baseline_key"):  # an unoptimized baseline: only its CLIP score
                if self.alone_names and (force or any(g["key"] not in done[n] for n in self.alone_names)):
                    self.score_baseline(g["key"], g["prompt"])
                    count += 1
                continue
            wanted = [*self.reference_names, *self.alone_names]
            if not force and all(g["key"] in done[n] for n in wanted):
                continue
            ref = gens.get(g["quality_baseline_key"])
            if ref is None:
                continue  # its baseline failed or is not generated yet
            if self.reference_names and (reference is None or reference[0] != ref["key"]):
                reference = (ref["key"], self.scorer.reference(self._frames(ref["key"])))
            self.score_cached(g["key"], ref["key"], g["prompt"],
                              baseline_frames=reference[1] if self.reference_names else None)
            count += 1
        return count

    def _frames(self, key: str) -> np.ndarray:
        g = self.store.generation(key)
        if g is None or g["status"] != "ok":
            raise LookupError(f"generation {key} has no output to score")
        return read_frames(self.store.run_dir / g["media_dir"])
