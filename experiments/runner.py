"""The generation engine: one loaded pipeline, many generations with identical seeds and settings.

A baseline and every cached point of a (prompt, seed) share the generator seed, the prompt
and every pipeline keyword; the only difference is the cache enabled on the transformer
for the duration of that generation (enabled before, disabled in ``finally``, so points
never leak into each other or into baselines).

Timing protocol: a generation is one pipeline call, and that call is both the quality run
(its frames are kept) and the timed run. ``timing.warmup`` uncached calls run once per
engine (per worker), before its first generation; a newly compiled configuration is warmed
once by the compile step (``experiments.optimizations.applied``). :meth:`Engine.time_call`
times a configuration without keeping its frames: the sweep's item runner uses it to re-time
a baseline stored by an earlier session and for opt-in B C B C timing repeats.
``Engine.calls`` counts every pipeline call by purpose, so the cost is visible from outside.

Example::

    engine = Engine(spec)
    base = engine.generate(GenerationRequest(prompt="a fox", seed=0))
    fast = engine.generate(GenerationRequest(prompt="a fox", seed=0, method="first_block_cache",
                                             params={"threshold": 0.1}))
    print(base.summary()["e2e_s"], fast.summary()["compute_executed"])
"""

from __future__ import annotations

import contextlib
import inspect
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from experiments.instrumentation import CallRecord, Instrumentation
from experiments.methods import enable_cache, get_method


class GenerationFailed(RuntimeError):
    """A generation produced no usable output (e.g. NaN pixels); recorded as a failed point."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    seed: int
    method: str | None = None  # None: the uncached baseline
    params: dict[str, Any] = field(default_factory=dict)
    optimization: dict[str, Any] = field(default_factory=dict)
    calibration: tuple[float, ...] | None = None  # the method's calibrated field (MagCache ratios, TeaCache coefficients)


@dataclass
class GenerationResult:
    frames: np.ndarray  # uint8, [F, H, W, 3]; an image has F == 1
    kind: str  # "image" | "video"
    runs: list[CallRecord]  # the timed runs (one by default: the quality run itself; warm-ups are not here)
    peak_memory_bytes: int | None
    device: str
    repeats_identical: bool
    compile_s: float | None = None
    recompiles: int | None = None  # dynamo frames compiled after the first (warm) call
    optimization_info: dict[str, Any] = field(default_factory=dict)  # what experiments.optimizations.applied reported
    # paired timings against the adjacent baseline run of the same item on the same worker,
    # filled by the item runner (repro.executors.item): [{"baseline_e2e_s", "e2e_s", ...}, ...]
    pairs: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The median run's times and spreads over the timed repeats, plus compute counts (identical across repeats).

        Every part of the time (text encode, denoise loop, transformer, VAE decode, ...) comes from the same
        median run(s) as ``e2e_s`` (the middle run, or the two middle runs averaged for an even count), so the
        parts add up to ``e2e_s`` as they do within one run; medians taken part by part would not.
        """
        def stat(name: str) -> list[float]:
            return [getattr(r, name) for r in self.runs]

        e2e = stat("e2e_s")
        order = sorted(range(len(e2e)), key=e2e.__getitem__)
        middle = order[(len(e2e) - 1) // 2: len(e2e) // 2 + 1]

        def median_run(name: str) -> float:
            return statistics.fmean(getattr(self.runs[i], name) for i in middle)

        first = self.runs[0]
        return {
            "e2e_s": median_run("e2e_s"),
            "e2e_min_s": min(e2e),
            "e2e_max_s": max(e2e),
            "e2e_runs_s": e2e,
            "denoise_s": median_run("denoise_s"),
            "denoise_runs_s": stat("denoise_s"),
            "text_encode_s": median_run("text_encode_s"),
            "vae_decode_s": median_run("vae_decode_s"),
            "transformer_s": median_run("transformer_s"),
            "loop_overhead_s": median_run("loop_overhead_s"),
            "inter_step_gap_s": median_run("inter_step_gap_s"),
            "other_s": median_run("other_s"),
            "step_s": [statistics.median(s) for s in zip(*stat("step_s"))],
            "compute_executed": first.units_executed,
            "compute_possible": first.units_possible,
            "transformer_calls": first.transformer_calls,
            "step_computed": first.step_computed,
            # per CFG branch and step: computed or reused, and the signal the cache's rule used (the first run's)
            "decisions": first.decisions,
            # the cache's own statistics, where its library keeps them (cache-dit's), beside the project's counts
            "method_stats": first.method_stats,
            "peak_memory_bytes": self.peak_memory_bytes,
            "repeats_identical": self.repeats_identical,
            "compile_s": self.compile_s,
            "recompiles": self.recompiles,
            "optimization_info": self.optimization_info,
            "pairs": self.pairs,
        }


def pair(baseline: CallRecord, cached: CallRecord) -> dict[str, float]:
    """One paired timing: a baseline run and a cached run, adjacent on one worker."""
    return {"baseline_e2e_s": baseline.e2e_s, "baseline_denoise_s": baseline.denoise_s,
            "baseline_transformer_s": baseline.transformer_s, "e2e_s": cached.e2e_s, "denoise_s": cached.denoise_s}


def _no_progress_monitor() -> None:
    """Stop tqdm's monitor thread (started by the loading bars; it wakes every 10 s) and keep it from
    starting again: nothing beside a timed call, not even a progress bar's watchdog."""
    from tqdm import tqdm

    tqdm.monitor_interval = 0
    if tqdm.monitor is not None:
        tqdm.monitor.exit()
        tqdm.monitor = None


class Engine:
    """Owns one pipeline (loaded once, lazily) and generates with honest timing and counting."""

    def __init__(self, spec: Any, pipe: Any = None):
        from experiments.methods import load_plugins

        load_plugins(getattr(spec, "plugins", ()))  # methods from the user's code, before any lookup
        self.spec = spec
        self._pipe = pipe
        self._instr: Instrumentation | None = None
        self.loads = 0  # how many times a pipeline was loaded (the Ray executor checks it stays 1)
        self._own_transformers: dict[str, tuple[Any, dict[str, Any]]] = {}  # quantization value -> (transformer, info)
        self.transformer_loads = 0  # quantized transformers loaded: one per configuration, not per item
        # pipeline calls by purpose: warmup, generation, timing (re-times and repeats), compile_warmup, calibration
        self.calls: Counter[str] = Counter()
        self._warmed = False
        self.on_step: Callable[[int, int], None] | None = None
        #: entered around each timed call: what else of this machine's work must not run meanwhile is paused
        #: there (a sweep pauses its W&B tracker process)
        self.pause_background: Callable[[], Any] = contextlib.nullcontext
        self._kind = "image"

    # -- pipeline -----------------------------------------------------------------------------

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            from experiments.pipelines import load_pipeline

            self._pipe = load_pipeline(self.spec.model)
            self.loads += 1
            _no_progress_monitor()
        if self._instr is None:
            import torch

            self._instr = Instrumentation(self._pipe, torch.device(self._pipe.device))
            params = inspect.signature(type(self._pipe).__call__).parameters
            self._has_step_callback = "callback_on_step_end" in params
        return self._pipe

    @property
    def instrumentation(self) -> Instrumentation:
        self.pipe  # loads and instruments on first use
        return self._instr

    @property
    def device(self) -> str:
        return str(self.pipe.device)

    def family(self):
        from experiments.pipelines import family_of

        return family_of(self.spec.model, self.pipe)

    # -- generation ---------------------------------------------------------------------------

    def generate(self, request: GenerationRequest, timed_runs: int = 1) -> GenerationResult:
        """One generation: its first timed call is the quality run (``timed_runs`` > 1 adds back-to-back runs)."""
        pipe = self.pipe
        self.warm_up(request)
        with self.prepared(request) as compile_info:
            outputs, runs, peaks = [], [], []
            for i in range(timed_runs):
                frames, record, peak = self._timed_call(request, "generation" if i == 0 else "timing")
                outputs.append(frames)
                runs.append(record)
                peaks.append(peak)
        frames = outputs[0]
        identical = all(np.array_equal(frames, o) for o in outputs[1:])
        peak = max(peaks) if peaks and peaks[0] is not None else None
        return GenerationResult(
            frames=frames, kind=self._kind, runs=runs, peak_memory_bytes=peak,
            device=str(pipe.device), repeats_identical=identical, compile_s=compile_info.get("compile_s"),
            recompiles=compile_info.get("recompiles"), optimization_info=dict(compile_info),
        )

    @contextlib.contextmanager
    def prepared(self, request: GenerationRequest):
        """The request's cache and optimizations applied to the pipeline (undone on exit); yields the optimization info.

        A quantized configuration first swaps in its own transformer, so the cache and the other axes sit on it.
        """
        with self._own_transformer(request) as loaded, self._cache_enabled(request), self._optimized(request) as info:
            info.update(loaded)
            yield info

    def call(self, request: GenerationRequest) -> Any:
        """One untimed pipeline call with the request's seed and prompt (inside :meth:`prepared` for its cache)."""
        return self._call(request, "profile")

    def warm_up(self, request: GenerationRequest) -> None:
        """``timing.warmup`` uncached calls, once per engine (the first generation's prompt and seed)."""
        if self._warmed:
            return
        self._warmed = True
        for _ in range(self.spec.timing.warmup):
            self._call(GenerationRequest(prompt=request.prompt, seed=request.seed), "warmup")

    def time_call(self, request: GenerationRequest) -> CallRecord:
        """Time one call of `request`'s configuration (cache and optimizations on); its frames are not kept."""
        self.pipe
        self.warm_up(request)
        with self.prepared(request):
            _, record, _ = self._timed_call(request, "timing")
        return record

    def calibrate(self, method_name: str, items: list[tuple[str, int]],
                  params: dict[str, Any] | None = None) -> dict[str, list[float]]:
        """Calibrate a method over uncached generations of `items` (prompt, seed), through the same calls that
        generate; returns its values per CFG branch (MagCache ratios, TeaCache coefficients). `params`: the
        entry's calibration params (over the family's fixed params), e.g. TeaCache's mode and target."""
        method = get_method(method_name)
        if method.calibrate is None:
            raise ValueError(f"{method_name} has no calibration")
        pipe = self.pipe
        passes = [lambda p=p, s=s: self._call(GenerationRequest(prompt=p, seed=s), "calibration") for p, s in items]
        from experiments.families.adapters import adapted

        try:
            with adapted(pipe):  # what the family's pipeline does not give the hooks, as during generation
                values = method.calibrate(pipe.transformer, passes, self.spec.generation.num_inference_steps,
                                          {**self._family_extra(method_name), **(params or {})})
        except ValueError as exc:
            raise GenerationFailed(f"{method_name} calibration failed: {exc}") from None
        if not values:
            raise GenerationFailed(f"{method_name} calibration recorded nothing: the transformer has no hookable blocks")
        return values

    # -- internals ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _own_transformer(self, request: GenerationRequest):
        """The quantized transformer of the request's configuration: loaded on first use, kept, swapped in."""
        from experiments.optimizations.quantization import load_quantized, swapped, wants_own_transformer

        value = (request.optimization or {}).get("quantization")
        if not wants_own_transformer(value):
            yield {}
            return
        pipe, first = self.pipe, {}
        if value not in self._own_transformers:
            transformer, info = load_quantized(self.spec.model, pipe, value)
            first = {"quantized_load_s": info.pop("quantized_load_s")}
            self._own_transformers[value] = (transformer, info)
            self.transformer_loads += 1
        transformer, info = self._own_transformers[value]
        with swapped(pipe, transformer, on_swap=self._instr.use_transformer) as swap_info:
            yield {**info, **first, **swap_info}

    @contextlib.contextmanager
    def _cache_enabled(self, request: GenerationRequest):
        if request.method is None:
            yield
            return
        method = get_method(request.method)
        params = {**self._family_extra(request.method), **request.params}
        config = method.build_config(
            params, pipe=self.pipe, num_inference_steps=self.spec.generation.num_inference_steps,
            calibration=list(request.calibration) if request.calibration else None,
        )
        disable = enable_cache(self.pipe.transformer, config, pipe=self.pipe)
        try:
            yield
        finally:
            disable()

    @contextlib.contextmanager
    def _optimized(self, request: GenerationRequest):
        from experiments.optimizations import applied, is_default_optimization

        if is_default_optimization(request.optimization):
            yield {}
            return

        with applied(self.pipe, request.optimization, warm=lambda: self._call(request, "compile_warmup")) as info:
            yield info

    def _family_extra(self, method: str) -> dict[str, Any]:
        family = self.family()
        support = family.methods.get(method) if family else None
        return dict(support.extra) if support else {}

    def _kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        import torch

        kwargs = self.spec.generation.pipeline_kwargs()
        kwargs.update(prompt=request.prompt, output_type="np",
                      generator=torch.Generator("cpu").manual_seed(request.seed))
        if self._has_step_callback:
            kwargs["callback_on_step_end"] = self._step_end
        return kwargs

    def _step_end(self, pipe, step_index, timestep, callback_kwargs):
        self._instr.step_end_callback(pipe, step_index, timestep, callback_kwargs)
        if self.on_step is not None:
            self.on_step(step_index + 1, self.spec.generation.num_inference_steps)
        return {}

    def _call(self, request: GenerationRequest, purpose: str) -> Any:
        """One pipeline call; returns the pipeline's own output (converted outside the timed region)."""
        import torch

        self.calls[purpose] += 1
        # no explicit cache-state reset: the pipeline resets stateful hooks at the end of every call,
        # and a cache's hooks are created fresh when it is enabled
        with torch.inference_mode():
            return self.pipe(**self._kwargs(request))

    def _timed_call(self, request: GenerationRequest, purpose: str) -> tuple[np.ndarray, CallRecord, int | None]:
        import torch

        cuda = self.pipe.device.type == "cuda"
        # nothing else of ours runs meanwhile: scoring follows the item's timed calls, W&B's process is paused
        with self.pause_background():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = self._instr.start()
            try:
                result = self._call(request, purpose)
            finally:
                record = self._instr.stop(start)
            peak = torch.cuda.max_memory_allocated() if cuda else None
        return self._to_frames(result), record, peak

    def _to_frames(self, result: Any) -> np.ndarray:
        video = getattr(result, "frames", None)
        out = video if video is not None else result.images
        arr = np.asarray(out[0], dtype=np.float32)
        self._kind = "video" if video is not None else "image"
        if arr.ndim == 3:
            arr = arr[None]
        if not np.isfinite(arr).all():
            raise GenerationFailed(f"pipeline output has {int((~np.isfinite(arr)).sum())} non-finite values (NaN/inf)")
        return (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
