"""Cost of the runner's instrumentation: the tiny Wan pipeline bare vs instrumented, side by side.

Two identical pipelines (same seeded random weights) run interleaved in one process: one
is plain diffusers, the other carries the counting hooks, timers and step callback of
`experiments.runner.Engine`. Prints the median of each and the ratio (target: < 1.03).

    python benchmarks/bench_instrumentation.py [--repeats 15] [--steps 10] [--size 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from experiments.families import get_family
from experiments.runner import Engine, GenerationRequest
from experiments.spec import Spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--frames", type=int, default=5)
    args = ap.parse_args()
    gen = {"height": args.size, "width": args.size, "num_frames": args.frames,
           "num_inference_steps": args.steps, "guidance_scale": 5.0, "max_sequence_length": 16}
    spec = Spec.model_validate({
        "name": "bench", "model": {"tiny": "wan", "device": "cpu"}, "generation": gen, "prompts": ["a fox"],
        "seeds": [0], "methods": [{"name": "first_block_cache"}], "timing": {"warmup": 0, "repeats": 1},
    })
    family = get_family("wan")
    bare = family.build_tiny()
    bare.set_progress_bar_config(disable=True)
    engine = Engine(spec, pipe=family.build_tiny())
    request = GenerationRequest(prompt="a fox", seed=0)

    def run_bare() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            bare(prompt="a fox", output_type="np", generator=torch.Generator("cpu").manual_seed(0), **gen)
        return time.perf_counter() - t0

    def run_instrumented() -> float:
        t0 = time.perf_counter()
        engine.generate(request)
        return time.perf_counter() - t0

    run_bare(), run_instrumented()  # warm-up both
    bare_s, inst_s = [], []
    for i in range(args.repeats):
        order = (run_bare, run_instrumented) if i % 2 == 0 else (run_instrumented, run_bare)
        for fn in order:
            (bare_s if fn is run_bare else inst_s).append(fn())
    b, m = statistics.median(bare_s), statistics.median(inst_s)
    print(f"tiny wan, {args.steps} steps, {args.size}x{args.size}x{args.frames}, {args.repeats} interleaved runs each")
    print(f"bare diffusers     median {b * 1000:8.1f} ms  (min {min(bare_s) * 1000:.1f})")
    print(f"instrumented       median {m * 1000:8.1f} ms  (min {min(inst_s) * 1000:.1f})")
    print(f"ratio instrumented/bare: {m / b:.3f}  (target < 1.03)")


if __name__ == "__main__":
    main()
