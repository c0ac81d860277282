"""The quantization axis on the tiny Wan twin (CPU): refusals at validation, torchao int8 weight-only and a
GGUF Q8_0 checkpoint loaded through diffusers, swapped in per generation, loaded once per engine.

Tolerances (measured here, torch 2.14.1 / diffusers 0.42.1 / torchao 0.18.0, tiny Wan, 16x16x5, 4 steps):
torchao int8 weight-only vs float32: the first transformer output differs by a relative L2 error of ~1e-3
(asserted 0 < error < 0.05: it really ran quantized); the frames are identical at 8 bits on this near-gray
random model (asserted PSNR > 30 dB). GGUF Q8_0 (the 5 layers whose input width is a multiple of 32): max
pixel difference 0 of 255, asserted <= 3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from experiments.errors import SpecError
from experiments.runner import Engine, GenerationRequest
from experiments.spec import Spec
from tests.conftest import tiny_spec_dict

pytest.importorskip("torchao", reason="the quantization extra is not installed")

PROMPT = "a red fox in snow"
STEPS = 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def write_gguf(transformer: torch.nn.Module, path, qtype: str = "Q8_0") -> int:
    """The transformer's state dict as a GGUF file: `qtype` where the row length allows it, F32 elsewhere."""
    import gguf
    from gguf.quants import quantize

    kind = gguf.GGMLQuantizationType[qtype]
    block = gguf.GGML_QUANT_SIZES[kind][0]
    writer = gguf.GGUFWriter(str(path), arch="tiny")
    quantized = 0
    for name, tensor in transformer.state_dict().items():
        array = tensor.detach().float().numpy()
        if array.ndim == 2 and array.shape[-1] % block == 0:
            data = quantize(array, kind)
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=kind)
            quantized += 1
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return quantized


# ---------------------------------------------------------------------------------------------
# Validation: refused before any model loads, one line naming the option and why


def validate(tmp_path, values: list) -> tuple[int, str]:
    from repro.cli import main

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / "run", optimizations={"quantization": values})))
    result = CliRunner().invoke(main, ["validate", str(path)])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    from experiments.families import get_family

    path = tmp_path_factory.mktemp("gguf") / "tiny-Q8_0.gguf"
    assert write_gguf(get_family("wan").build_tiny().transformer, path) > 0
    return path


@pytest.mark.parametrize("values, words", [
    (["none", "bnb_int8"], ["optimizations.quantization", "'bnb_int8'", "need CUDA", "device is cpu"]),
    (["bnb_nf4"], ["'bnb_nf4'", "need CUDA"]),
    (["torchao_int4wo"], ["'torchao_int4wo'", "Int4WeightOnlyConfig", "cpu"]),
    (["torchao_float8dq"], ["'torchao_float8dq'", "Float8DynamicActivationFloat8WeightConfig"]),
    (["int8_weight_only"], ["'int8_weight_only'", "is not a quantization", "torchao_int8wo", "gguf:PATH"]),
    (["gguf_q8_0:no/such/file.gguf"], ["GGUF file not found", "no/such/file.gguf"]),
    (["gguf"], ["gguf:PATH or gguf_<type>:PATH"]),
])
def test_validate_refuses_what_cannot_run_here(tmp_path, values, words):
    code, output = validate(tmp_path, values)
    assert code == 2, output
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "run").exists()


def test_validate_checks_what_a_gguf_file_holds(tmp_path, gguf_file):
    code, output = validate(tmp_path, ["none", f"gguf_q8_0:{gguf_file}", f"gguf:{gguf_file}"])
    assert code == 0, output
    code, output = validate(tmp_path, [f"gguf_q4_0:{gguf_file}"])
    assert code == 2 and "holds no Q4_0 tensors" in output and "Q8_0" in output, output
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"not a gguf file at all")
    code, output = validate(tmp_path, [f"gguf:{not_gguf}"])
    assert code == 2 and "not a readable GGUF file" in output, output


def test_validate_accepts_torchao_int8_weight_only_on_cpu(tmp_path):
    code, output = validate(tmp_path, ["none", "torchao_int8wo", "torchao_float8wo"])
    assert code == 0, output
    assert "cached generations" in output


@pytest.mark.parametrize("value, device, package, words", [
    ("torchao_int8wo", "cpu", "torchao", ["needs the torchao package", "pip install"]),
    ("bnb_int8", "cuda", "bitsandbytes", ["needs the bitsandbytes package"]),
    ("gguf:whatever.gguf", "cpu", "gguf", ["needs the gguf package"]),
])
def test_a_missing_package_is_named(monkeypatch, value, device, package, words):
    import importlib.util

    from experiments.optimizations import check_available
    from experiments.optimizations import quantization as q

    real = importlib.util.find_spec
    monkeypatch.setattr(q.importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(SpecError) as err:
        check_available({"quantization": [value]}, device)
    for word in words:
        assert word in str(err.value)


# ---------------------------------------------------------------------------------------------
# Generating on the tiny Wan twin


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    spec = tiny_spec_dict(tmp_path_factory.mktemp("run"))
    spec["generation"]["num_inference_steps"] = STEPS
    return Engine(Spec.model_validate(spec))


def _first_output(transformer: torch.nn.Module, into: dict, name: str):
    """Keep the first output of `transformer` in a generation (its inputs are the same for every configuration)."""
    def hook(module, args, output):
        into.setdefault(name, (output[0] if isinstance(output, (tuple, list)) else output.sample).detach().clone())
    return transformer.register_forward_hook(hook)


def test_torchao_int8_weight_only_runs_on_its_own_transformer(engine):
    q8 = {"quantization": "torchao_int8wo"}
    original = engine.pipe.transformer
    outputs: dict = {}
    handle = _first_output(original, outputs, "base")
    base = engine.generate(GenerationRequest(PROMPT, 0))
    quantized = engine.generate(GenerationRequest(PROMPT, 0, optimization=q8))
    assert engine.pipe.transformer is original  # swapped back
    own = engine._own_transformers["torchao_int8wo"][0]
    assert own is not original and type(own.blocks[0].attn1.to_q.weight).__name__ == "Int8Tensor"
    handles = [handle, _first_output(own, outputs, "int8")]
    try:
        cached = engine.generate(GenerationRequest(PROMPT, 0, method="first_block_cache", params={"threshold": 0.0},
                                                   optimization=q8))
        base_after = engine.generate(GenerationRequest(PROMPT, 0))
    finally:
        for h in handles:
            h.remove()

    # the quantized transformer really ran, with int8 rounding errors: small, not zero
    error = (outputs["int8"] - outputs["base"]).norm() / outputs["base"].norm()
    assert 0 < float(error) < 0.05, float(error)
    assert psnr(quantized.frames, base.frames) > 30
    assert np.array_equal(base_after.frames, base.frames)  # the unquantized transformer is untouched
    # the cache sits on the quantized transformer: threshold 0 reproduces the quantized baseline bit for bit
    assert np.array_equal(cached.frames, quantized.frames)
    for result in (quantized, cached):
        summary = result.summary()
        assert summary["compute_executed"] == summary["compute_possible"] > 0  # counters moved with the swap
    info = quantized.optimization_info
    assert info["quantization"] == "torchao_int8wo" and info["quantized_layers"] > 0
    # int8 weights: about a quarter of the float32 bytes of every quantized Linear
    assert info["transformer_bytes"] < 0.6 * info["unquantized_transformer_bytes"]
    assert engine.transformer_loads == 1  # once per engine (worker), not per generation
    assert "quantized_load_s" in info and "quantized_load_s" not in cached.optimization_info


def test_a_gguf_checkpoint_loads_through_from_single_file(engine, gguf_file):
    base = engine.generate(GenerationRequest(PROMPT, 0))
    result = engine.generate(GenerationRequest(PROMPT, 0, optimization={"quantization": f"gguf_q8_0:{gguf_file}"}))
    assert result.optimization_info["quantized_layers"] > 0
    assert max_diff(result.frames, base.frames) <= 3


def test_plan_scores_quantized_points_against_the_unquantized_baseline(tmp_path):
    from repro.plan import build_plan

    spec = Spec.model_validate(tiny_spec_dict(tmp_path, optimizations={"quantization": ["none", "torchao_int8wo"]}))
    plan = build_plan(spec)
    plain = {j.prompt_index: j for j in plan.baselines if j.optimization["quantization"] == "none"}
    quant = {j.prompt_index: j for j in plan.baselines if j.optimization["quantization"] == "torchao_int8wo"}
    assert len(plain) == len(quant) == len(spec.prompts)
    for job in quant.values():
        assert job.quality_baseline_key == plain[job.prompt_index].key
    cached = [j for j in plan.cached if j.optimization["quantization"] == "torchao_int8wo"]
    assert cached and len(plan.points) == 4
    for job in cached:
        assert job.quality_baseline_key == plain[job.prompt_index].key
        assert job.speed_baseline_key == quant[job.prompt_index].key


# ---------------------------------------------------------------------------------------------
# CUDA only (skipped here): bitsandbytes, and the idle transformer waiting on the CPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("value", ["torchao_int8wo", "bnb_nf4"])
def test_cuda_quantized_generation_keeps_one_transformer_on_the_device(tmp_path, value):
    if value.startswith("bnb"):
        pytest.importorskip("bitsandbytes")
    spec = tiny_spec_dict(tmp_path, model={"tiny": "wan", "device": "cuda"})
    spec["generation"]["num_inference_steps"] = STEPS
    engine = Engine(Spec.model_validate(spec))
    base = engine.generate(GenerationRequest(PROMPT, 0))
    original = engine.pipe.transformer
    quantized = engine.generate(GenerationRequest(PROMPT, 0, optimization={"quantization": value}))
    info = quantized.optimization_info
    assert info["quantized_layers"] > 0 and info["transformer_bytes"] < info["unquantized_transformer_bytes"]
    assert quantized.peak_memory_bytes and base.peak_memory_bytes
    assert next(original.parameters()).device.type == "cuda"  # back on the device after the swap
    own = engine._own_transformers[value][0]
    assert next(own.parameters()).device.type == "cpu"  # the idle quantized copy waits on the host
    assert psnr(quantized.frames, base.frames) > 25


def test_a_sweep_crosses_quantization_with_the_cache_grid(tmp_path):
    """`repro sweep` as a user runs it: the quantized configuration's generations land in the store with what the
    quantization measured, each scored against the unquantized baseline."""
    from repro.cli import main
    from repro.store import Store

    data = tiny_spec_dict(tmp_path / "run", prompts=[PROMPT], optimizations={"quantization": ["none", "torchao_int8wo"]},
                          methods=[{"name": "first_block_cache", "sweep": {"threshold": [0.3]}}])
    data["generation"]["num_inference_steps"] = STEPS
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    store = Store.open_existing(tmp_path / "run")
    rows = store.generations(status="ok")
    store.close()
    assert len(rows) == 4  # 2 baselines + 2 cached
    plain = next(r for r in rows if r["role"] == "baseline" and r["optimization"]["quantization"] == "none")
    quantized = [r for r in rows if r["optimization"]["quantization"] == "torchao_int8wo"]
    assert len(quantized) == 2
    for row in quantized:
        assert row["quality_baseline_key"] == plain["key"]
        info = row["summary"]["optimization_info"]
        assert info["quantization"] == "torchao_int8wo" and info["quantized_layers"] > 0
        assert info["transformer_bytes"] < info["unquantized_transformer_bytes"]
    assert sum("quantized_load_s" in r["summary"]["optimization_info"] for r in quantized) == 1  # loaded once
