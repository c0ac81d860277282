"""Counting and timing inside one pipeline call, installed once per loaded pipeline.

* **Compute counting.** The ``forward`` of every attention and feed-forward sublayer of the
  transformer blocks is wrapped in a counter (a plain callable, much cheaper than a diffusers
  hook). It is installed *before* any cache hook, so diffusers wraps it in turn and it sits
  innermost: work served from cache never reaches it. The compute fraction counts sublayers (attention + feed-forward), so caches
  that skip whole blocks (First Block Cache, MagCache) and caches that skip attention only
  (Pyramid Attention Broadcast, FasterCache, TaylorSeer) are measured on one scale; for
  block-skipping caches it equals the fraction of blocks executed.
* **Timing.** Marks at the text encoders, each transformer call, each step end and the VAE
  decode. On CUDA the marks are CUDA events read after one synchronize at the end of the
  call (no sync inside the loop); on CPU they are ``perf_counter`` readings.
* **Decisions.** What a cache decided at each call: one :class:`Decision` per CFG branch and
  step (computed or reused, the signal its rule measured, the value it compared with its
  threshold). A cache reports them with :func:`record_decision` while a call is recorded; the
  project's hooks and cache-dit's methods do so themselves, diffusers' caches are read from their
  hook state (``experiments.methods.diffusers_caches.decision_reader``), on every expert the
  cache runs on. One shape for every method; a library's own statistics (cache-dit's) are kept
  beside it (``CallRecord.method_stats``), never as a second record of the decisions.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import torch


# -- decisions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """One cache decision: at `step` (the branch's own call count) of CFG branch `branch` the transformer
    work was computed or reused.

    ``signal``: the per-call quantity the method's rule measured (TeaCache: relative L1 change of the
    modulated input; EasyCache: the predicted relative output change; MagCache: the step's magnitude
    ratio); ``accumulated``: the value the rule compared with its threshold. Both are None where the
    rule measured nothing (warm-up, forced steps, a follower branch) or the value is not observable
    (diffusers' First Block Cache keeps its difference to itself).
    """

    branch: str
    step: int
    computed: bool
    signal: float | None = None
    accumulated: float | None = None


DECISION_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Decision))

_active: list[Decision] | None = None  # the decisions of the call being recorded (one call at a time)


def record_decision(branch: str, step: int | None, computed: bool, signal: float | None = None,
                    accumulated: float | None = None) -> None:
    """Report one decision of the call being recorded (a no-op outside recorded calls: calibration, warm-ups).

    ``step`` None: the branch's decisions recorded so far in this call (for a cache whose own step count
    restarts on each transformer, as on Wan 2.2's two experts, or that keeps none)."""
    if _active is not None:
        if step is None:
            step = sum(d.branch == branch for d in _active)
        _active.append(Decision(branch, int(step), bool(computed), _number(signal), _number(accumulated)))


def decisions_table(decisions: list[Decision]) -> dict[str, list[Any]]:
    """Decisions as columns (one list per field of :class:`Decision`): compact JSON for the store."""
    rows = [asdict(d) for d in decisions]
    return {name: [r[name] for r in rows] for name in DECISION_FIELDS}


def decisions_from_table(table: dict[str, list[Any]] | None) -> list[Decision]:
    if not table:
        return []
    return [Decision(*values) for values in zip(*(table[name] for name in DECISION_FIELDS))]


def _number(value: Any) -> float | None:
    """A plain float for JSON; None stays None, and a NaN or infinity is kept: it is what the rule saw."""
    return None if value is None else float(value)



class CountedForward:
    """A module's ``forward`` that reports each call that really runs, then runs it.

    ``count`` is an attribute so compiled code can route it elsewhere (see
    ``experiments.optimizations``); ``__wrapped__`` keeps ``inspect.signature`` truthful.
    """

    def __init__(self, forward, count):
        self.forward = forward
        self.count = count
        self.__wrapped__ = forward

    def __call__(self, *args, **kwargs):
        self.count()
        return self.forward(*args, **kwargs)


class _Clock:
    """Marks on a timeline: CUDA events on GPU (read later), perf_counter on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start: Any, end: Any) -> float:
        if self.cuda:
            return start.elapsed_time(end) / 1000.0
        return end - start

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


@dataclass
class CallRecord:
    """Everything measured during one pipeline call."""

    e2e_s: float = 0.0
    denoise_s: float = 0.0
    text_encode_s: float = 0.0
    vae_decode_s: float = 0.0
    transformer_s: float = 0.0
    inter_step_gap_s: float = 0.0
    step_s: list[float] = field(default_factory=list)
    units_executed: int = 0  # attention + feed-forward sublayers inside the blocks
    units_possible: int = 0
    transformer_calls: int = 0
    step_computed: list[float] = field(default_factory=list)
    #: time inside the call covered by none of text encode, denoise loop, VAE decode (measured from the
    #: union of those intervals, so the four parts add up to e2e_s only if the phases do not overlap)
    other_s: float = 0.0
    #: what the enabled cache decided, per CFG branch and step (:func:`decisions_table`); None without a cache
    decisions: dict[str, list[Any]] | None = None
    #: the enabled cache's own statistics, where its library keeps them (cache-dit's ``cache_dit.summary``)
    method_stats: dict = field(default_factory=dict)

    @property
    def loop_overhead_s(self) -> float:
        """Denoise loop time outside the transformer calls: scheduler steps, guidance, step callbacks."""
        return self.denoise_s - self.transformer_s


class Instrumentation:
    """Installs counters and timers on a pipeline; `record()` wraps one pipeline call."""

    def __init__(self, pipe: Any, device: torch.device):
        self.pipe = pipe
        self.clock = _Clock(device)
        self.transformer = pipe.transformer
        self.blocks = _transformer_blocks(self.transformer)
        self.units = _compute_units(self.blocks)
        # a second expert the pipeline switches to (Wan 2.2's transformer_2): counted and timed like the first
        expert = getattr(pipe, "transformer_2", None)
        self.experts = [expert] if isinstance(expert, torch.nn.Module) else []
        self._units_of: dict[int, int] = {}  # id(transformer) -> its sublayers (one call's possible work)
        self._active = False
        self._handles: list[Any] = []  # text encoders
        self._transformer_handles: list[Any] = []
        self._counted: list[torch.nn.Module] = []  # every sublayer given a counter, on any transformer used
        self._original_decode = None
        self._reset()
        self.install()

    # -- installation -------------------------------------------------------------------------

    def install(self) -> None:
        self._install_transformer()
        for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
            encoder = getattr(self.pipe, name, None)
            if isinstance(encoder, torch.nn.Module):
                self._handles += [encoder.register_forward_pre_hook(self._text_start),
                                  encoder.register_forward_hook(self._text_end)]
        vae = getattr(self.pipe, "vae", None)
        if vae is not None and hasattr(vae, "decode") and not getattr(vae.decode, "_repro_timed", False):
            self._original_decode = vae.decode
            vae.decode = self._timed_decode(vae.decode)

    def _install_transformer(self) -> None:
        self._transformer_handles = []
        for transformer, units in [(self.transformer, self.units),
                                   *((e, _compute_units(_transformer_blocks(e))) for e in self.experts)]:
            self._units_of[id(transformer)] = len(units)
            for module in units:
                if not isinstance(module.__dict__.get("forward"), CountedForward):
                    module.forward = module._repro_counted = CountedForward(module.forward, self._count)
                    self._counted.append(module)
            self._transformer_handles += [transformer.register_forward_pre_hook(self._transformer_start),
                                          transformer.register_forward_hook(self._transformer_end)]

    def use_transformer(self, transformer: torch.nn.Module) -> None:
        """Count and time `transformer` from now on (another copy swapped into the pipeline, e.g. quantized)."""
        if transformer is self.transformer:
            return
        for handle in self._transformer_handles:
            handle.remove()
        self.transformer = transformer
        self.blocks = _transformer_blocks(transformer)
        self.units = _compute_units(self.blocks)
        self._install_transformer()

    def remove(self) -> None:
        """Take every counter and timer off the pipeline (it runs exactly as plain diffusers again)."""
        for module in self._counted:
            counted = module.__dict__.get("forward")
            if isinstance(counted, CountedForward):
                del module.forward  # back to the class's forward
                del module._repro_counted
        self._counted = []
        for handle in [*self._handles, *self._transformer_handles]:
            handle.remove()
        self._handles = self._transformer_handles = []
        if self._original_decode is not None:
            self.pipe.vae.decode = self._original_decode
            self._original_decode = None

    def _timed_decode(self, decode):
        def decode_timed(*args, **kwargs):
            if not self._active:
                return decode(*args, **kwargs)
            start = self.clock.mark()
            out = decode(*args, **kwargs)
            self._vae_spans.append((start, self.clock.mark()))
            return out

        decode_timed._repro_timed = True
        return decode_timed

    # -- hook callbacks -----------------------------------------------------------------------

    def _count(self) -> None:
        if self._active:
            self._units_in_call += 1

    def _transformer_start(self, module, args):
        if self._active:
            self._units_in_call = 0
            self._call_start = self.clock.mark()

    def _transformer_end(self, module, args, output):
        if self._active:
            end = self.clock.mark()
            self._calls.append((self._call_start, end, self._units_in_call, self._units_of[id(module)]))
            read = self._read_decision.get(id(module))
            if read is not None:
                read()

    def _text_start(self, module, args):
        if self._active:
            self._text_start_mark = self.clock.mark()

    def _text_end(self, module, args, output):
        if self._active:
            self._text_spans.append((self._text_start_mark, self.clock.mark()))

    def step_end_callback(self, pipe, step_index, timestep, callback_kwargs):
        """Pass as the pipeline's ``callback_on_step_end``: marks where each denoising step ends."""
        if self._active:
            self._step_ends.append((self.clock.mark(), len(self._calls)))
        return {}

    # -- recording ----------------------------------------------------------------------------

    def _reset(self) -> None:
        self._calls: list[tuple] = []
        self._step_ends: list[tuple] = []
        self._text_spans: list[tuple] = []
        self._vae_spans: list[tuple] = []
        self._units_in_call = 0
        self._decisions: list[Decision] = []
        self._read_decision: dict[int, Callable[[], None]] = {}  # id(transformer) -> its cache's decision reader

    def start(self) -> Any:
        global _active
        from experiments.methods.diffusers_caches import decision_reader

        self._reset()
        method = getattr(self.transformer, "_repro_cache_method", None)
        for transformer in (self.transformer, *self.experts):  # diffusers' caches: read after each call
            read = decision_reader(transformer, method)
            if read is not None:
                self._read_decision[id(transformer)] = read
        _active = self._decisions
        self._active = True
        return self.clock.mark()

    def stop(self, start_mark: Any) -> CallRecord:
        global _active
        end_mark = self.clock.mark()
        self._active = False
        _active = None
        self.clock.sync()
        sec = self.clock.seconds
        rec = CallRecord(e2e_s=sec(start_mark, end_mark))
        if self._decisions:
            rec.decisions = decisions_table(self._decisions)
        rec.text_encode_s = sum(sec(a, b) for a, b in self._text_spans)
        rec.vae_decode_s = sum(sec(a, b) for a, b in self._vae_spans)
        spans = [(sec(start_mark, a), sec(start_mark, b)) for a, b in (*self._text_spans, *self._vae_spans)]
        rec.transformer_calls = len(self._calls)
        rec.transformer_s = sum(sec(a, b) for a, b, *_ in self._calls)
        rec.units_executed = sum(c[2] for c in self._calls)
        rec.units_possible = sum(c[3] for c in self._calls)
        run = getattr(self.transformer, "_repro_cache_run", None)
        if run is not None and hasattr(run, "stats"):
            rec.method_stats = run.stats()
        if not self._calls:
            rec.other_s = rec.e2e_s - _union_length(spans)
            return rec
        # Steps: from the step-end callback when the pipeline has one, else one transformer call per step.
        ends = self._step_ends or [(c[1], i + 1) for i, c in enumerate(self._calls)]
        first_call = 0
        step_start = self._calls[0][0]
        for end, calls_done in ends:
            calls = self._calls[first_call:calls_done]
            if calls:
                possible = sum(c[3] for c in calls)
                rec.step_computed.append(sum(c[2] for c in calls) / possible if possible else 1.0)
            rec.step_s.append(sec(step_start, end))
            if calls_done < len(self._calls):
                next_start = self._calls[calls_done][0]
                last_end = self._calls[calls_done - 1][1] if calls_done else step_start
                rec.inter_step_gap_s += sec(last_end, next_start)
                step_start = next_start
            first_call = calls_done
        rec.denoise_s = sec(self._calls[0][0], ends[-1][0])
        spans.append((sec(start_mark, self._calls[0][0]), sec(start_mark, ends[-1][0])))
        rec.other_s = rec.e2e_s - _union_length(spans)
        return rec


def _union_length(spans: list[tuple[float, float]]) -> float:
    """Total length covered by the intervals (overlaps counted once)."""
    total, reach = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


def _transformer_blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    from experiments import diffusers_internals as di

    identifiers = di.transformer_block_identifiers()
    blocks = []
    for name, child in transformer.named_children():
        if name in identifiers and isinstance(child, torch.nn.ModuleList):
            blocks.extend(child)
    return blocks


def _compute_units(blocks: list[torch.nn.Module]) -> list[torch.nn.Module]:
    """Attention and feed-forward sublayers of the blocks; the blocks themselves if none are recognised."""
    from experiments import diffusers_internals as di

    kinds = di.sublayer_classes()
    found = [m for block in blocks for m in block.modules() if isinstance(m, kinds)]
    # a block without recognised sublayers still counts as one unit of work
    covered = {id(b) for b in blocks if any(isinstance(m, kinds) for m in b.modules())}
    return found + [b for b in blocks if id(b) not in covered]
