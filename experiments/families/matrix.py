"""Probe which cache methods of ``diffusers.hooks`` work on a family's tiny twin.

The method x family matrix recorded in each family module was found with this probe; rerun it
after upgrading diffusers to see whether the recorded statuses still hold::

    python -m experiments.families.matrix            # every family
    python -m experiments.families.matrix wan flux   # some

For each method it enables the cache on ``pipe.transformer`` with a small positive setting,
generates with the family's ``tiny_generation``, disables the cache, and reports whether it ran,
whether the output moved away from the no-cache baseline, and the exception if it failed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from experiments.families import METHODS, Family, all_families, get_family
from experiments.methods import enable_cache  # the runner's path: CacheMixin or the apply_* fallback

PROMPT = "a cat riding a horse on mars"


@dataclass
class ProbeResult:
    method: str
    ok: bool                       # ran, and actually cached (not a silent no-op)
    changed: bool = False          # output differs from the no-cache baseline
    restored: bool = False         # after disable_cache() the baseline comes back exactly
    error: str = ""
    ran: bool = False              # generation finished without an exception (even if a no-op)
    hooked_modules: int = 0        # modules that got a cache hook
    warnings: list = field(default_factory=list)
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


def generate(pipe, family: Family, seed: int = 0, **overrides):
    """One tiny generation as a float numpy array (image HxWx3 or video FxHxWx3)."""
    import torch

    kwargs = {**family.tiny_generation, **overrides}
    out = pipe(PROMPT, generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs)
    arr = out.frames[0] if family.output == "video" else out.images[0]
    return arr


def parse_mag_ratios(text: str) -> list[list[float]]:
    """The ratio arrays MagCache prints at the end of a calibration run (one per cache context)."""
    arrays = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]") and not line.startswith("[MagCache"):
            nums = re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", line)
            arrays.append([float(x) for x in nums])
    return arrays


def calibrate_mag_cache(pipe, family: Family, seed: int = 0) -> list[list[float]]:
    """Run one MagCache calibration pass; returns the printed ratio arrays (cond first)."""
    from diffusers.hooks import MagCacheConfig

    steps = family.tiny_generation.get("num_inference_steps", 8)
    buf = io.StringIO()
    disable = enable_cache(pipe.transformer, MagCacheConfig(calibrate=True, num_inference_steps=steps))
    try:
        with contextlib.redirect_stdout(buf):
            generate(pipe, family, seed)
    finally:
        disable()
    return parse_mag_ratios(buf.getvalue())


def method_config(method: str, pipe, family: Family, mag_ratios: list[float] | None = None, **params: Any):
    """A config object for `method` with a small positive setting, plus the family's fixed extras."""
    from diffusers.hooks import (
        FasterCacheConfig,
        FirstBlockCacheConfig,
        MagCacheConfig,
        PyramidAttentionBroadcastConfig,
        SeaCacheConfig,
        TaylorSeerCacheConfig,
    )

    support = family.methods.get(method)
    extra = dict(support.extra) if support else {}
    steps = family.tiny_generation.get("num_inference_steps", 8)
    timestep = lambda: pipe.current_timestep  # noqa: E731
    if method == "first_block_cache":
        kw = {"threshold": 0.2}
        cls = FirstBlockCacheConfig
    elif method == "mag_cache":
        if mag_ratios is None:
            raise ValueError("mag_cache needs calibrated mag_ratios (see calibrate_mag_cache)")
        kw = {"threshold": 0.24, "retention_ratio": 0.2, "max_skip_steps": 2, "num_inference_steps": steps,
              "mag_ratios": list(mag_ratios)}
        cls = MagCacheConfig
    elif method == "pyramid_attention_broadcast":
        kw = {"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": (-1, 1000),
              "current_timestep_callback": timestep}
        cls = PyramidAttentionBroadcastConfig
    elif method == "faster_cache":
        # Timestep windows as in diffusers' defaults: the first steps (t near 1000) must run in full,
        # otherwise the attention hook tries to approximate from an empty cache.
        kw = {"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": (-1, 681),
              "unconditional_batch_skip_range": 2, "unconditional_batch_timestep_skip_range": (-1, 641),
              "current_timestep_callback": timestep, "attention_weight_callback": lambda _: 0.5}
        cls = FasterCacheConfig
    elif method == "taylorseer_cache":
        kw = {"cache_interval": 2, "disable_cache_before_step": 1}
        cls = TaylorSeerCacheConfig
    elif method == "sea_cache":
        kw = {"threshold": 0.2}
        cls = SeaCacheConfig
    else:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    kw.update(extra)
    kw.update(params)
    return cls(**kw)


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


def count_hooked_modules(module) -> int:
    """Submodules carrying at least one diffusers hook (cache hooks attach here)."""
    n = 0
    for sub in module.modules():
        registry = getattr(sub, "_diffusers_hook", None)
        if registry is not None and registry.hooks:
            n += 1
    return n


def probe_method(pipe, family: Family, method: str, baseline=None, seed: int = 0) -> ProbeResult:
    """Enable `method`, generate, disable; never raises (the error is in the result)."""
    import numpy as np

    if baseline is None:
        baseline = generate(pipe, family, seed)
    res = ProbeResult(method, ok=False)
    t0 = time.perf_counter()
    enabled = False
    try:
        ratios = None
        if method == "mag_cache":
            arrays = calibrate_mag_cache(pipe, family, seed)
            res.info["calibration_arrays"] = len(arrays)
            if not arrays:
                raise RuntimeError("MagCache calibration printed no ratios")
            ratios = arrays[0]
            res.info["mag_ratios"] = arrays
            if all(r == 0 or r != r for r in ratios[1:]):
                res.ran = True
                res.error = f"no-op: degenerate MagCache calibration ratios {ratios[:4]}... (no residual measured)"
                return _done(res, t0)
        cfg = method_config(method, pipe, family, mag_ratios=ratios)
        disable = enable_cache(pipe.transformer, cfg)
        enabled = True
        res.hooked_modules = count_hooked_modules(pipe.transformer)
        with collect_warnings() as messages:
            out = generate(pipe, family, seed)
        res.warnings = [m for m in messages if "experimental" not in m]
        disable()
        enabled = False
        if not np.isfinite(out).all():
            raise FloatingPointError("output has non-finite values")
        res.ran = True
        fail_open = [m for m in res.warnings if "fail-open" in m or "running full" in m]
        if res.hooked_modules == 0:
            res.error = "no-op: the config hooked no module of the transformer"
        elif fail_open:
            res.error = "no-op: " + fail_open[0]
        else:
            res.ok = True
        res.changed = bool(np.abs(out - baseline).max() > 0)
        res.restored = bool((generate(pipe, family, seed) == baseline).all())
    except Exception as exc:  # noqa: BLE001 - the probe reports every failure
        res.error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
        res.info["traceback"] = traceback.format_exc(limit=-3)
        if enabled:
            with contextlib.suppress(Exception):
                disable()
    return _done(res, t0)


def _done(res: ProbeResult, t0: float) -> ProbeResult:
    res.seconds = time.perf_counter() - t0
    return res


def probe_family(family: Family | str, methods=METHODS) -> dict[str, ProbeResult]:
    family = get_family(family) if isinstance(family, str) else family
    pipe = family.build_tiny()
    baseline = generate(pipe, family)
    return {m: probe_method(pipe, family, m, baseline) for m in methods}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(all_families())
    mismatches = 0
    for name in names:
        fam = get_family(name)
        for m, r in probe_family(fam).items():
            recorded = fam.methods[m].status
            found = "supported" if r.ok else "unsupported"
            flag = "" if recorded == found or recorded == "untested" else "   <-- recorded: " + recorded
            mismatches += bool(flag)
            detail = f"changed={r.changed} restored={r.restored} hooked={r.hooked_modules}" if r.ok else r.error
            print(f"{name:15s} {m:28s} {found:11s} {r.seconds:6.2f}s  {detail}{flag}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
