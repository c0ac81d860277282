"""Cost of the runner's instrumentation on the tiny Wan pipeline, measured side by side.

One pipeline object serves both sides, so weight layout and allocator state are shared:
"bare" runs have every counter and timer removed (plain diffusers), "instrumented" runs go
through `Engine.generate` with counting hooks, timers and the step callback installed. Runs
alternate, and the medians and their ratio are printed (target: < 1.03).

    OMP_NUM_THREADS=1 python benchmarks/bench_instrumentation.py [--repeats 21] [--steps 10] [--size 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from experiments.runner import Engine, GenerationRequest
from experiments.spec import Spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=21)
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
    engine = Engine(spec)
    pipe, instrumentation = engine.pipe, engine.instrumentation
    request = GenerationRequest(prompt="a fox", seed=0)

    def run_bare() -> float:
        instrumentation.remove()
        t0 = time.perf_counter()
        with torch.inference_mode():
            pipe(prompt="a fox", output_type="np", generator=torch.Generator("cpu").manual_seed(0), **gen)
        elapsed = time.perf_counter() - t0
        instrumentation.install()
        return elapsed

    def run_instrumented() -> float:
        t0 = time.perf_counter()
        engine.generate(request)
        return time.perf_counter() - t0

    run_bare(), run_instrumented()  # warm-up both
    bare_s, inst_s = [], []
    for i in range(args.repeats):
        for fn in ((run_bare, run_instrumented) if i % 2 == 0 else (run_instrumented, run_bare)):
            (bare_s if fn is run_bare else inst_s).append(fn())
    b, m = statistics.median(bare_s), statistics.median(inst_s)
    print(f"tiny wan, {args.steps} steps, {args.size}x{args.size}x{args.frames}, "
          f"{args.repeats} alternating runs each, torch threads {torch.get_num_threads()}")
    print(f"bare diffusers  median {b * 1000:8.1f} ms  (min {min(bare_s) * 1000:.1f})")
    print(f"instrumented    median {m * 1000:8.1f} ms  (min {min(inst_s) * 1000:.1f})")
    print(f"ratio instrumented/bare: {m / b:.3f}  (target < 1.03; includes Engine.generate's own work)")


if __name__ == "__main__":
    main()
