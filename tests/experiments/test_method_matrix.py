"""Every family x every supported cache method on the tiny twins, through the engine.

For each pair: the method's no-op setting (where it has one) reproduces the baseline
exactly, and a positive setting skips work (compute fraction < 1) while keeping the
family's output shape. The matrix that `repro methods` prints is the one tested here.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from experiments.families import LIBRARY_METHODS, METHODS, all_families
from experiments.methods import get_method
from experiments.runner import Engine, GenerationRequest
from experiments.spec import Spec

pytestmark = pytest.mark.slow

PAIRS = [(f, m) for f, fam in sorted(all_families().items()) for m in (*METHODS, *LIBRARY_METHODS)
         if fam.methods.get(m) is not None and fam.methods[m].status == "supported"]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    cache: dict[str, tuple[Engine, object]] = {}

    def get(family: str):
        if family not in cache:
            fam = all_families()[family]
            # the twin's own step count: at 6 steps FasterCache on SD3 only halves batches (which the sublayer
            # counter does not see) and EasyCache on Wan 2.2 is still warming up
            gen = dict(fam.tiny_generation)
            spec = Spec.model_validate({
                "name": f"matrix-{family}", "model": {"tiny": family, "device": "cpu"}, "generation": gen,
                "prompts": ["a red fox in snow"], "seeds": [0], "methods": [{"name": "first_block_cache"}],
                "timing": {"warmup": 0, "repeats": 1}, "output": {"dir": str(tmp_path_factory.mktemp(family))},
            })
            engine = Engine(spec)
            cache[family] = (engine, engine.generate(GenerationRequest(prompt="a red fox in snow", seed=0)))
        return cache[family]
    return get


@pytest.mark.parametrize("family, method", PAIRS)
def test_supported_method_on_family(engines, family, method):
    engine, baseline = engines(family)
    fam = all_families()[family]
    registered = get_method(method)
    ratios = None
    if registered.calibrated_field:  # MagCache ratios, TeaCache coefficients: the path `repro calibrate` takes
        got = engine.calibrate(method, [("a red fox in snow", 0)])
        ratios = tuple(got.get("cond") or next(iter(got.values())))
    if registered.no_op:
        same = engine.generate(GenerationRequest("a red fox in snow", 0, method, registered.no_op, calibration=ratios))
        assert np.array_equal(same.frames, baseline.frames), f"{method} no-op differs from baseline on {family}"
    fast = engine.generate(GenerationRequest("a red fox in snow", 0, method, registered.probe, calibration=ratios))
    assert fast.frames.shape == baseline.frames.shape
    assert (fast.frames.shape[0] > 1) == (fam.output == "video")
    s = fast.summary()
    assert s["compute_executed"] < baseline.summary()["compute_executed"], f"{method} skipped nothing on {family}"


def test_cli_matrix_matches_registry():
    from repro.cli import main

    out = CliRunner().invoke(main, ["methods"]).output.split("\n\n")
    tables = [block.splitlines() for block in out if block.startswith("family")]
    assert [t[0].split()[1:] for t in tables] == [list(METHODS), list(LIBRARY_METHODS)]
    for columns, table in zip((METHODS, LIBRARY_METHODS), tables):
        rows = {line.split()[0]: line.split()[1:] for line in table[1:]}
        for name, fam in all_families().items():
            assert rows[name] == [fam.methods[m].status if m in fam.methods else "untested" for m in columns]
    supported = sum(f.supports(m) for f in all_families().values() for m in METHODS)
    # a method defined for another model (magcache_official_eval: Wan2.1's evaluation script) is n/a elsewhere:
    # not a cell it could support, so the count leaves it out and says how many
    n_a = sum(not f.methods[m].applicable for f in all_families().values() for m in METHODS)
    assert n_a == len(all_families()) - 1  # magcache_official_eval everywhere but on Wan
    assert (f"supported cells: {supported} of {len(all_families()) * len(METHODS) - n_a} diffusers and project "
            f"methods ({n_a} n/a: defined for another model)") in "\n\n".join(out)
    assert supported >= 56  # issue 26: at least 56 cells over the families x diffusers and project methods
