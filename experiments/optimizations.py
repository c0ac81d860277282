"""Optimization axes: torch.compile, attention backends, fp8 layerwise casting, offloading, VAE tiling.

A sweep crosses the cache grid with these axes (``optimizations:`` in a spec). Two entry points:

* :func:`check_available` runs at validation time (``repro validate`` / ``repro sweep``, from
  ``repro.plan.check_support``, before any model loads) and raises one :class:`SpecError` naming
  the option, the value and the reason for every value that cannot run on this machine.
* :func:`applied` is a context manager around one generation (``Engine.generate``): it applies the
  non-default options to the loaded pipeline, yields an info dict, and on exit undoes every change,
  so the next generation (another point, a baseline) runs the unoptimized pipeline bit for bit as
  before any optimization was applied.

What is refused where (``check_available``), and why:

* ``attention_backend``: a name that is not a value of diffusers' ``AttentionBackendName``; a backend
  whose package is missing (diffusers' own ``_check_attention_backend_requirements``: ``flash`` needs
  ``flash_attn``, ``sage`` needs ``sageattention``, ``*_hub`` need ``kernels``, ...); and a backend
  that fails a probe: diffusers' constraints for that backend plus one tiny attention call on the
  run's device in the transformer's dtype (e.g. ``_native_flash`` in float32, ``_native_cudnn`` or
  ``_native_efficient`` on CPU). Hub backends are not probed (that would download a kernel).
* ``layerwise_casting``: probed the same way (a Linear layer stored in fp8, upcast for its forward on
  the run's device). On CPU it works (torch 2.14: fp8 storage + upcast is supported; it saves memory,
  it is not faster), so it is allowed there; a device or torch build where the probe fails is refused.
* ``offload``: ``model``, ``sequential`` and ``group`` move weights between host memory and an
  accelerator; they are refused unless the run's device is CUDA (``model``/``sequential`` also need
  ``accelerate``).
* ``compile``: refused when torch.compile cannot work here: dynamo unsupported on this Python, no
  C++ compiler for inductor's CPU backend (``g++``/``clang++`` or ``$CXX``) when the device is CPU,
  no triton when the device is CUDA.

What :func:`applied` does (in this order; undone in reverse):

1. ``layerwise_casting``: ``transformer.enable_layerwise_casting(storage_dtype=fp8, compute_dtype=<the
   transformer's dtype>)``. Undo: the casting hooks are removed (diffusers itself refuses to undo
   them, so the hook's ``deinitalize_hook`` is bypassed) and every tensor that changed dtype gets its
   original values back from a copy kept on the CPU (an alias when the model is on the CPU) - fp8 is
   lossy, so casting back would not restore the weights.
2. ``attention_backend``: ``transformer.set_attention_backend(name)``; undo restores each processor's
   previous backend and diffusers' process-wide active backend (``native`` by default).
3. ``offload``: ``enable_model_cpu_offload`` / ``enable_sequential_cpu_offload`` /
   ``enable_group_offload(leaf_level, streams on CUDA)``; undo removes the hooks and moves every
   component back to the device it was on.
4. ``vae_tiling``: ``vae.enable_tiling()``; undo restores the previous ``use_tiling``.
5. ``compile`` (last, so it traces what the others installed, cache hooks included):

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

The info dict: ``compile_s`` (None without compile), ``recompiles`` (dynamo frames compiled after the
first call, i.e. during the runner's warm-ups and timed repeats; ideally 0; filled in on exit),
``graph_breaks`` and ``graphs`` (during the first call), ``recompile_limit_hits`` (dynamo gave up and
ran eager), ``compiled_modules``.

Example::

    with applied(pipe, {"compile": "regional", "attention_backend": "native"}, warm=lambda: pipe(prompt)) as info:
        image = pipe(prompt).images[0]
    print(info["compile_s"], info["recompiles"])
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import time
import warnings
from typing import Any, Callable, Iterator

from experiments.errors import SpecError

DEFAULTS: dict[str, Any] = {"compile": "none", "attention_backend": "native", "layerwise_casting": "none",
                            "offload": "none", "vae_tiling": False}
_COUNT_OP = "repro_counters::count"


# ---------------------------------------------------------------------------------------------
# Validation


def check_available(optimizations_spec: Any, device: str, dtype: str = "float32") -> None:
    """Raise SpecError (one line: option, value, reason) for the first value that cannot run on `device`.

    `optimizations_spec` is an OptimizationsSpec or a mapping of axis -> list of values; `dtype` is the
    transformer's dtype (attention backends such as flash need float16/bfloat16).
    """
    axes = optimizations_spec.axes() if hasattr(optimizations_spec, "axes") else dict(optimizations_spec)
    for axis, values in axes.items():
        for value in values:
            if value == DEFAULTS.get(axis):
                continue
            reason = _problem(axis, value, device, dtype)
            if reason and reason.startswith("is not"):
                raise SpecError(f"optimizations.{axis}: {value!r} {reason}")
            if reason:
                raise SpecError(f"optimizations.{axis}: {value!r} cannot run here (device {device}): {reason}")


def _problem(axis: str, value: Any, device: str, dtype: str) -> str | None:
    if axis == "attention_backend":
        return attention_backend_problem(value, device, dtype)
    if axis == "layerwise_casting":
        return layerwise_casting_problem(value, device, dtype)
    if axis == "offload":
        return offload_problem(value, device)
    if axis == "compile":
        return compile_problem(device)
    if axis == "vae_tiling":
        return None  # whether the VAE can tile is known only once it is loaded; enable_tiling says so then
    return f"is not an optimization axis; known: {', '.join(DEFAULTS)}"


def attention_backend_problem(name: str, device: str, dtype: str = "float32") -> str | None:
    import torch
    from diffusers.models import attention_dispatch as ad

    valid = sorted(b.value for b in ad.AttentionBackendName)
    if str(name).lower() not in valid:
        near = difflib.get_close_matches(str(name).lower(), valid, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return f"is not a diffusers attention backend{hint} Valid names: {', '.join(valid)}"
    backend = ad.AttentionBackendName(str(name).lower())
    try:
        ad._check_attention_backend_requirements(backend)
    except Exception as exc:  # diffusers raises RuntimeError naming the missing package
        return _one_line(exc)
    if backend.value.endswith("_hub"):
        return None  # probing would download the kernel; a missing kernel fails that generation instead
    try:
        q = torch.randn(1, 8, 2, 16, device=device, dtype=getattr(torch, dtype))
        kwargs = dict(query=q, key=q, value=q, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False, _parallel_config=None)
        for check in ad._AttentionBackendRegistry._constraints.get(backend, []):
            check(**kwargs)
        with warnings.catch_warnings():  # e.g. flex without compile: "unfused implementation" (fine for a probe)
            warnings.simplefilter("ignore")
            ad.dispatch_attention_fn(q, q, q, backend=backend)
    except Exception as exc:
        return f"a {dtype} attention call on {device} fails: {_one_line(exc)}"
    return None


def layerwise_casting_problem(storage: str, device: str, dtype: str = "float32") -> str | None:
    import torch

    storage_dtype = getattr(torch, storage, None)
    if not isinstance(storage_dtype, torch.dtype):
        return f"this torch ({torch.__version__}) has no dtype {storage}"
    try:
        from diffusers.hooks.layerwise_casting import apply_layerwise_casting_hook

        layer = torch.nn.Linear(16, 16).to(device=device, dtype=getattr(torch, dtype))
        apply_layerwise_casting_hook(layer, storage_dtype, getattr(torch, dtype), False)
        out = layer(torch.randn(2, 16, device=device, dtype=getattr(torch, dtype)))
        if not torch.isfinite(out).all():
            return f"a layer stored in {storage} gives non-finite output on {device}"
    except Exception as exc:
        return f"storing weights in {storage} and upcasting to {dtype} fails on {device}: {_one_line(exc)}"
    return None


def offload_problem(mode: str, device: str) -> str | None:
    if mode not in ("model", "sequential", "group"):
        return "is not an offload mode; expected one of none, model, sequential, group"
    if not str(device).startswith("cuda"):
        return ("CPU offloading moves weights between host memory and an accelerator; it needs CUDA "
                f"and this run's device is {device}")
    if mode in ("model", "sequential"):
        from diffusers.utils import is_accelerate_available

        if not is_accelerate_available():
            return f"enable_{mode}_cpu_offload needs the accelerate package (pip install accelerate)"
    return None


def compile_problem(device: str) -> str | None:
    import torch

    try:
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            return "torch.compile (dynamo) is not supported on this Python/platform"
    except Exception as exc:
        return f"torch.compile is unavailable: {_one_line(exc)}"
    if str(device) == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as exc:
            return f"inductor's CPU backend needs a C++ compiler (g++ or clang++, or set $CXX): {_one_line(exc)}"
    elif str(device).startswith("cuda"):
        from torch.utils._triton import has_triton

        if not has_triton():
            return "inductor's CUDA backend needs triton (pip install triton)"
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# ---------------------------------------------------------------------------------------------
# Applying and undoing


@contextlib.contextmanager
def applied(pipe: Any, optimization: dict[str, Any], warm: Callable[[], None]) -> Iterator[dict[str, Any]]:
    """Apply `optimization` to `pipe`, run `warm()` once after compiling, yield the info dict, undo on exit."""
    unknown = set(optimization) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown optimization axes {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
    opt = {**DEFAULTS, **{k: v for k, v in optimization.items() if v is not None}}
    info: dict[str, Any] = {"compile_s": None, "recompiles": None}
    transformer = pipe.transformer
    with contextlib.ExitStack() as stack:
        if opt["layerwise_casting"] != "none":
            stack.enter_context(layerwise_casting(transformer, opt["layerwise_casting"]))
        if str(opt["attention_backend"]).lower() != "native":
            stack.enter_context(attention_backend(transformer, opt["attention_backend"]))
        if opt["offload"] != "none":
            stack.enter_context(offloaded(pipe, opt["offload"]))
        if opt["vae_tiling"]:
            stack.enter_context(vae_tiling(pipe))
        if opt["compile"] != "none":
            stack.enter_context(compiled(transformer, opt["compile"], warm, info))
        yield info


@contextlib.contextmanager
def layerwise_casting(transformer: Any, storage: str) -> Iterator[None]:
    """fp8 storage, upcast per layer; undo restores the exact original tensors (kept on the CPU)."""
    import torch
    from diffusers.hooks.layerwise_casting import _LAYERWISE_CASTING_HOOK, _PEFT_AUTOCAST_DISABLE_HOOK

    if any(_hook(m, _LAYERWISE_CASTING_HOOK) for m in transformer.modules()):
        raise RuntimeError("layerwise casting is already enabled on this transformer; load it without it")
    originals = {name: (t.detach() if t.device.type == "cpu" else t.detach().to("cpu", copy=True))
                 for name, t in _named_tensors(transformer)}
    try:
        transformer.enable_layerwise_casting(storage_dtype=getattr(torch, storage), compute_dtype=transformer.dtype)
        originals = {n: t for n, t in originals.items() if _tensor(transformer, n).dtype != t.dtype}
        yield
    finally:
        for module in transformer.modules():
            for name in (_PEFT_AUTOCAST_DISABLE_HOOK, _LAYERWISE_CASTING_HOOK):
                hook = _hook(module, name)
                if hook is not None:
                    hook.deinitalize_hook = lambda m: m  # diffusers refuses: fp8 -> original is lossy; we restore below
                    module._diffusers_hook.remove_hook(name, recurse=False)
        for name, original in originals.items():
            tensor = _tensor(transformer, name)
            if tensor.dtype != original.dtype:
                tensor.data = original.to(tensor.device)


@contextlib.contextmanager
def attention_backend(transformer: Any, name: str) -> Iterator[None]:
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    active = _AttentionBackendRegistry._active_backend
    processors = [(p, p._attention_backend) for p in _processors(transformer)]
    try:
        with _quiet_diffusers():  # "Attention backends are an experimental feature" on every call
            transformer.set_attention_backend(str(name).lower())
        yield
    finally:
        for processor, backend in processors:
            processor._attention_backend = backend
        _AttentionBackendRegistry.set_active_backend(active)


@contextlib.contextmanager
def offloaded(pipe: Any, mode: str) -> Iterator[None]:
    """Model / sequential (accelerate) or group (diffusers) offloading to the pipeline's device; undone after."""
    import torch

    device = torch.device(pipe._execution_device if hasattr(pipe, "_execution_device") else pipe.device)
    modules = {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}
    placed = {k: _device_of(v) for k, v in modules.items()}
    own_forward = {m for v in modules.values() for m in v.modules() if "forward" in m.__dict__}
    try:
        if mode == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif mode == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        elif mode == "group":
            pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                      offload_type="leaf_level", use_stream=device.type == "cuda")
        else:
            raise ValueError(f"offload must be none, model, sequential or group, got {mode!r}")
        yield
    finally:
        if mode in ("model", "sequential"):
            pipe.remove_all_hooks()
        else:
            from diffusers.hooks.group_offloading import _GROUP_OFFLOADING, _LAZY_PREFETCH_GROUP_OFFLOADING

            for module in modules.values():
                for sub in module.modules():
                    for name in (_LAZY_PREFETCH_GROUP_OFFLOADING, _GROUP_OFFLOADING):
                        if _hook(sub, name) is not None:
                            sub._diffusers_hook.remove_hook(name, recurse=False)
        for name, module in modules.items():
            for sub in module.modules():
                if sub not in own_forward:  # removing a hook leaves the plain bound forward behind
                    _drop_plain_forward(sub)
            if placed[name] is not None:
                module.to(placed[name])


@contextlib.contextmanager
def vae_tiling(pipe: Any) -> Iterator[None]:
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling"):
        raise RuntimeError(f"{type(pipe).__name__} has no VAE with enable_tiling(); drop vae_tiling: [true]")
    before = getattr(vae, "use_tiling", False)
    vae.enable_tiling()
    try:
        yield
    finally:
        if not before:
            vae.disable_tiling()


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


# -- helpers ----------------------------------------------------------------------------------------


def _hook(module: Any, name: str) -> Any:
    registry = getattr(module, "_diffusers_hook", None)
    return registry.get_hook(name) if registry is not None else None


def _drop_plain_forward(module: Any) -> None:
    forward = module.__dict__.get("forward")
    if getattr(forward, "__self__", None) is module and getattr(forward, "__func__", None) is type(module).forward:
        del module.forward


def _named_tensors(module: Any) -> Iterator[tuple[str, Any]]:
    yield from module.named_parameters(remove_duplicate=False)
    yield from module.named_buffers(remove_duplicate=False)


def _tensor(root: Any, name: str) -> Any:
    owner_name, _, attr = name.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    return owner._parameters[attr] if attr in owner._parameters else owner._buffers[attr]


def _processors(transformer: Any) -> list[Any]:
    seen, out = set(), []
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_attention_backend") and id(processor) not in seen:
            seen.add(id(processor))
            out.append(processor)
    return out


def _device_of(module: Any) -> Any:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return None


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        yield
    finally:
        dlogging.set_verbosity(level)
