"""Probe which cache methods work on a family's tiny twin, through the engine that generates sweeps.

The method x family matrix recorded in each family module was found with this probe; rerun it
after upgrading diffusers (or to try a plugin) to see whether the recorded statuses still hold::

    repro methods --probe                       # every family
    repro methods --probe --family wan          # one
    python -m experiments.families.matrix wan flux

Every method the families state is probed: diffusers', the project's and cache-dit's (a family's
adapter supplies what its pipeline lacks, as in a sweep). For each method the probe calibrates it if it needs calibration (``Engine.calibrate``, the path
``repro calibrate`` takes), generates with the method's registered ``probe`` setting through
``Engine.generate`` (the same enable / disable path and compute counting as a sweep), and reports
whether it ran, whether it skipped work (compute below the baseline's), whether the output moved
away from the baseline, and whether the baseline comes back exactly after the cache is removed.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import traceback
from dataclasses import dataclass, field

from experiments.families import LIBRARY_METHODS, METHODS, Family, all_families, get_family

PROMPT = "a cat riding a horse on mars"


@dataclass
class ProbeResult:
    method: str
    ok: bool                       # ran, skipped work and changed the output (not a silent no-op)
    changed: bool = False          # output differs from the no-cache baseline
    restored: bool = False         # after the cache is removed the baseline comes back exactly
    error: str = ""
    ran: bool = False              # generation finished without an exception (even if a no-op)
    compute: tuple[int, int] = (0, 0)  # sublayers executed with the cache, without it
    warnings: list = field(default_factory=list)
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


def generate(pipe, family: Family, seed: int = 0, **overrides):
    """One tiny generation straight from a pipeline, as a float array (image HxWx3 or video FxHxWx3)."""
    import torch

    kwargs = {**family.tiny_generation, **overrides}
    out = pipe(PROMPT, generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs)
    return out.frames[0] if family.output == "video" else out.images[0]


def probe_engine(family: Family | str, steps: int | None = None, plugins: tuple[str, ...] = ()):
    """An Engine on the family's tiny twin (CPU, one call per generation)."""
    from experiments.runner import Engine
    from experiments.spec import Spec

    family = get_family(family) if isinstance(family, str) else family
    gen = dict(family.tiny_generation)
    if steps is not None:
        gen["num_inference_steps"] = steps
    spec = Spec.model_validate({
        "name": f"probe-{family.name}", "model": {"tiny": family.name, "device": "cpu"}, "generation": gen,
        "prompts": [PROMPT], "seeds": [0], "methods": [{"name": "first_block_cache"}], "plugins": list(plugins),
        "timing": {"warmup": 0, "repeats": 1},
    })
    return Engine(spec)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def collect_warnings():
    """Warnings logged by diffusers (e.g. SeaCache's fail-open notices) while the block runs."""
    handler = _Collect()
    log = logging.getLogger("diffusers")
    log.addHandler(handler)
    try:
        yield handler.messages
    finally:
        log.removeHandler(handler)


def probe_method(engine, method: str, baseline=None, seed: int = 0) -> ProbeResult:
    """Calibrate (if the method needs it), generate with its probe setting, check; never raises."""
    import numpy as np

    from experiments.methods import get_method
    from experiments.runner import GenerationRequest

    if baseline is None:
        baseline = engine.generate(GenerationRequest(PROMPT, seed))
    res = ProbeResult(method, ok=False)
    t0 = time.perf_counter()
    try:
        spec = get_method(method)
        calibration = None
        if spec.calibrated_field:
            values = engine.calibrate(method, [(PROMPT, seed)])
            res.info["calibration"] = values
            calibration = tuple(values.get("cond") or next(iter(values.values())))
        with collect_warnings() as messages:
            out = engine.generate(GenerationRequest(PROMPT, seed, method, dict(spec.probe), calibration=calibration))
        res.warnings = [m for m in messages if "experimental" not in m]
        res.ran = True
        executed, possible = out.summary()["compute_executed"], baseline.summary()["compute_executed"]
        res.compute = (executed, possible)
        res.changed = not np.array_equal(out.frames, baseline.frames)
        fail_open = [m for m in res.warnings if "fail-open" in m or "running full" in m]
        if fail_open:
            res.error = "no-op: " + fail_open[0]
        elif executed >= possible:
            res.error = f"no-op: computed {executed} of {possible} sublayers (nothing skipped)"
        elif not res.changed:  # work skipped yet nothing reused changed the output: what was skipped did nothing
            res.error = (f"no-op: computed {executed} of {possible} sublayers but the output equals the baseline "
                         f"(degenerate calibration {str(res.info.get('calibration', ''))[:80]})")
        else:
            res.ok = True
        res.restored = np.array_equal(engine.generate(GenerationRequest(PROMPT, seed)).frames, baseline.frames)
    except Exception as exc:  # noqa: BLE001 - the probe reports every failure
        res.error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
        res.info["traceback"] = traceback.format_exc(limit=-3)
    res.seconds = time.perf_counter() - t0
    return res


def probe_family(family: Family | str, methods=None, plugins: tuple[str, ...] = ()) -> dict[str, ProbeResult]:
    from experiments.runner import GenerationRequest

    engine = probe_engine(family, plugins=plugins)
    baseline = engine.generate(GenerationRequest(PROMPT, 0))
    return {m: probe_method(engine, m, baseline)
            for m in (methods if methods is not None else (*METHODS, *LIBRARY_METHODS))}


def report(names: list[str], methods=None, plugins: tuple[str, ...] = (), echo=print) -> int:
    """Probe and print one line per (family, method); returns how many disagree with the record."""
    mismatches = 0
    for name in names:
        fam = get_family(name)
        wanted = list(methods or (*METHODS, *LIBRARY_METHODS))
        # a method defined for another model ("n/a") is not probed: whatever ran would not be the method
        skipped = [m for m in wanted if m in fam.methods and not fam.methods[m].applicable]
        for m in skipped:
            echo(f"{name:15s} {m:28s} {'n/a':11s} {0:6.2f}s  not probed: {fam.methods[m].reason}")
        for m, r in probe_family(fam, [m for m in wanted if m not in skipped], plugins).items():
            support = fam.methods.get(m)
            recorded = support.status if support else "untested"
            found = "supported" if r.ok else "unsupported"
            flag = "" if recorded in (found, "untested") else "   <-- recorded: " + recorded
            mismatches += bool(flag)
            detail = (f"compute {r.compute[0]}/{r.compute[1]} changed={r.changed} restored={r.restored}"
                      if r.ok else r.error)
            echo(f"{name:15s} {m:28s} {found:11s} {r.seconds:6.2f}s  {detail}{flag}")
    return mismatches


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(all_families())
    return 1 if report(names) else 0


if __name__ == "__main__":
    raise SystemExit(main())
