"""The model-family registry and its tiny offline twins (CPU, no network, seconds per family)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments.errors import SpecError
from experiments.families import LIBRARY_METHODS, METHODS, Family, MethodSupport, all_families, family_for, get_family
from experiments.spec import Spec

REPO = Path(__file__).resolve().parents[2]
FAMILIES = sorted(all_families())
PROMPT = "a cat riding a horse on mars"

_PIPES: dict[str, object] = {}
_BASELINES: dict[str, np.ndarray] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from more threads, and on a busy 2-core box extra OpenMP threads
    make every matmul wait; one thread keeps this file fast and its timings steady."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pipe(name: str):
    if name not in _PIPES:
        _PIPES[name] = get_family(name).build_tiny()
    return _PIPES[name]


def _generate(pipe, fam: Family, seed: int = 0) -> np.ndarray:
    from experiments.families.matrix import generate

    return generate(pipe, fam, seed)


def _baseline(name: str) -> np.ndarray:
    if name not in _BASELINES:
        _BASELINES[name] = _generate(_pipe(name), get_family(name), 0)
    return _BASELINES[name]


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_has_the_core_families():
    for name in ("wan", "flux", "sd35", "cogview4", "hunyuan_video", "ltx_video"):
        assert name in FAMILIES


def test_import_is_cheap():
    code = (
        "import sys, experiments.families as f; f.all_families(); "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_record_is_complete(name):
    fam = get_family(name)
    assert fam.name == name
    assert set(fam.methods) == {*METHODS, *LIBRARY_METHODS}
    for method, ms in fam.methods.items():
        assert isinstance(ms, MethodSupport)
        if ms.status != "supported":
            assert ms.reason, f"{name}.{method} is {ms.status} without a reason"
    assert fam.hub_ids and all("/" in h for h in fam.hub_ids)
    assert fam.dtype in ("float32", "float16", "bfloat16")
    assert set(fam.component_dtypes.values()) <= {"float32", "float16", "bfloat16"}
    assert fam.tiny_generation["num_inference_steps"] >= 4
    import diffusers

    assert hasattr(diffusers, fam.pipeline_class)
    assert hasattr(diffusers, fam.transformer_class)
    assert family_for(fam.pipeline_class) is not None
    assert family_for(getattr(diffusers, fam.pipeline_class)).pipeline_class == fam.pipeline_class


def test_a_method_defined_for_another_model_is_refused_there():
    """magcache_official_eval is MagCache's Wan2.1 evaluation script: n/a on every other family, refused in a spec
    before any model loads, and planned on Wan."""
    from repro.plan import build_plan

    def spec(family):
        return Spec.model_validate({"name": "n", "model": {"tiny": family, "device": "cpu"}, "prompts": ["a"],
                                    "seeds": [0], "methods": [{"name": "magcache_official_eval"}]})

    assert [f for f, fam in all_families().items() if fam.methods["magcache_official_eval"].applicable] == ["wan"]
    for family in ("flux", "wan22"):
        assert get_family(family).methods["magcache_official_eval"].status == "n/a"
        with pytest.raises(SpecError, match=f"magcache_official_eval does not apply to the {family} family: .*Wan2.1"):
            build_plan(spec(family))
    assert build_plan(spec("wan")).points
    with pytest.raises(ValueError, match="needs a reason"):
        MethodSupport("n/a")


def test_unknown_family_names_the_known_ones():
    with pytest.raises(SpecError) as err:
        get_family("wna")
    msg = str(err.value)
    assert "'wan'" in msg  # nearest match
    for name in FAMILIES:
        assert name in msg
    assert family_for("NoSuchPipeline") is None


def test_family_for_matches_pipeline_objects():
    pipe = _pipe("wan")
    assert family_for(pipe).name == "wan"
    assert family_for("WanPipeline").name == "wan"


# ---------------------------------------------------------------------------------------------
# Tiny twins


@pytest.mark.parametrize("name", FAMILIES)
def test_tiny_twin_generates(name):
    fam = get_family(name)
    pipe = _pipe(name)
    assert type(pipe).__name__ == fam.pipeline_class
    assert type(pipe.transformer).__name__ == fam.transformer_class
    out = _baseline(name)
    gen = fam.tiny_generation
    if fam.output == "video":
        assert out.shape == (gen["num_frames"], gen["height"], gen["width"], 3)
    else:
        assert out.shape == (gen["height"], gen["width"], 3)
    assert np.isfinite(out).all()
    # default output type: PIL images / frames
    import torch

    res = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **gen)
    if fam.output == "video":
        frames = res.frames[0]
        assert len(frames) == gen["num_frames"]
    else:
        assert res.images[0].size == (gen["width"], gen["height"])


@pytest.mark.parametrize("name", FAMILIES)
def test_tiny_twin_is_deterministic(name):
    fam = get_family(name)
    pipe = _pipe(name)
    a = _baseline(name)
    assert np.array_equal(a, _generate(pipe, fam, 0))
    assert not np.array_equal(a, _generate(pipe, fam, 1))


def test_tiny_twin_rebuild_is_identical():
    fam = get_family("wan")
    again = fam.build_tiny()
    assert np.array_equal(_baseline("wan"), _generate(again, fam, 0))


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.slow  # every method through each family's engine
def test_save_and_reload_offline(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import diffusers

    fam = get_family(name)
    _pipe(name).save_pretrained(tmp_path)
    index = yaml.safe_load((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == fam.pipeline_class
    for comp, spec in index.items():
        if isinstance(spec, list) and spec[0] is not None:
            lib = importlib.import_module(spec[0])
            assert hasattr(lib, spec[1]), f"{comp}: {spec} is not importable"
    expected = _baseline(name)
    for cls in (diffusers.DiffusionPipeline, getattr(diffusers, fam.pipeline_class)):
        loaded = cls.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded).__name__ == fam.pipeline_class
        assert np.array_equal(expected, _generate(loaded, fam, 0)), f"{cls.__name__}.from_pretrained differs"


# ---------------------------------------------------------------------------------------------
# Method x family matrix


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.slow  # every method through each family's engine
def test_recorded_method_support_holds(name):
    """The recorded matrix, re-found by the probe that runs through the engine (as `repro methods --probe`)."""
    from experiments.families.matrix import PROMPT as PROBE_PROMPT
    from experiments.families.matrix import probe_engine, probe_method
    from experiments.runner import GenerationRequest

    fam = get_family(name)
    engine = probe_engine(fam)
    base = engine.generate(GenerationRequest(PROBE_PROMPT, 0))
    import importlib.util

    library = LIBRARY_METHODS if importlib.util.find_spec("cache_dit") else ()  # the optional cache-dit columns
    for method in (*METHODS, *library):
        ms = fam.methods[method]
        if ms.status in ("untested", "n/a"):  # n/a: defined for another model; whatever ran would not be it
            continue
        res = probe_method(engine, method, baseline=base)
        if ms.status == "supported":
            assert res.ok, f"{name}.{method} is recorded supported but failed: {res.error}"
            assert res.restored, f"{name}.{method}: removing the cache did not restore the baseline"
            if method in ("mag_cache", "teacache") and fam.cfg == "separate":
                assert set(res.info["calibration"]) == {"cond", "uncond"}
        else:
            # Recorded unsupported: enabling it raises, or it runs as a detected no-op; either way the
            # record says why. If diffusers starts supporting it, this fails: update the record.
            assert ms.reason
            assert not res.ok, f"{name}.{method} is recorded unsupported but now works: update the record"
    # the pipeline is left clean for the other tests
    assert np.array_equal(base.frames, engine.generate(GenerationRequest(PROBE_PROMPT, 0)).frames)


# ---------------------------------------------------------------------------------------------
# Configs for real GPUs

CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if p.name != "tiny.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path):
    spec = Spec.model_validate(yaml.safe_load(path.read_text()))
    fam = get_family(path.stem) if path.stem in FAMILIES else None
    if fam is not None:
        assert spec.model.id in fam.hub_ids
        for m in spec.methods:
            assert fam.supports(m.name), f"{path.name}: {m.name} is not supported by {fam.name}"
