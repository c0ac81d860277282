"""`repro profile`: the trace reading checked on a hand-made trace, then a planted slow hook on the tiny Wan twin.

The planted hook is a diffusers ``ModelHook`` on the transformer whose ``pre_forward`` reads a property that
walks every parameter of the transformer many times (the shape of the ``ModelMixin.dtype`` walk in diffusers'
dtype-caching pull request) and calls ``.item()`` once. The profile must name the property as the top
host-side frame, count its calls, charge it to the hooks' cost and report the ``.item()`` at its line.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from click.testing import CliRunner

from experiments.profiling import _analyse, profile_generation
from experiments.runner import Engine, GenerationRequest
from experiments.spec import Spec
from tests.conftest import tiny_spec_dict

STEPS = 2
WALKS = 40  # walks of the transformer's parameters per transformer call


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# The arithmetic, on a trace made by hand (times in microseconds)


def _x(name, ts, dur, cat="python_function", **args):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "tid": 7, "pid": 1, "args": args}


def test_analyse_charges_internal_python_and_ops_to_the_calling_frame():
    events = [
        _x("pipe.py(1): __call__", 0, 1000),
        _x("repro::loop_start", 10, 0, cat="user_annotation"),
        _x("repro::transformer_start", 20, 0, cat="user_annotation"),
        _x("lib/model.py(5): forward", 20, 300),               # user frame, 300 inclusive
        _x("torch/nn/modules/module.py(9): _call_impl", 40, 200),  # torch internal: charged to forward
        _x("aten::addmm", 50, 120, cat="cpu_op"),               # op self time 120: charged to forward
        _x("lib/hook.py(3): slow", 400, 100),                   # the hook: 100 inclusive, 60 self
        _x("torch/nn/modules/module.py(2): named_parameters", 410, 40),  # internal: charged to slow
        _x("<built-in method item of Tensor object at 0x1>", 460, 20, CallFrom="lib/hook.py:8"),
        _x("aten::item", 462, 10, cat="cpu_op"),
        _x("aten::_local_scalar_dense", 463, 5, cat="cpu_op"),   # inside .item(): not a second sync
        _x("repro::step_end", 600, 0, cat="user_annotation"),
        _x("aten::item", 700, 5, cat="cpu_op"),                 # after the loop: counted outside it
    ]
    out = _analyse(events, hook_files={"lib/hook.py"}, function="slow", top=10)
    frames = {f["frame"]: f for f in out["top_frames"]}
    forward = frames["lib/model.py(5): forward"]
    assert forward["calls"] == 1 and forward["total_ms"] == pytest.approx(0.300)
    # forward self 100 (300 - 200) + _call_impl self 80 (200 - 120) Python; addmm 120 in ops
    assert forward["python_ms"] == pytest.approx(0.180) and forward["op_ms"] == pytest.approx(0.120)
    slow = frames["lib/hook.py(3): slow"]
    # slow self 40 (100 - 40 - 20) + named_parameters 40 + the item builtin's self 10 (20 - 10) Python; ops 5 + 5
    assert slow["python_ms"] == pytest.approx(0.090) and slow["op_ms"] == pytest.approx(0.010)
    assert out["top_frames"][0]["frame"] == "lib/model.py(5): forward"
    assert out["hook_ms_steps"] == [pytest.approx(0.100)] and out["hook_ms_per_step"] == pytest.approx(0.100)
    assert out["function"] == {"name": "slow", "calls": 1, "total_ms": pytest.approx(0.100)}
    assert out["syncs_outside_loop"] == 1
    (sync,) = out["syncs"]
    assert sync["kind"] == ".item()" and sync["count"] == 1 and sync["steps"] == [0]
    assert sync["site"] == "lib/hook.py:8 (item)"


def test_analyse_counts_cuda_syncs_and_device_to_host_copies_once():
    gpu = {"tid": 9, "pid": 0}
    events = [
        _x("pipe.py(1): __call__", 0, 1000),
        _x("repro::transformer_start", 10, 0, cat="user_annotation"),
        # boolean-mask indexing: nonzero waits for the device inside aten::index (one sync, not three)
        _x("lib/model.py(5): forward", 20, 300),
        _x("repro::site lib/model.py:7 (__getitem__)", 30, 100, cat="user_annotation"),
        _x("aten::index", 31, 98, cat="cpu_op"),
        _x("aten::nonzero", 32, 90, cat="cpu_op"),
        _x("cudaStreamSynchronize", 40, 70, cat="cuda_runtime"),
        # .cpu(): a device-to-host copy, known by its memcpy on the device
        _x("<built-in method cpu of Tensor object at 0x2>", 200, 50, CallFrom="lib/model.py:9"),
        _x("aten::_to_copy", 201, 48, cat="cpu_op"),
        _x("aten::copy_", 202, 46, cat="cpu_op"),
        _x("cudaMemcpyAsync", 203, 40, cat="cuda_runtime", correlation=77),
        {**_x("Memcpy DtoH (Device -> Pageable)", 210, 30, cat="gpu_memcpy", correlation=77), **gpu},
        # a host-to-device copy is not a sync
        _x("aten::copy_", 260, 20, cat="cpu_op"),
        _x("cudaMemcpyAsync", 261, 10, cat="cuda_runtime", correlation=78),
        {**_x("Memcpy HtoD (Pageable -> Device)", 262, 5, cat="gpu_memcpy", correlation=78), **gpu},
        _x("cudaDeviceSynchronize", 400, 5, cat="cuda_runtime"),  # called by user code, outside any op
        _x("repro::step_end", 500, 0, cat="user_annotation"),
    ]
    out = _analyse(events, hook_files=set(), function=None, top=5)
    syncs = {(s["kind"], s["site"]): s["count"] for s in out["syncs"]}
    assert syncs == {("nonzero", "lib/model.py:7 (__getitem__)"): 1,
                     ("device-to-host copy", "lib/model.py:9 (cpu)"): 1,
                     ("cuda device sync", "(no Python frame outside torch)"): 1}
    assert out["hook_ms_per_step"] is None and out["hook_ms_steps"] == []


def test_analyse_refuses_a_trace_without_a_transformer_call():
    with pytest.raises(RuntimeError, match="never reached the transformer"):
        _analyse([_x("pipe.py(1): __call__", 0, 10)], set(), None, 5)


# ---------------------------------------------------------------------------------------------
# A planted slow hook on the tiny Wan twin


def _slow_hook_class():
    from diffusers.hooks import ModelHook

    class WalkingDtypeHook(ModelHook):
        """Reads a parameter-walking property before every transformer call (deliberately slow)."""

        def initialize_hook(self, module):
            self.module = module
            return module

        @property
        def dtype_by_walking(self):
            for _ in range(WALKS):
                for _, param in self.module.named_parameters():
                    dtype = param.dtype
            return dtype

        def pre_forward(self, module, *args, **kwargs):
            self.dtype_by_walking
            torch.zeros(1).item()  # a host sync, planted at this line
            return args, kwargs

    return WalkingDtypeHook


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    spec_dict = tiny_spec_dict(tmp_path_factory.mktemp("run"))
    spec_dict["generation"]["num_inference_steps"] = STEPS
    return Engine(Spec.model_validate(spec_dict))


@pytest.mark.slow  # torch.profiler over generations
def test_profile_names_a_planted_slow_hook(engine):
    from diffusers.hooks import HookRegistry

    request = GenerationRequest(prompt="a red fox in snow", seed=0)
    clean = profile_generation(engine, request, warmup=0, function="dtype_by_walking").summary()
    registry = HookRegistry.check_if_exists_or_initialize(engine.pipe.transformer)
    registry.register_hook(_slow_hook_class()(), "walking_dtype")
    try:
        slow = profile_generation(engine, request, warmup=0, function="dtype_by_walking").summary()
    finally:
        registry.remove_hook("walking_dtype")
    calls = 2 * STEPS  # guidance > 1: the tiny Wan runs the conditional and unconditional pass separately

    # without the hook nothing of it shows
    assert clean["function"]["calls"] == 0 and clean["hook_ms_per_step"] is None
    assert not any("test_profile.py" in s["site"] for s in clean["syncs"])

    assert slow["steps"] == STEPS and len(slow["host_step_ms"]) == STEPS and len(slow["inter_step_gap_ms"]) == STEPS - 1
    top = slow["top_frames"][0]
    assert top["frame"].endswith(": dtype_by_walking") and "test_profile.py" in top["frame"], slow["top_frames"][:3]
    assert top["calls"] == calls
    assert slow["function"]["calls"] == calls and slow["function"]["total_ms"] > 0
    hook_file = next(f for f in slow["hook_ms_by_file"] if f.endswith("test_profile.py"))
    assert slow["hook_ms_by_file"][hook_file] >= top["python_ms"] * 0.99
    assert slow["hook_ms_per_step"] * STEPS == pytest.approx(sum(slow["hook_ms_by_file"].values()))
    planted = [s for s in slow["syncs"] if "test_profile.py" in s["site"]]
    assert len(planted) == 1 and planted[0]["count"] == calls and planted[0]["kind"] == ".item()", slow["syncs"]
    line = next(i for i, text in enumerate(open(__file__).read().splitlines(), 1) if "planted at this line" in text)
    assert planted[0]["site"].split(" ")[0].endswith(f"test_profile.py:{line}")
    assert planted[0]["steps"] == list(range(STEPS))


# ---------------------------------------------------------------------------------------------
# The command line


def _spec_file(tmp_path, **changes):
    data = tiny_spec_dict(tmp_path / "run", **changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow  # torch.profiler over generations
def test_repro_profile_writes_traces_and_the_table(tmp_path):
    from repro.cli import main

    spec = _spec_file(tmp_path, methods=[{"name": "first_block_cache", "sweep": {"threshold": [0.3]}}])
    from repro.plan import build_plan

    point = build_plan(Spec.model_validate(yaml.safe_load(spec.read_text()))).points[0].point_id
    result = CliRunner().invoke(main, ["profile", str(spec), "--steps", "2", "--point", point,
                                       "--function", "get_parameter_dtype"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "run" / "profile"
    data = json.loads((out / "profile.json").read_text())
    (row,) = data["points"]
    assert row["point_id"] == point and row["steps"] == 2 and row["request"]["method"] == "first_block_cache"
    trace = json.loads((out / row["trace"]).read_text())
    assert any(e.get("name") == "repro::step_end" for e in trace["traceEvents"])
    assert row["hook_ms_by_file"] and all("diffusers/hooks/" in f for f in row["hook_ms_by_file"])
    assert any("first_block_cache.py" in s["site"] for s in row["syncs"])
    table = (out / "profile.md").read_text()
    assert "| point | label | get_parameter_dtype calls | get_parameter_dtype total ms | syncs in loop |" in table
    assert f"| {point} |" in table and table in result.output
    assert not list(out.glob(".tmp-*"))


@pytest.mark.slow  # torch.profiler over generations
def test_repro_profile_profiles_every_point_of_a_calibrated_method(tmp_path):
    """MagCache points need their calibration: each is calibrated once, then profiled (it used to fail on every
    MagCache point with a NameError, recorded as the point's error)."""
    from repro.cli import main

    spec = _spec_file(tmp_path, methods=[{"name": "mag_cache", "sweep": {"threshold": [0.06, 0.2]}}])
    result = CliRunner().invoke(main, ["profile", str(spec), "--steps", "2"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "run" / "profile" / "profile.json").read_text())["points"]
    assert len(rows) == 3 and {r["request"]["method"] for r in rows} == {None, "mag_cache"}
    assert all("error" not in r for r in rows), [r.get("error") for r in rows]
    assert result.output.count("calibrating mag_cache") == 1


@pytest.mark.parametrize("args, words", [
    (["--point", "nope"], ["--point 'nope'", "no such point", "baseline"]),
    (["--steps", "0"], ["--steps", "0"]),
])
def test_repro_profile_refuses_bad_flags(tmp_path, args, words):
    from repro.cli import main

    spec = _spec_file(tmp_path)
    result = CliRunner().invoke(main, ["profile", str(spec), *args])
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in result.output
    assert not (tmp_path / "run" / "profile").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_profile_finds_the_first_block_cache_sync(tmp_path):
    spec_dict = tiny_spec_dict(tmp_path, model={"tiny": "wan", "device": "cuda"})
    spec_dict["generation"]["num_inference_steps"] = STEPS
    engine = Engine(Spec.model_validate(spec_dict))
    request = GenerationRequest("a red fox in snow", 0, method="first_block_cache", params={"threshold": 0.3})
    prof = profile_generation(engine, request, warmup=1, trace_path=tmp_path / "t.json").summary()
    assert prof["device"].startswith("cuda") and prof["steps"] == STEPS
    fbc = [s for s in prof["syncs"] if "first_block_cache.py" in s["site"]]
    assert fbc and fbc[0]["count"] >= STEPS - 1, prof["syncs"]
    trace = json.loads((tmp_path / "t.json").read_text())
    assert any(e.get("cat") == "kernel" for e in trace["traceEvents"])


def test_report_table_keeps_its_columns_when_an_id_holds_a_pipe():
    import re

    from repro.profile import format_report

    row = {"point_id": "baseline | quantization=torchao_int8wo", "label": "uncached", "device": "cpu", "steps": 2,
           "syncs_in_loop": 1, "syncs_outside_loop": 0, "hook_ms_per_step": None, "hook_ms_by_file": {},
           "host_step_ms": [1.0, 2.0], "host_step_ms_mean": 1.5, "inter_step_gap_ms_mean": 0.1,
           "pipeline_call_ms": 9.0, "function": {"name": "f", "calls": 3, "total_ms": 0.5},
           "top_frames": [{"frame": "a.py(1): f", "calls": 3, "python_ms": 0.4, "op_ms": 0.0, "total_ms": 0.5}],
           "syncs": [{"kind": ".item()", "site": "a.py:2 (item)", "count": 1, "steps": [0], "op": "aten::item"}]}
    table = [ln for ln in format_report([row, {"point_id": "x|y", "label": "z", "error": "E"}], "f").splitlines()
             if ln.startswith("|")]
    columns = [len(re.findall(r"(?<!\\)\|", ln)) for ln in table]
    assert columns[0] == columns[1] == columns[2] == 11  # header, rule, the point: 10 columns
    assert "baseline \\| quantization=torchao_int8wo" in table[2] and "| 3 | 0.50 |" in table[2]
    assert table[3].startswith("| x\\|y | z | failed: E |")
