"""Axis ``quantization``: the transformer loaded with a diffusers quantization config.

Values: ``none`` (default); torchao ``torchao_int8wo`` (int8 weight-only), ``torchao_int8dq`` (int8
dynamic activations + int8 weights), ``torchao_float8wo``, ``torchao_float8dq``, ``torchao_int4wo``;
bitsandbytes ``bnb_int8``, ``bnb_nf4``, ``bnb_fp4``; and a pre-quantized GGUF checkpoint of the
transformer, ``gguf:PATH`` or ``gguf_<type>:PATH`` (e.g. ``gguf_q8_0:ckpt/wan-Q8_0.gguf``: the file
must then hold tensors of that GGML type).

Applied the way diffusers does it, at load time: ``<TransformerClass>.from_pretrained(source,
subfolder="transformer", quantization_config=TorchAoConfig(Int8WeightOnlyConfig()) |
BitsAndBytesConfig(...))``, or ``from_single_file(PATH, quantization_config=GGUFQuantizationConfig(
compute_dtype=...), config=source)`` for GGUF. The source is ``model.path`` or ``model.id`` (with its
revision); a transformer built in code (the tiny twins) is saved once to a temporary folder and
loaded back from it through the same call.

A quantized configuration runs on its own transformer: the engine loads it once per worker (the
first generation that asks for it) and keeps it; for each of its generations it is swapped into
the pipeline before the cache is enabled, so cache hooks and the other axes sit on it, and swapped
back afterwards (:func:`swapped`). On CUDA the idle transformer waits on the CPU, so a generation's
peak memory is that of its own configuration (bitsandbytes 8-bit cannot move; it then stays and
``info["other_transformer_resident"]`` says so). Those moves happen around each generation, outside
its timed call: they cost sweep time on a large model, not measured speed. The plan scores every quantized generation against
the unquantized, uncached baseline and times it against the quantized baseline.

``check`` (validation, before a model loads) refuses: an unknown value; torchao or bitsandbytes or
gguf not installed; torchao older than diffusers needs (0.15); bitsandbytes on a device that is not
CUDA; a torchao config that fails a probe on the run's device and dtype (a 256x256 Linear quantized
with it must change type and give finite output: e.g. ``torchao_int4wo`` on CPU); a GGUF file that
is not there, not GGUF, or lacks the named type.

The info dict gains ``quantization``, ``quantized_layers``, ``transformer_bytes`` (the weights'
storage as held, the quantized tensors' inner data summed), ``unquantized_transformer_bytes`` and
``quantized_load_s`` (the one load, on the generation that made it).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from experiments.optimizations.axis import Axis, register_axis

DEFAULT = "none"
_TORCHAO = {  # value -> torchao.quantization config class
    "torchao_int8wo": "Int8WeightOnlyConfig",
    "torchao_int8dq": "Int8DynamicActivationInt8WeightConfig",
    "torchao_float8wo": "Float8WeightOnlyConfig",
    "torchao_float8dq": "Float8DynamicActivationFloat8WeightConfig",
    "torchao_int4wo": "Int4WeightOnlyConfig",
}
_BNB = {  # value -> BitsAndBytesConfig keyword arguments (compute dtype added at load)
    "bnb_int8": {"load_in_8bit": True},
    "bnb_nf4": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
    "bnb_fp4": {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"},
}
NAMES = (DEFAULT, *_TORCHAO, *_BNB)
TORCHAO_MIN = "0.15.0"  # diffusers' TorchAoConfig refuses older releases


def wants_own_transformer(value: Any) -> bool:
    return value is not None and str(value).lower() != DEFAULT


# ---------------------------------------------------------------------------------------------
# Validation


def quantization_problem(value: Any, device: str, dtype: str = "float32") -> str | None:
    text = str(value)
    if text.lower().startswith("gguf"):
        return _gguf_problem(text)
    name = text.lower()
    if name in _BNB:
        if not str(device).startswith("cuda"):
            return f"bitsandbytes' 8-bit and 4-bit layers need CUDA and this run's device is {device}"
        if importlib.util.find_spec("bitsandbytes") is None:
            return "needs the bitsandbytes package (pip install bitsandbytes)"
        return None
    if name in _TORCHAO:
        return _torchao_problem(name, device, dtype)
    near = difflib.get_close_matches(name, NAMES, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return (f"is not a quantization{hint} Known: {', '.join(NAMES)}, gguf:PATH or gguf_<type>:PATH "
            "(a GGUF file of the transformer)")


def _torchao_problem(name: str, device: str, dtype: str) -> str | None:
    if importlib.util.find_spec("torchao") is None:
        return ("needs the torchao package (pip install 'diffusion-cache-repro[quantization]' or "
                f"pip install 'torchao>={TORCHAO_MIN}')")
    from importlib.metadata import version

    from packaging.version import Version

    if Version(version("torchao")) < Version(TORCHAO_MIN):
        return f"diffusers needs torchao >= {TORCHAO_MIN}; installed: {version('torchao')} (pip install -U torchao)"
    import torch

    try:
        from torchao.quantization import quantize_

        layer = torch.nn.Sequential(torch.nn.Linear(256, 256)).to(device=device, dtype=getattr(torch, dtype))
        quantize_(layer, _torchao_config(name))
        if not _is_quantized(layer[0]):
            return f"torchao's {_TORCHAO[name]} leaves a {dtype} Linear on {device} unquantized"
        out = layer(torch.randn(4, 256, device=device, dtype=getattr(torch, dtype)))
        if not torch.isfinite(out).all():
            return f"a Linear quantized with torchao's {_TORCHAO[name]} gives non-finite output on {device}"
    except Exception as exc:
        return f"torchao's {_TORCHAO[name]} fails on a {dtype} Linear on {device}: {_one_line(exc)}"
    return None


def parse_gguf(value: str) -> tuple[str | None, Path]:
    """'gguf_q8_0:path.gguf' -> ('Q8_0', path); 'gguf:path.gguf' -> (None, path)."""
    head, sep, path = value.partition(":")
    if not sep or not path or head.lower() not in ("gguf",) and not head.lower().startswith("gguf_"):
        raise ValueError(value)
    qtype = head[len("gguf_"):].upper() if head.lower().startswith("gguf_") else None
    return qtype, Path(path).expanduser()


def _gguf_problem(value: str) -> str | None:
    try:
        qtype, path = parse_gguf(value)
    except ValueError:
        return "is not a quantization; a GGUF checkpoint is given as gguf:PATH or gguf_<type>:PATH (e.g. gguf_q8_0:wan-Q8_0.gguf)"
    if importlib.util.find_spec("gguf") is None:
        return "loading a GGUF checkpoint needs the gguf package (pip install gguf)"
    if not path.is_file():
        return f"GGUF file not found: {path}"
    try:
        types = gguf_tensor_types(path)
    except Exception as exc:
        return f"{path} is not a readable GGUF file: {_one_line(exc)}"
    if qtype is not None and qtype not in types:
        return f"{path} holds no {qtype} tensors (it holds {', '.join(sorted(types)) or 'none'})"
    return None


def gguf_tensor_types(path: Path) -> set[str]:
    from gguf import GGUFReader

    return {t.tensor_type.name for t in GGUFReader(str(path)).tensors}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# ---------------------------------------------------------------------------------------------
# Loading and swapping


def quantization_config(value: str, dtype: Any) -> Any:
    """The diffusers quantization config of `value` for a transformer computing in `dtype`."""
    import diffusers

    name = str(value).lower()
    if name in _TORCHAO:
        return diffusers.TorchAoConfig(_torchao_config(name))
    if name in _BNB:
        extra = {"bnb_4bit_compute_dtype": dtype} if "load_in_4bit" in _BNB[name] else {}
        return diffusers.BitsAndBytesConfig(**_BNB[name], **extra)
    if name.startswith("gguf"):
        return diffusers.GGUFQuantizationConfig(compute_dtype=dtype)
    raise ValueError(f"quantization {value!r} is not one of {', '.join(NAMES)}, gguf:PATH, gguf_<type>:PATH")


def _torchao_config(name: str) -> Any:
    import torchao.quantization as tq

    return getattr(tq, _TORCHAO[name])()


def load_quantized(model: Any, pipe: Any, value: str) -> tuple[Any, dict[str, Any]]:
    """Load the pipeline's transformer again, quantized as `value`; returns it and what the load measured."""
    import torch

    from experiments.pipelines import _dtype_kwarg

    current = pipe.transformer
    cls, dtype, device = type(current), current.dtype, pipe.device
    kwargs: dict[str, Any] = {_dtype_kwarg(): dtype, "quantization_config": quantization_config(value, dtype)}
    start = time.perf_counter()
    with _transformer_source(model, current) as (source, source_kwargs):
        if str(value).lower().startswith("gguf"):
            _, path = parse_gguf(str(value))
            transformer = cls.from_single_file(str(path), config=source, **source_kwargs, **kwargs)
        else:
            transformer = cls.from_pretrained(source, **source_kwargs, **kwargs)
    if str(value).lower() not in _BNB:  # bitsandbytes places its layers itself and refuses .to() for 8-bit
        transformer.to(device)
    transformer.eval()
    layers = sum(1 for m in transformer.modules() if isinstance(getattr(m, "weight", None), torch.Tensor)
                 and _is_quantized(m))
    if layers == 0:
        raise RuntimeError(f"quantization {value!r} left every layer of {cls.__name__} unquantized")
    info = {"quantization": str(value), "quantized_layers": layers, "transformer_bytes": weight_bytes(transformer),
            "unquantized_transformer_bytes": weight_bytes(current), "quantized_load_s": time.perf_counter() - start}
    return transformer, info


@contextlib.contextmanager
def _transformer_source(model: Any, current: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Where diffusers loads the transformer from: the model's folder or hub id, else a saved copy."""
    if getattr(model, "path", None):
        yield str(model.path), {"subfolder": "transformer", "local_files_only": True}
    elif getattr(model, "id", None):
        yield model.id, {"subfolder": "transformer", **({"revision": model.revision} if model.revision else {})}
    else:  # built in code: save it once so the quantized copy comes through diffusers' own loading
        with tempfile.TemporaryDirectory(prefix="repro-quantize-") as folder:
            current.save_pretrained(folder)
            yield folder, {}


def _is_quantized(module: Any) -> bool:
    """A layer whose weight is held quantized: a tensor subclass (torchao, bnb, GGUF) or integer storage."""
    import torch

    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return False
    return type(weight) not in (torch.Tensor, torch.nn.Parameter) or not weight.dtype.is_floating_point


def weight_bytes(module: Any) -> int:
    """Bytes of the module's parameters and buffers as stored (inner tensors of quantized subclasses summed)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += _stored_bytes(tensor)
    return total


def _stored_bytes(tensor: Any) -> int:
    import torch

    if type(tensor) not in (torch.Tensor, torch.nn.Parameter) and hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(_stored_bytes(getattr(tensor, n)) for n in names)
    return tensor.numel() * tensor.element_size()


@contextlib.contextmanager
def swapped(pipe: Any, transformer: Any, on_swap: Callable[[Any], None] = lambda t: None) -> Iterator[dict]:
    """`transformer` in the pipeline for the duration; on CUDA the idle one waits on the CPU."""
    original = pipe.transformer
    device = pipe.device
    accelerator = device.type != "cpu"
    if accelerator:
        original.to("cpu")
        if _movable(transformer):
            transformer.to(device)
        _empty_cache()
    pipe.transformer = transformer
    on_swap(transformer)
    try:
        yield {"other_transformer_resident": accelerator and not _movable(transformer)}
    finally:
        pipe.transformer = original
        on_swap(original)
        if accelerator:
            if _movable(transformer):
                transformer.to("cpu")
            original.to(device)
            _empty_cache()


def _movable(transformer: Any) -> bool:
    return not getattr(transformer, "is_loaded_in_8bit", False)


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def _nothing_to_apply(pipe: Any, value: Any, warm: Callable[[], None], info: dict) -> Iterator[None]:
    yield  # applied at load time by the engine (Engine._own_transformer), not on the loaded pipeline


AXIS = register_axis(Axis(
    name="quantization", default=DEFAULT, check=quantization_problem, apply=_nothing_to_apply, apply_rank=-10,
    doc="transformer weights quantized at load time (torchao, bitsandbytes, GGUF)",
))
