"""Our own work per generation: a sweep's wall time minus its pipeline calls, stage by stage.

Runs one in-process sweep of the tiny twin (random-weight tiny Wan: 16x16, 5 frames, 4 steps by
default) over `--prompts` x `--seeds` items and First Block Cache at three thresholds, timing each
stage of the harness by wrapping its function (the wrappers cost about a microsecond a call):

    pipeline            Engine._call: the diffusers pipeline call itself (warm-up included)
    timed-call frame    Engine._timed_call minus the call: counters, the clock, output to uint8 frames
    cache on/off        Engine.generate minus its timed calls: the cache (and optimizations) applied and removed
    media               writing each generation's lossless frames (experiments.media.write_frames)
    store row           the generation's row (repro.sweep._record minus its media)
    item set-up         the item's requests and stored baselines (repro.sweep._unit)
    scoring             the metrics (Scoring.score_item) and their rows (repro.scoring.write)
    driver, progress    the rest of the executor's loop: callbacks, progress, events

Overhead = (loop wall - pipeline) / generations; the goal is at most 50 ms on the tiny twin. Start-up
(imports, pipeline load, metric networks) happens once per sweep and is printed apart.

``--code DIR`` measures another checkout of the project instead (e.g. an older commit: `git worktree add
/tmp/before COMMIT`); a stage whose function that code lacks is counted in "driver, progress". Run both
one after the other on a quiet machine and compare the per-generation figures.

    python benchmarks/bench_overhead.py [--prompts 8] [--seeds 4] [--metrics psnr,ssim] [--wandb disabled]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPENT: dict[str, float] = defaultdict(float)


def timed(owner, name: str, stage: str) -> None:
    """Replace owner.name by a wrapper adding its wall time to SPENT[stage]."""
    real = getattr(owner, name, None)
    if real is None:
        return

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            SPENT[stage] += time.perf_counter() - t0

    setattr(owner, name, wrapper)


def timed_context(owner, name: str, stage: str) -> None:
    """The same for a context manager: the time spent entering and leaving it (not its body)."""
    real = getattr(owner, name, None)
    if real is None:
        return

    @contextlib.contextmanager
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        with real(*args, **kwargs) as value:
            SPENT[stage] += time.perf_counter() - t0
            yield value
            t0 = time.perf_counter()
        SPENT[stage] += time.perf_counter() - t0

    setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--metrics", default="psnr,ssim")
    ap.add_argument("--wandb", default="disabled", choices=["disabled", "offline"])
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.code.resolve()))

    import torch

    import repro.executors.local
    import repro.scoring
    import repro.sweep
    from experiments.runner import Engine
    from experiments.spec import Spec

    torch.set_num_threads(1)
    timed(Engine, "_call", "pipeline")
    timed(Engine, "_timed_call", "timed call")
    timed(Engine, "generate", "generate")
    timed_context(Engine, "prepared", "cache on/off")
    timed(repro.sweep, "write_frames", "media")
    timed(repro.sweep, "_record", "record")
    timed(repro.sweep, "_unit", "item set-up")
    timed(getattr(repro.scoring, "Scoring", None), "score_item", "scoring")
    timed(repro.scoring, "write", "score rows")
    timed(repro.executors.local.LocalExecutor, "run", "loop")
    timed(repro.executors.local.LocalExecutor, "start", "start")

    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        spec = Spec.model_validate({
            "name": "overhead", "model": {"tiny": "wan", "device": "cpu"},
            "generation": {"height": args.size, "width": args.size, "num_frames": 5,
                           "num_inference_steps": args.steps, "guidance_scale": 5.0, "max_sequence_length": 16},
            "prompts": [f"prompt number {i}" for i in range(args.prompts)], "seeds": list(range(args.seeds)),
            "methods": [{"name": "first_block_cache", "sweep": {"threshold": [0.0, 0.1, 0.3]}}],
            "metrics": {"names": args.metrics.split(","), "device": "cpu", "allow_random_weights": True},
            "timing": {"warmup": 1, "repeats": 1}, "wandb": {"mode": args.wandb, "project": "bench-overhead"},
            "output": {"dir": str(Path(tmp) / "run"), "mp4": False},
        })
        t0 = time.perf_counter()
        outcome = repro.sweep.run_sweep(spec, stream=open("/dev/null", "w"))
        wall = time.perf_counter() - t0
    n = outcome.generated
    if outcome.exit_code != 0 or n == 0:
        raise SystemExit(f"the sweep failed (exit {outcome.exit_code})")

    s = SPENT
    stages = {
        "timed-call frame": s["timed call"] - s["pipeline"],
        "cache on/off": s["cache on/off"],
        "media": s["media"],
        "store row": s["record"] - s["media"],
        "item set-up": s["item set-up"],
        "scoring": s["scoring"],
        "score rows": s["score rows"],
    }
    stages["driver, progress"] = s["loop"] - s["pipeline"] - sum(stages.values())
    overhead = s["loop"] - s["pipeline"]
    print(f"code: {args.code.resolve()}")
    print(f"{n} generations ({args.prompts} prompts x {args.seeds} seeds x 4 points), tiny twin "
          f"{args.size}x{args.size}x5, {args.steps} steps, metrics {args.metrics}, W&B {args.wandb}, 1 torch thread")
    print(f"sweep wall {wall:.2f} s: start-up {s['start']:.2f} s (pipeline, metric networks), "
          f"generation loop {s['loop']:.2f} s, the rest {wall - s['loop'] - s['start']:.2f} s "
          f"(plan, store, tables)")
    print(f"pipeline calls {s['pipeline'] * 1e3 / n:7.1f} ms per generation")
    print(f"our own work   {overhead * 1e3 / n:7.1f} ms per generation (goal: at most 50)")
    for name, value in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {name:18s} {value * 1e3 / n:7.1f} ms")


if __name__ == "__main__":
    main()
