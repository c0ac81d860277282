"""Axis ``compile``: torch.compile of the transformer, ``regional`` (its repeated blocks) or ``full``.

Refused at validation when torch.compile cannot work here: dynamo unsupported on this Python, no C++
compiler for inductor's CPU backend (``g++``/``clang++`` or ``$CXX``) when the device is CPU, no
triton when the device is CUDA.

Apply (last of all axes, so it traces what the others installed, cache hooks included):

* ``regional``: diffusers' ``compile_repeated_blocks`` when the transformer declares
  ``_repeated_blocks``, else ``nn.Module.compile`` on every transformer block. Undo:
  ``_compiled_call_impl`` back to what it was (``None``).
* ``full``: ``torch.compile`` of the transformer's ``forward`` (the whole denoiser in one region,
  including the cache hooks on its blocks). Unlike ``transformer.compile()`` this leaves the
  module's torch forward hooks outside the compiled region, so the instrumentation's timers stay
  honest wall-clock/CUDA-event marks. Undo: the original ``forward``.

Both use ``fullgraph=False``: the caches decide skip/compute with ``.item()`` inside
``torch.compiler.disable`` functions, which is a graph break by design. Right after compiling,
``warm()`` runs once; its wall time (compilation plus one full generation) is ``compile_s``. On
exit ``torch._dynamo.reset()`` clears dynamo's in-memory caches (inductor's on-disk cache stays),
so every point compiles from the same state and variants never pile up to dynamo's recompile
limit (past it dynamo silently runs eager).

Counting under compile: the instrumentation's compute counters (``CountedForward``) increment
Python ints; traced by dynamo they would be specialised (guards on the count and on ``_active``:
a recompile per value) or, disabled, cost a graph break at every sublayer. While compiled, each
counter's ``count`` is routed through an opaque custom op (``repro_counters::count``, declared as
mutating a token tensor so it is never dead-code eliminated) that calls the original counter
eagerly every time the compiled code runs: exact counts, no guards on counter state, no graph
breaks. All counters share one op code, so all blocks still share one compiled graph.

Info filled in: ``compile_s``, ``recompiles`` (dynamo frames compiled after the first call, i.e.
during the runner's warm-ups and timed repeats; ideally 0; filled in on exit), ``graph_breaks`` and
``graphs`` (during the first call), ``recompile_limit_hits`` (dynamo gave up and ran eager),
``compiled_modules``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, Iterator

from experiments.optimizations.axis import Axis, register_axis
from experiments.optimizations.problems import one_line

MODES = ("full", "regional")
_COUNT_OP = "repro_counters::count"


def compile_problem(device: str) -> str | None:
    import torch

    try:
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            return "torch.compile (dynamo) is not supported on this Python/platform"
    except Exception as exc:
        return f"torch.compile is unavailable: {one_line(exc)}"
    if str(device) == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as exc:
            return f"inductor's CPU backend needs a C++ compiler (g++ or clang++, or set $CXX): {one_line(exc)}"
    elif str(device).startswith("cuda"):
        from torch.utils._triton import has_triton

        if not has_triton():
            return "inductor's CUDA backend needs triton (pip install triton)"
    return None



@contextlib.contextmanager
def compiled(transformer: Any, mode: str, warm: Callable[[], None], info: dict[str, Any]) -> Iterator[None]:
    """torch.compile (full or regional) with compile-transparent counters; warm() once, timed as compile_s."""
    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters

    frames0 = counters["frames"]["total"]
    graphs0 = counters["stats"]["unique_graphs"]
    breaks0 = sum(counters["graph_break"].values())
    limit_hits = _LimitHits()
    with contextlib.ExitStack() as stack:
        stack.callback(torch._dynamo.reset)  # last out: compiled code of this point never serves another
        stack.enter_context(limit_hits.installed())
        stack.enter_context(_compile_transparent_counters(transformer))
        if mode == "regional":
            stack.enter_context(_compiled_regions(transformer, info))
        elif mode == "full":
            stack.enter_context(_compiled_forward(transformer, info))
        else:
            raise ValueError(f"compile must be none, full or regional, got {mode!r}")
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()  # (offloaded weights may sit on meta)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        warm()
        if cuda:
            torch.cuda.synchronize()
        info["compile_s"] = time.perf_counter() - start
        frames1 = counters["frames"]["total"]
        info["graphs"] = counters["stats"]["unique_graphs"] - graphs0
        info["graph_breaks"] = sum(counters["graph_break"].values()) - breaks0
        info["compiled_frames"] = frames1 - frames0
        try:
            yield
        finally:
            info["recompiles"] = counters["frames"]["total"] - frames1
            info["recompile_limit_hits"] = limit_hits.count


@contextlib.contextmanager
def _compiled_regions(transformer: Any, info: dict[str, Any]) -> Iterator[None]:
    before = {m: m._compiled_call_impl for m in transformer.modules()}
    try:
        if getattr(transformer, "_repeated_blocks", None):
            transformer.compile_repeated_blocks(fullgraph=False)
        else:
            from experiments.instrumentation import _transformer_blocks

            blocks = _transformer_blocks(transformer)
            if not blocks:
                raise RuntimeError(f"regional compile: {type(transformer).__name__} declares no _repeated_blocks "
                                   "and has no transformer block list to compile; use compile: [full]")
            for block in blocks:
                block.compile(fullgraph=False)
        info["compiled_modules"] = sum(1 for m in transformer.modules() if m._compiled_call_impl is not before[m])
        yield
    finally:
        for module, impl in before.items():
            module._compiled_call_impl = impl


@contextlib.contextmanager
def _compiled_forward(transformer: Any, info: dict[str, Any]) -> Iterator[None]:
    import torch

    had = "forward" in transformer.__dict__
    previous = transformer.__dict__.get("forward")
    transformer.forward = torch.compile(transformer.forward, fullgraph=False)
    info["compiled_modules"] = 1
    try:
        yield
    finally:
        if had:
            transformer.forward = previous
        else:
            del transformer.forward


# -- counters under compile ------------------------------------------------------------------------

_CALLBACKS: dict[int, Callable[[], None]] = {}
_KIND_CODES: dict[str, int] = {}
_TOKEN: list[Any] = []


def _count_op() -> Any:
    """The opaque op that calls a counter eagerly from inside compiled code (registered once per process)."""
    import torch

    namespace, _, name = _COUNT_OP.partition("::")
    try:
        return getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        pass

    # "mutates" token: so it is never dead-code eliminated (explicit schema: this module's annotations are strings)
    @torch.library.custom_op(_COUNT_OP, mutates_args=("token",), schema="(Tensor(a!) token, int kind) -> ()")
    def count(token, kind):
        callback = _CALLBACKS.get(kind)
        if callback is not None:
            callback()

    return getattr(getattr(torch.ops, namespace), name)


@contextlib.contextmanager
def _compile_transparent_counters(transformer: Any) -> Iterator[None]:
    """Route every counter's `count` through the opaque op while compiled; restore on exit."""
    import torch

    counted = [m.__dict__["_repro_counted"] for m in transformer.modules() if "_repro_counted" in m.__dict__]
    if not counted:
        yield
        return
    op = _count_op()
    if not _TOKEN:
        _TOKEN.append(torch.zeros(1))
    token = _TOKEN[0]
    code = _KIND_CODES.setdefault("unit", len(_KIND_CODES))
    previous_callbacks = dict(_CALLBACKS)
    _CALLBACKS[code] = counted[0].count  # every counter of one Instrumentation shares its count
    saved = [(c, c.count) for c in counted]

    def count() -> None:
        op(token, code)

    for c in counted:
        c.count = count
    try:
        yield
    finally:
        for c, original in saved:
            c.count = original
        _CALLBACKS.clear()
        _CALLBACKS.update(previous_callbacks)


class _LimitHits(logging.Handler):
    """Counts dynamo's "hit config.recompile_limit" warnings (past the limit it silently runs eager)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return
        if "hit config.recompile_limit" in text or "hit config.cache_size_limit" in text:
            self.count += 1

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        logger = logging.getLogger("torch._dynamo.convert_frame")
        logger.addHandler(self)
        try:
            yield
        finally:
            logger.removeHandler(self)


def _apply(pipe: Any, value: Any, warm: Callable[[], None], info: dict) -> Any:
    return compiled(pipe.transformer, value, warm, info)


AXIS = register_axis(Axis(
    name="compile", default="none", check=lambda value, device, dtype="float32": compile_problem(device),
    apply=_apply, apply_rank=90, choices=("none", *MODES), doc="torch.compile of the transformer",
))
