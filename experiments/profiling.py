"""Where the host time of one generation's denoise loop goes (``repro profile``).

:func:`profile_generation` runs one request three ways on a loaded :class:`~experiments.runner.Engine`,
with the request's cache and optimizations applied once around all of them:

1. ``warmup`` plain calls (first-call effects: lazy init, compilation, allocator growth);
2. one *timed* call without the profiler: per-step host time, inter-step gaps and the pipeline call,
   from ``perf_counter`` marks at each transformer call and each step end (the CUDA device is
   synchronized only before and after the whole call, never inside the loop);
3. one *profiled* call under ``torch.profiler`` with Python stacks. Its times are inflated by the
   profiler's Python tracing, so it is read for counts and shares, never for the timings above:

   * **syncs**: ops that make the host wait for the device (``.item()``, ``bool(tensor)``,
     ``nonzero`` including boolean-mask indexing, ``torch.equal``, device-to-host copies, explicit
     ``cuda*Synchronize``), counted inside the denoise loop with the Python line that caused each.
     The line comes from a ``TorchFunctionMode`` that marks every call of a method that can sync
     (``item``, ``__bool__``, ``__getitem__``, ``cpu``, ``to``, ...) with its caller's file and line;
     any other sync (raised inside another op, e.g. ``linalg_solve``'s error check) is reported at the
     line of library or user code that called into torch above it (the profiler's ``CallFrom``).
     On a CPU run nothing waits: the list shows where a GPU run would block.
   * **top frames**: Python time per function of library or user code, where the time of torch's
     and the standard library's own Python (``nn.Module.__call__``, generators over modules, ...)
     is charged to the first frame outside them that called it; ranked by that Python time, which
     a faster GPU does not shrink. Calls and inclusive time per frame as well.
   * **hook cost**: the time spent in the code of the diffusers hooks installed on the transformer
     (the cache's own hook classes and diffusers' hook dispatch), i.e. everything except the block
     forwards the hooks call, per step and per hook file.
   * a Chrome trace (``chrome://tracing`` / Perfetto) of the profiled call.

Example::

    engine = Engine(spec)
    prof = profile_generation(engine, GenerationRequest(prompt="a fox", seed=0), trace_path=Path("t.json"))
    print(prof.summary()["host_step_ms"], prof.syncs)
"""

from __future__ import annotations

import bisect
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from torch.overrides import TorchFunctionMode

_STEP_END = "repro::step_end"
_CALL_START = "repro::transformer_start"
_CALL_END = "repro::transformer_end"
_LOOP_START = "repro::loop_start"
_SITE = "repro::site "
_THIS_FILE = os.path.normcase(os.path.abspath(__file__))

#: methods whose call can make the host wait for the device; their call sites are marked
SYNCING_METHODS = frozenset({
    "item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy", "cpu", "to", "nonzero", "argwhere",
    "where", "masked_select", "unique", "unique_consecutive", "repeat_interleave", "__getitem__", "__setitem__",
    "equal", "allclose", "_local_scalar_dense",
})
#: aten ops that block the host until the device has caught up, and what a user calls them
_SYNC_OPS = {
    "aten::item": ".item()", "aten::_local_scalar_dense": ".item()", "aten::is_nonzero": "bool(tensor)",
    "aten::nonzero": "nonzero", "aten::nonzero_numpy": "nonzero", "aten::equal": "torch.equal",
}
_RUNTIME_SYNCS = {"cudaStreamSynchronize": "cuda stream sync", "cudaDeviceSynchronize": "cuda device sync",
                  "cudaEventSynchronize": "cuda event sync", "cudaMemcpy": "blocking cudaMemcpy"}
_COPY_OPS = ("aten::copy_", "aten::_to_copy", "aten::to")


@dataclass
class StepTimes:
    """Host-side marks of one pipeline call (perf_counter seconds)."""

    calls: list[tuple[float, float]] = field(default_factory=list)  # transformer calls: (start, end)
    step_ends: list[tuple[float, int]] = field(default_factory=list)  # (time, transformer calls so far)
    call_s: float = 0.0
    loop_start: float | None = None  # the pipeline opened its progress bar (right before the loop)

    def steps(self) -> list[tuple[float, float, int, int]]:
        """(start, end, first call index, end call index) per denoising step; one call per step without callback."""
        ends = self.step_ends or [(end, i + 1) for i, (_, end) in enumerate(self.calls)]
        first = 0
        start = self.loop_start if self.loop_start is not None else self.calls[0][0] if self.calls else 0.0
        out = []
        for end, done in ends:
            out.append((start, end, first, done))
            start, first = end, done
        return out

    def step_host_s(self) -> list[float]:
        return [end - start for start, end, _, _ in self.steps()]

    def gaps_s(self) -> list[float]:
        """Last transformer call of a step to the first of the next (scheduler step, callback, loop overhead)."""
        out = []
        for (_, _, first, done), (_, _, nfirst, ndone) in zip(self.steps(), self.steps()[1:]):
            if done > first and ndone > nfirst:
                out.append(self.calls[nfirst][0] - self.calls[done - 1][1])
        return out


@dataclass
class GenerationProfile:
    request: dict[str, Any]
    device: str
    steps: int
    timed: StepTimes
    syncs: list[dict[str, Any]]  # grouped by (kind, site): count, steps, profiled ms
    syncs_outside_loop: int
    top_frames: list[dict[str, Any]]
    hook_ms_per_step: float | None  # None: no diffusers hook on the transformer
    hook_ms_by_file: dict[str, float]
    hook_ms_steps: list[float]
    function: dict[str, Any] | None  # the --function frame: calls, total ms (profiled)
    profiled_call_ms: float
    trace_path: str | None = None
    sites_marked: bool = True

    def summary(self) -> dict[str, Any]:
        step_ms = [1e3 * s for s in self.timed.step_host_s()]
        gaps = [1e3 * g for g in self.timed.gaps_s()]
        return {
            "request": self.request, "device": self.device, "steps": self.steps,
            "pipeline_call_ms": 1e3 * self.timed.call_s,
            "host_step_ms": step_ms,
            "host_step_ms_mean": sum(step_ms) / len(step_ms) if step_ms else None,
            "inter_step_gap_ms": gaps,
            "inter_step_gap_ms_mean": sum(gaps) / len(gaps) if gaps else None,
            "syncs_in_loop": sum(s["count"] for s in self.syncs),
            "syncs": self.syncs,
            "syncs_outside_loop": self.syncs_outside_loop,
            "top_frames": self.top_frames,
            "hook_ms_per_step": self.hook_ms_per_step,
            "hook_ms_by_file": self.hook_ms_by_file,
            "hook_ms_steps": self.hook_ms_steps,
            "function": self.function,
            "profiled_call_ms": self.profiled_call_ms,
            "trace": self.trace_path,
            "sync_sites_marked": self.sites_marked,
        }


def profile_generation(engine: Any, request: Any, *, warmup: int = 1, trace_path: Path | None = None,
                       function: str | None = None, top: int = 15) -> GenerationProfile:
    """Warm up, time one call, profile one call of `request` on `engine` (see the module docstring)."""
    from torch.profiler import ProfilerActivity, profile

    pipe = engine.pipe
    cuda = pipe.device.type == "cuda"
    with engine.prepared(request) as info:
        for _ in range(warmup):
            engine.call(request)
        with _marks(engine) as timed:
            _sync(cuda)
            start = time.perf_counter()
            engine.call(request)
            _sync(cuda)
            timed.call_s = time.perf_counter() - start
        hook_files = _hook_files(pipe.transformer)
        # compiled code under a TorchFunctionMode would be traced with it: mark sites only when eager
        mark_sites = not (info or {}).get("compiled_modules")
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with _marks(engine, annotate=True), profile(activities=activities, with_stack=True) as prof:
            with _SyncSites() if mark_sites else contextlib.nullcontext():
                engine.call(request)
            _sync(cuda)
    analysis = _analyse(_trace_events(prof, trace_path), hook_files, function, top)
    return GenerationProfile(
        request={"method": request.method, "params": dict(request.params),
                 "optimization": dict(request.optimization), "prompt": request.prompt, "seed": request.seed},
        device=str(pipe.device), steps=len(timed.steps()), timed=timed, trace_path=str(trace_path) if trace_path else None,
        sites_marked=mark_sites, **analysis,
    )


def _trace_events(prof: Any, trace_path: Path | None) -> list[dict]:
    """Write the Chrome trace (to `trace_path`, atomically, or a temporary file) and read its events back."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch) / "trace.json" if trace_path is None else Path(trace_path).with_name(
            f".tmp-{Path(trace_path).name}")
        try:
            prof.export_chrome_trace(str(tmp))
            with open(tmp) as fh:
                events = json.load(fh)["traceEvents"]
            if trace_path is not None:
                os.replace(tmp, trace_path)
        finally:
            if trace_path is not None and tmp.exists():
                tmp.unlink()
    return events


def _sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# Marks and call sites


@contextlib.contextmanager
def _marks(engine: Any, annotate: bool = False) -> Iterator[StepTimes]:
    """perf_counter marks at each transformer call and step end; zero-length profiler annotations too."""
    from torch.profiler import record_function

    times = StepTimes()
    transformer = engine.pipe.transformer

    def mark(name: str) -> None:
        if annotate:
            with record_function(name):
                pass

    def call_start(module, args):
        mark(_CALL_START)
        times.calls.append((time.perf_counter(), 0.0))

    def call_end(module, args, output):
        times.calls[-1] = (times.calls[-1][0], time.perf_counter())
        mark(_CALL_END)

    previous = engine.on_step

    def step_end(step: int, total: int) -> None:
        times.step_ends.append((time.perf_counter(), len(times.calls)))
        mark(_STEP_END)
        if previous is not None:
            previous(step, total)

    pipe = engine.pipe
    had_own_bar = "progress_bar" in pipe.__dict__
    progress_bar = pipe.progress_bar

    def loop_start(*args, **kwargs):  # pipelines open their progress bar right before the denoise loop
        if times.loop_start is None:
            times.loop_start = time.perf_counter()
            mark(_LOOP_START)
        return progress_bar(*args, **kwargs)

    handles = [transformer.register_forward_pre_hook(call_start), transformer.register_forward_hook(call_end)]
    engine.on_step = step_end
    pipe.progress_bar = loop_start
    try:
        yield times
    finally:
        engine.on_step = previous
        if had_own_bar:
            pipe.progress_bar = progress_bar
        else:
            del pipe.progress_bar
        for handle in handles:
            handle.remove()


class _SyncSites(TorchFunctionMode):
    """Marks each call of a method that can sync with the caller's file and line (a profiler annotation)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:  # no call here: each call would be one more profiler event per torch op
            name = func.__name__
        except AttributeError:
            name = ""
        if name not in SYNCING_METHODS:
            return func(*args, **kwargs)
        from torch.profiler import record_function

        frame = sys._getframe(1)
        while frame is not None and _internal_file(frame.f_code.co_filename):
            frame = frame.f_back
        where = f"{_short(frame.f_code.co_filename)}:{frame.f_lineno}" if frame is not None else "?"
        with record_function(f"{_SITE}{where} ({name})"):
            return func(*args, **kwargs)


def _internal_file(filename: str) -> bool:
    path = os.path.normcase(os.path.abspath(filename))
    return path == _THIS_FILE or _is_torch_or_stdlib(path) or filename.startswith("<")


def _is_torch_or_stdlib(path: str) -> bool:
    import torch

    torch_dir = os.path.dirname(os.path.normcase(torch.__file__)) + os.sep
    return path.startswith(torch_dir) or path.startswith(_STDLIB) and "site-packages" not in path


def _stdlib_dir() -> str:
    import sysconfig

    return os.path.normcase(sysconfig.get_paths()["stdlib"]) + os.sep


_STDLIB = _stdlib_dir()


def _short(filename: str) -> str:
    """A path relative to site-packages or the working directory, as the profiler names frames."""
    path = os.path.abspath(filename)
    marker = os.sep + "site-packages" + os.sep
    if marker in path:
        return path.split(marker, 1)[1]
    cwd = os.getcwd() + os.sep
    return path[len(cwd):] if path.startswith(cwd) else path


def _hook_files(transformer: Any) -> set[str]:
    """Source files of the diffusers hooks installed on `transformer`, plus diffusers' hook dispatch."""
    import inspect

    files = set()
    for module in transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        for hook in getattr(registry, "hooks", {}).values():
            try:
                files.add(_short(inspect.getfile(type(hook))))
            except (TypeError, OSError):
                continue
        if registry is not None and getattr(registry, "hooks", None):
            files.add(_short(inspect.getfile(type(registry))))
    return files


# ---------------------------------------------------------------------------------------------
# Reading the profiler's events (from the Chrome trace: far faster than ``prof.events()``)


def _frame_file(name: str) -> str | None:
    """'diffusers/hooks/first_block_cache.py(78): new_forward' -> 'diffusers/hooks/first_block_cache.py'."""
    head, sep, _ = name.partition("): ")
    if not sep or "(" not in head:
        return None
    return head.rsplit("(", 1)[0]


def _func_name(frame_name: str) -> str:
    return frame_name.rpartition("): ")[2]


_STDLIB_NAMES = frozenset(getattr(sys, "stdlib_module_names", ()))


def _frame_kind(name: str) -> str:
    """'user' (library or user code), 'internal' (torch, stdlib, builtins) or 'profiler' (this module)."""
    file = _frame_file(name)
    if file is None or name.startswith("<"):
        return "internal"
    if file.startswith("torch/") or file.split("/", 1)[0].removesuffix(".py") in _STDLIB_NAMES:
        return "internal"
    if file.endswith("experiments/profiling.py") or os.path.normcase(os.path.abspath(file)) == _THIS_FILE:
        return "profiler"
    return "user"


def _sync_kind(event: dict, dtoh: set) -> str | None:
    name, cat = event["name"], event.get("cat")
    if cat == "cpu_op":
        return _SYNC_OPS.get(name)
    if cat == "cuda_runtime":
        if name in _RUNTIME_SYNCS:
            return _RUNTIME_SYNCS[name]
        if event.get("args", {}).get("correlation") in dtoh:
            return "device-to-host copy"
    return None


def _analyse(trace_events: list[dict], hook_files: set[str], function: str | None, top: int) -> dict[str, Any]:
    marks = [e for e in trace_events if e.get("cat") == "user_annotation"
             and e["name"] in (_STEP_END, _CALL_START, _CALL_END, _LOOP_START)]
    if not any(e["name"] == _CALL_START for e in marks):
        raise RuntimeError("the profiled call never reached the transformer: nothing to profile")
    tid = marks[0]["tid"]
    dtoh = {e.get("args", {}).get("correlation") for e in trace_events
            if e.get("cat") == "gpu_memcpy" and ("DtoH" in e["name"] or "Device -> P" in e["name"])}
    events = sorted((e for e in trace_events if e.get("ph") == "X" and e.get("tid") == tid and "dur" in e),
                    key=lambda e: (e["ts"], -e["dur"]))
    by_name: dict[str, list[float]] = {}
    for e in marks:
        by_name.setdefault(e["name"], []).append(e["ts"])
    boundaries = sorted(by_name.get(_STEP_END) or by_name.get(_CALL_END, []))
    loop_start = min(by_name.get(_LOOP_START) or by_name[_CALL_START])
    loop_end = boundaries[-1]
    n_steps = len(boundaries)
    call_span = (events[0]["ts"], max(e["ts"] + e["dur"] for e in events)) if events else (0.0, 0.0)

    def step_of(ts: float) -> int | None:
        if ts < loop_start or ts > loop_end:
            return None
        return min(bisect.bisect_left(boundaries, ts), n_steps - 1)

    # one pass in start order: parent by time containment, then every per-event property from its parent's
    n = len(events)
    parent = [-1] * n
    child_us = [0.0] * n
    owner = [-1] * n  # index of the nearest library/user frame at or above; -2: inside this module
    site = [""] * n  # nearest marked call site above
    under_sync = [False] * n
    stack: list[int] = []
    eps = 1e-3
    frames: dict[str, dict[str, float]] = {}
    sync_groups: dict[tuple[str, str], dict[str, Any]] = {}
    outside = 0
    fn_calls, fn_us = 0, 0.0
    kinds = [None] * n
    for i, e in enumerate(events):
        ts, end = e["ts"], e["ts"] + e["dur"]
        while stack and events[stack[-1]]["ts"] + events[stack[-1]]["dur"] < end - eps:
            stack.pop()
        p = stack[-1] if stack else -1
        parent[i] = p
        if p >= 0:
            child_us[p] += e["dur"]
        stack.append(i)
        cat = e.get("cat")
        kind = _frame_kind(e["name"]) if cat == "python_function" else cat
        kinds[i] = kind
        owner[i] = i if kind == "user" else (owner[p] if p >= 0 else -1)  # this module's frames: transparent
        if cat == "user_annotation" and e["name"].startswith(_SITE):
            site[i] = e["name"][len(_SITE):]
        else:
            site[i] = site[p] if p >= 0 else ""
        sync = _sync_kind(e, dtoh)
        under_sync[i] = (p >= 0 and under_sync[p]) or sync is not None
        if sync and not (p >= 0 and under_sync[p]):
            step = step_of(ts)
            if step is None:
                outside += 1
            else:
                where = site[i] or _call_site(events, parent, kinds, i)
                group = sync_groups.setdefault((sync, where), {"kind": sync, "site": where, "count": 0, "steps": [],
                                                               "op": e["name"], "profiled_ms": 0.0})
                group["count"] += 1
                group["profiled_ms"] += e["dur"] / 1e3
                if step not in group["steps"]:
                    group["steps"].append(step)
        if function is not None and cat == "python_function" and _func_name(e["name"]) == function \
                and not _ancestor_named(events, parent, i):
            fn_calls += 1
            fn_us += e["dur"]
    hook_us = [0.0] * n_steps
    hook_by_file: dict[str, float] = {}
    for i, e in enumerate(events):
        if kinds[i] in ("user_annotation", "profiler") or owner[i] < 0:
            continue
        step = step_of(e["ts"])
        if step is None:
            continue
        o = events[owner[i]]
        stats = frames.setdefault(o["name"], {"calls": 0, "total_us": 0.0, "python_us": 0.0, "op_us": 0.0})
        if owner[i] == i:
            stats["calls"] += 1
            if not _ancestor_named(events, parent, i):
                stats["total_us"] += e["dur"]
        own = max(0.0, e["dur"] - child_us[i])
        stats["python_us" if kinds[i] in ("user", "internal") else "op_us"] += own
        file = _frame_file(o["name"])
        if file in hook_files:
            hook_us[step] += own
            hook_by_file[file] = hook_by_file.get(file, 0.0) + own
    ranked = sorted(frames.items(), key=lambda kv: -kv[1]["python_us"])[:top]
    return {
        "syncs": sorted(sync_groups.values(), key=lambda g: -g["count"]),
        "syncs_outside_loop": outside,
        "top_frames": [{"frame": name, "calls": int(s["calls"]), "python_ms": s["python_us"] / 1e3,
                        "op_ms": s["op_us"] / 1e3, "total_ms": s["total_us"] / 1e3} for name, s in ranked],
        "hook_ms_per_step": (sum(hook_us) / 1e3 / n_steps) if hook_files else None,
        "hook_ms_by_file": {f: us / 1e3 for f, us in sorted(hook_by_file.items(), key=lambda kv: -kv[1])},
        "hook_ms_steps": [us / 1e3 for us in hook_us] if hook_files else [],
        "function": {"name": function, "calls": fn_calls, "total_ms": fn_us / 1e3} if function else None,
        "profiled_call_ms": (call_span[1] - call_span[0]) / 1e3,
    }


def _ancestor_named(events: list[dict], parent: list[int], i: int) -> bool:
    name, p = events[i]["name"], parent[i]
    while p >= 0:
        if events[p]["name"] == name:
            return True
        p = parent[p]
    return False


def _call_site(events: list[dict], parent: list[int], kinds: list, i: int) -> str:
    """Where an unmarked sync happened: the line of library/user code that made the call above it."""
    p = parent[i]
    while p >= 0:
        frame = events[p]
        called_from = frame.get("args", {}).get("CallFrom") if kinds[p] not in ("cpu_op", "profiler") else None
        if called_from and _frame_kind(f"{called_from.rpartition(':')[0]}(0): x") == "user":
            return f"{called_from} ({_func_name(frame['name']) if kinds[p] == 'user' else _builtin(frame['name'])})"
        p = parent[p]
    return "(no Python frame outside torch)"


def _builtin(name: str) -> str:
    """'<built-in method item of Tensor object at 0x..>' -> 'item'."""
    words = name.strip("<>").split()
    return words[2] if len(words) > 2 and words[0] == "built-in" else name
