"""Validation from the snapshot of library facts (experiments/library_facts.py) says exactly what validation that
imports torch and diffusers says (REPRO_LIBRARY_FACTS=import, the path validation took before issue 28): on every
spec in configs/, on every refusal the spec tests check, and on refusals that hinge on those facts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from experiments import library_facts
from experiments.methods import get_method
from repro.cli import main
from tests.conftest import ROOT, tiny_spec_dict
from tests.experiments import test_spec, test_spec_refusals
from tests.repro import test_cli, test_tune

CONFIGS = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("configs/*.yaml"), *ROOT.glob("configs/paper/*.yaml")])


def _params(test_function) -> list:
    """The parametrize values of an existing test: the refusals it checks."""
    return next(m.args[1] for m in test_function.pytestmark if m.name == "parametrize")


def _methods(*entries) -> dict:
    return {"methods": list(entries)}


def _generation(**changes) -> dict:
    return {"generation": {**tiny_spec_dict("unused")["generation"], **changes}}


SEA = {"name": "sea_cache", "params": {}}
MAG_NEVER = {"name": "mag_cache", "calibrate": "never", "sweep": {"threshold": [0.1]}}
IMAGE_GENERATION = {"generation": {"height": 16, "width": 16, "num_inference_steps": 4, "max_sequence_length": 16}}
# refusals (and acceptances) that turn on what the snapshot stands in for: field types and defaults, transcribed
# __post_init__ checks and their fall-back to the class, dtype names, pipeline arguments, devices
FACTS = {
    "sea-residual-order": _methods({**SEA, "params": {"residual_order": 2}}),
    "sea-residual-order-swept": _methods({**SEA, "sweep": {"residual_order": [0, 1, -1]}}),
    "sea-power-exp-zero": _methods({**SEA, "params": {"power_exp": 0.0}}),
    "sea-power-exp-negative": _methods({**SEA, "params": {"power_exp": -2}}),
    "sea-max-consecutive-float": _methods({**SEA, "params": {"max_consecutive_cached": 1.5}}),
    "sea-ok": _methods({**SEA, "sweep": {"residual_order": [0, 1], "threshold": [0.0, 0.5]}}),
    "sea-callback": _methods({**SEA, "params": {"raw_vision_callback": "f"}}),
    "sea-typo": _methods({**SEA, "params": {"thresold": 0.1}}),
    "mag-ratios-empty": _methods({**MAG_NEVER, "params": {"mag_ratios": []}}),
    "mag-ratios-one": _methods({**MAG_NEVER, "params": {"mag_ratios": [1.0]}}),
    "mag-ratios-huge-int": _methods({**MAG_NEVER, "params": {"mag_ratios": [2**70]}}),
    "mag-ratios-mixed": _methods({**MAG_NEVER, "params": {"mag_ratios": [1, 0.5, 2**70]}}),
    "mag-ratios-strings": _methods({**MAG_NEVER, "params": {"mag_ratios": ["a"]}}),
    "mag-calibrate-field": _methods({**MAG_NEVER, "params": {"calibrate": True}}),
    "taylor-dtype": _methods({"name": "taylorseer_cache", "params": {"taylor_factors_dtype": "float16"}}),
    "taylor-dtype-alias": _methods({"name": "taylorseer_cache", "params": {"taylor_factors_dtype": "half"}}),
    "taylor-dtype-bad": _methods({"name": "taylorseer_cache", "params": {"taylor_factors_dtype": "Tensor"}}),
    "taylor-dtype-number": _methods({"name": "taylorseer_cache", "params": {"taylor_factors_dtype": 16}}),
    "taylor-identifiers": _methods({"name": "taylorseer_cache", "params": {"cache_identifiers": "blocks"}}),
    "taylor-after-step-null": _methods({"name": "taylorseer_cache", "params": {"disable_cache_after_step": None}}),
    "faster-range-length": _methods({"name": "faster_cache", "params": {"spatial_attention_timestep_skip_range": [1, 2, 3]}}),
    "faster-range-item": _methods({"name": "faster_cache", "params": {"spatial_attention_timestep_skip_range": [1, "a"]}}),
    "faster-private-field": _methods({"name": "faster_cache", "params": {
        "_unconditional_conditional_input_kwargs_identifiers": ["x"]}}),
    "pab-identifiers": _methods({"name": "pyramid_attention_broadcast", "params": {
        "spatial_attention_block_identifiers": ["blocks", 1]}}),
    "pab-timestep-callback": _methods({"name": "pyramid_attention_broadcast", "params": {
        "current_timestep_callback": 1}}),
    "pab-ok": _methods({"name": "pyramid_attention_broadcast", "params": {
        "spatial_attention_timestep_skip_range": [100, 800], "spatial_attention_block_identifiers": ["blocks"]}}),
    "mag-integer-range": _methods({**MAG_NEVER, "params": {"mag_ratios": [1.0] * 6},
                                   "sweep": {"max_skip_steps": {"min": 1, "max": 3}}}),
    "teacache-bad": _methods({"name": "teacache", "params": {"threshold": -1}}),
    "easycache-typo": _methods({"name": "easycache", "params": {"treshold": 0.1}}),
    "official-eval": _methods({"name": "magcache_official_eval", "sweep": {"threshold": [0.1]}}),
    "pipeline-arguments": {"model": {"id": "org/name", "pipeline_class": "FluxPipeline", "device": "cpu"},
                           "generation": {**IMAGE_GENERATION["generation"], "num_framez": 3}},
    "pipeline-base-class": {"model": {"id": "org/name", "pipeline_class": "DiffusionPipeline", "device": "cpu"},
                            **IMAGE_GENERATION},
    "pipeline-not-a-pipeline": {"model": {"id": "org/name", "pipeline_class": "AutoencoderKL", "device": "cpu"},
                                **IMAGE_GENERATION},
    "pipeline-a-module": {"model": {"id": "org/name", "pipeline_class": "utils", "device": "cpu"}},
    "pipeline-by-hub-id": {"model": {"id": "black-forest-labs/FLUX.1-dev", "device": "cpu"},
                           "generation": {**IMAGE_GENERATION["generation"], "max_sequence_lenght": 3}},
    "device-auto": {"model": {"tiny": "wan", "device": "auto"}, "metrics": {"names": ["psnr"], "device": "auto"}},
    "device-cuda": {"model": {"tiny": "wan", "device": "cuda"}},
    "device-mps": {"metrics": {"names": ["psnr"], "device": "mps"}},
}


def _cases(tmp: Path) -> list[tuple[str, dict]]:
    """(name, spec data): the refusals of test_spec_refusals, test_spec, test_cli and test_tune, then FACTS."""
    run = tmp / "run"
    cases = []
    for case in test_spec_refusals.CASES:
        name, change, _ = case.values if hasattr(case, "values") else case
        data = tiny_spec_dict(run, **change)
        if name == "mp4-string":
            data["output"]["dir"] = str(run)
        cases.append((name, data))
    for name, change, _ in test_spec_refusals.SAME_AS_SWEEP:
        cases.append((name, tiny_spec_dict(run, **change(tmp))))
    for i, (change, _) in enumerate(_params(test_spec.test_bad_specs_give_one_clear_error)):
        cases.append((f"test_spec-{i}", tiny_spec_dict(run, **change)))
    for i, (change, _) in enumerate(_params(test_cli.test_bad_spec_exits_2_with_one_line_and_writes_nothing)):
        cases.append((f"test_cli-{i}", tiny_spec_dict(run, **change)))
    for i, (axis, _) in enumerate(_params(test_tune.test_a_bad_range_is_refused_with_one_clear_message)):
        cases.append((f"tune-range-{i}", tiny_spec_dict(run, methods=[{"name": "first_block_cache",
                                                                        "sweep": {"threshold": axis}}])))
    for i, (sweep, _) in enumerate(_params(test_tune.test_a_range_is_checked_against_the_registry)):
        mag = {"name": "mag_cache", "params": {"mag_ratios": [1.0] * 6}, "calibrate": "never", "sweep": sweep}
        cases.append((f"tune-registry-{i}", tiny_spec_dict(run, methods=[mag])))
    for name, change in FACTS.items():
        cases.append((f"facts-{name}", tiny_spec_dict(run, **change)))
    return cases


def _validate(args: list[str], monkeypatch, mode: str) -> tuple[int, str, str]:
    monkeypatch.setenv(library_facts.ENV, mode)
    out = CliRunner().invoke(main, ["validate", *args])
    assert out.exception is None or isinstance(out.exception, SystemExit), (mode, out.exception)
    return out.exit_code, out.stdout, out.stderr


@pytest.mark.slow  # library facts read in a process
def test_validation_from_the_snapshot_equals_validation_from_the_libraries(tmp_path, monkeypatch):
    cases = _cases(tmp_path)
    assert len(cases) > 100 and len({n for n, _ in cases}) == len(cases)
    compared, refused = 0, 0
    for name, data in [*((c, None) for c in CONFIGS), *cases]:
        if data is None:
            args = [str(ROOT / name)]
        else:
            spec = tmp_path / f"{name}.yaml"
            spec.write_text(yaml.safe_dump(data, sort_keys=False))
            args = [str(spec)]
        snapshot = _validate(args, monkeypatch, "snapshot")
        imported = _validate(args, monkeypatch, "import")
        assert snapshot == imported, name
        compared += 1
        refused += snapshot[0] == 2
    assert compared == len(CONFIGS) + len(cases) and refused > 90  # the cases are mostly refusals


def test_every_config_validates():
    for config in CONFIGS:
        out = CliRunner().invoke(main, ["validate", str(ROOT / config)])
        assert out.exit_code == 0, (config, out.output)


# -- the transcribed __post_init__ checks ----------------------------------------------------------------------

SEA_VALUES = {"threshold": [0.25, 0.0, 3], "residual_order": [0, 1, 2, -1], "retention_steps": [1, 0, -1],
              "cache_end_steps": [1, -2], "max_consecutive_cached": [2, 0, -1, True, 1.5],
              "power_exp": [3.0, 1, 0.0, -1.0, float("inf")]}
MAG_VALUES = {"threshold": [0.06, 0.5], "mag_ratios": [None, [], [1.0], [1.0] * 7, [2, 3], [2**70], [0.5, 2**64]],
              "retention_ratio": [0.2]}


def _outcome(call) -> tuple[str, str] | None:
    try:
        call()
    except Exception as exc:  # what a spec would be refused with: its type and message
        return type(exc).__name__, str(exc)
    return None


@pytest.mark.parametrize("name, values", [("sea_cache", SEA_VALUES), ("mag_cache", MAG_VALUES)])
def test_transcribed_post_init_refuses_as_the_class_does(monkeypatch, name, values):
    """check_config (snapshot facts, transcription) and build_config (the class) agree value by value; each value
    is tried alone over the defaults, with 1, 2 and 7 steps (MagCache interpolates its ratios to the step count)."""
    method = get_method(name)
    assert method.facts() is not None and method.post_init is not None
    seen = set()
    for key, options in values.items():
        for value in options:
            for steps in (1, 2, 7):
                params = {key: value}
                calibration = [1.0] * (2 * steps) if key != "mag_ratios" and method.calibrated_field else None
                mine = _outcome(lambda: method.check_config(params, steps, calibration))
                theirs = _outcome(lambda: method.build_config(params, None, steps, calibration))
                assert mine == theirs, (name, params, steps)
                seen.add(mine)
    assert len(seen) > 2  # some values pass, several are refused, each with its own message


@pytest.mark.parametrize("name", ["sea_cache", "mag_cache"])
def test_a_transcription_is_for_one_source_only(monkeypatch, name):
    """Facts naming another __post_init__ source make check_config build the class itself (never the transcription)."""
    method = get_method(name)
    installed = library_facts.read(f"config:{method.config}")["facts"]["post_init"]
    assert method.post_init[0] == installed, "diffusers changed this __post_init__: transcribe it again"
    calls = []
    monkeypatch.setattr(type(method), "build_config", lambda self, *a, **k: calls.append(a))
    method.check_config({}, 4, [1.0] * 8)
    assert calls == []
    facts = dataclasses.replace(method.facts(), post_init="another source")
    monkeypatch.setattr(type(method), "facts", lambda self: facts)
    method.check_config({}, 4, [1.0] * 8)
    assert len(calls) == 1


# -- the snapshot: used only while current, read again otherwise ------------------------------------------------

TEACACHE = "experiments.methods.teacache:TeaCacheConfig"  # read by a subprocess in a second (no torch)


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """library_facts with an empty cache dir, a shipped file of our own and nothing remembered."""
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(library_facts.ENV, raising=False)
    shipped = tmp_path / "shipped.json"
    monkeypatch.setattr(library_facts, "SHIPPED", shipped)
    for name in ("_memory", "_configs", "_file_shas", "_versions"):
        monkeypatch.setattr(library_facts, name, {})
    monkeypatch.setattr(library_facts, "_cached_entries", None)
    monkeypatch.setattr(library_facts, "_shipped_entries", None)
    return shipped


def _ship(path: Path, entries: dict) -> None:
    path.write_text(json.dumps({"format": library_facts.FORMAT, "entries": entries}))


def _doctored(**changes) -> dict:
    entry = library_facts.read(f"config:{TEACACHE}")
    entry["facts"]["fields"].append({"name": "bogus", "type": "float", "default": 0.0, "hint": "float"})
    for what, value in changes.items():
        entry[what] = value
    return entry


def test_a_current_entry_is_used_as_it_is(fresh):
    """The doctored field shows that the shipped entry, not a fresh read, answered."""
    _ship(fresh, {f"config:{TEACACHE}": _doctored()})
    assert "bogus" in library_facts.config(TEACACHE).fields
    assert not library_facts.cache_file().exists()  # nothing had to be read again


@pytest.mark.parametrize("stale", ["file", "version", "missing file"])
@pytest.mark.slow  # library facts read in a process
def test_a_stale_entry_is_never_used_but_read_again_and_cached(fresh, stale):
    entry = _doctored()
    some_file = next(iter(entry["files"]))
    if stale == "file":
        entry["files"][some_file] = "0" * 64
    elif stale == "version":
        entry["versions"] = {"pyyaml": "0.0.1"}
    else:
        entry["files"]["experiments/no_such_file.py"] = "0" * 64
    _ship(fresh, {f"config:{TEACACHE}": entry})
    facts = library_facts.config(TEACACHE)
    assert "bogus" not in facts.fields and "threshold" in facts.fields
    cached = json.loads(library_facts.cache_file().read_text())["entries"][f"config:{TEACACHE}"]
    fresh_read = library_facts.read(f"config:{TEACACHE}")
    assert (cached["facts"], cached["files"]) == (fresh_read["facts"], fresh_read["files"])
    assert library_facts._is_current(cached)


@pytest.mark.slow  # library facts read in a process
def test_the_shipped_snapshot_is_current_and_says_what_the_libraries_say():
    """On the pinned versions nothing is read again (else: python -m experiments.library_facts --ship)."""
    shipped = library_facts._load(library_facts.SHIPPED)
    ship = "python -m experiments.library_facts --ship"
    for key in library_facts.shipped_keys():
        try:
            now = library_facts.read(key)
        except ImportError:  # an optional library that is not installed here
            continue
        assert key in shipped and library_facts._is_current(shipped[key]), f"{key} is missing or stale: {ship}"
        assert shipped[key]["facts"] == json.loads(json.dumps(now["facts"])), f"{key}: {ship}"


def test_torch_facts():
    import torch

    facts = library_facts.get("torch")
    assert facts["version"] == torch.__version__ and facts["cuda"] == torch.version.cuda
    assert repr(library_facts.torch_dtype("half")) == repr(torch.half) == "torch.float16"
    assert library_facts.torch_dtype("Tensor") is None


def test_cuda_availability_without_torch_is_torchs_answer():
    """Asked in a process without torch: the same answer, and torch imported only where a device may be there."""
    import subprocess
    import sys

    import torch

    code = ("import sys; from experiments.library_facts import cuda_available, mps_available; "
            "print(cuda_available(), mps_available(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    cuda, mps, imported = out.stdout.split()
    assert cuda == str(torch.cuda.is_available()) and mps == str(torch.backends.mps.is_available())
    assert imported == str(cuda == "True" or mps == "True" or sys.platform == "darwin")


def test_a_paste_ready_call_reads_the_same_from_the_snapshot(monkeypatch):
    for name, params in [("taylorseer_cache", {"taylor_factors_dtype": "half", "max_order": 2}),
                         ("pyramid_attention_broadcast", {"spatial_attention_timestep_skip_range": [100, 800]}),
                         ("mag_cache", {"threshold": 0.1, "mag_ratios": [1.0, 0.5]})]:
        method = get_method(name)
        snapshot = method.python_call(params, num_inference_steps=8)
        monkeypatch.setenv(library_facts.ENV, "import")
        assert method.python_call(params, num_inference_steps=8) == snapshot
        monkeypatch.delenv(library_facts.ENV)
    assert "taylor_factors_dtype=torch.float16" in get_method("taylorseer_cache").python_call(
        {"taylor_factors_dtype": "half"})


def test_hints_that_cannot_be_stood_in_for_fall_back_to_the_class():
    import typing

    from experiments.param_types import decode_hint, encode_hint, same_behaviour

    assert encode_hint(dict[str, int]) is None and encode_hint(typing.Literal["a"]) is None
    for hint in (float, int | None, tuple[int, ...], list[str] | None, typing.Callable[[int], int], typing.Any):
        assert same_behaviour(hint, decode_hint(encode_hint(hint))), hint
