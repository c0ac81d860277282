"""What does the Ray executor cost per generation, compared with the local executor?

Runs the same tiny sweep (the tiny Wan twin, a few First Block Cache points) through
LocalExecutor and RayExecutor(workers=1) in this process, at the executor level (no store,
no scoring: those are the driver's and identical for both), and prints:

- start-up: local = pipeline load; Ray = ray.init + actor start + pipeline load in the actor
- per-generation wall time of each (passes interleaved, after one untimed warm-up
  generation), the in-engine generation time (median e2e_s measured inside the engine),
  and the overhead per generation, ray - local, absolute and as a ratio; the time outside
  the engine (dispatch + result transfer) is the part less sensitive to background load.

Both run the same number of torch threads (--threads; Ray gets that many CPUs). Run:

    python benchmarks/bench_ray_overhead.py [--rounds 5] [--threads 1] [--height 16] [--steps 6]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_spec(run_dir: str, height: int, steps: int, thresholds: list[float]):
    from experiments.spec import Spec

    return Spec.model_validate({
        "name": "bench-ray",
        "model": {"tiny": "wan", "device": "cpu"},
        "generation": {"height": height, "width": height, "num_frames": 5, "num_inference_steps": steps,
                       "guidance_scale": 5.0, "max_sequence_length": 16},
        "prompts": ["a red fox in snow", "a lighthouse at night"],
        "seeds": [0],
        "methods": [{"name": "first_block_cache", "sweep": {"threshold": thresholds}}],
        "metrics": {"names": ["psnr"], "device": "cpu"},
        "timing": {"warmup": 0, "repeats": 1},
        "wandb": {"mode": "disabled"},
        "output": {"dir": run_dir, "mp4": False},
    })


def start(executor) -> float:
    t0 = time.perf_counter()
    executor.start()
    first = dataclasses.replace(WORK[0], jobs=WORK[0].jobs[:1])
    executor.run([first], prepare, lambda job: None, lambda job, r: None, lambda s: None, lambda: False)  # warm-up
    return time.perf_counter() - t0


def one_pass(executor) -> tuple[float, list[float]]:
    """Wall seconds per generation for one pass over the work, and the in-engine e2e of each generation."""
    results: list = []
    t0 = time.perf_counter()
    executor.run(WORK, prepare, lambda job: None, lambda job, r: results.append(r), lambda s: None, lambda: False)
    wall = (time.perf_counter() - t0) / len(results)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise RuntimeError(f"{len(failed)} generation(s) failed, e.g. {failed[0]!r}")
    return wall, [r.summary()["e2e_s"] for r in results]


WORK: list = []  # the plan's items (repro.plan.ItemWork)


def prepare(item):
    """The item's unit, as the sweep builds it for a fresh run (every job pending, nothing stored)."""
    from repro.executors.item import ItemUnit
    from repro.sweep import _request

    requests = {j.key: _request(j, {}) for j in item.jobs}
    speed = {g: _request(b, {}) for g, b in item.speed_baselines.items()}
    return ItemUnit(item, requests, speed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="timed passes per executor, interleaved (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (= CPUs given to Ray) for both")
    ap.add_argument("--height", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    args = ap.parse_args()

    import logging
    import tempfile

    import ray
    import torch

    from repro.executors.local import LocalExecutor
    from repro.executors.ray import RayExecutor
    from repro.plan import build_plan, item_major

    spec = make_spec(tempfile.mkdtemp(prefix="bench-ray-"), args.height, args.steps, args.thresholds)
    plan = build_plan(spec)
    WORK[:] = item_major(plan, plan.jobs)
    torch.set_num_threads(args.threads)
    print(f"{len(plan.jobs)} generations per pass ({len(plan.baselines)} baselines, {len(plan.cached)} cached), "
          f"{args.height}x{args.height}x5 frames, {args.steps} steps, {args.rounds} timed passes each, "
          f"{args.threads} torch thread(s), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
          flush=True)

    local = LocalExecutor(spec)
    remote = RayExecutor(spec, workers=1)
    t0 = time.perf_counter()
    # Ray with exactly --threads CPUs, so its single worker also runs --threads torch threads.
    ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    ray_init = time.perf_counter() - t0
    try:
        startup = {"local": start(local), "ray": start(remote)}
        walls: dict[str, list[float]] = {"local": [], "ray": []}
        engine: dict[str, list[float]] = {"local": [], "ray": []}
        for _ in range(args.rounds):  # interleaved, so both see the same background load
            for name, ex in (("local", local), ("ray", remote)):
                wall, e2e = one_pass(ex)
                walls[name].append(wall)
                engine[name].extend(e2e)
    finally:
        remote.close()
        ray.shutdown()

    med = {k: statistics.median(v) for k, v in walls.items()}
    eng = {k: statistics.median(v) for k, v in engine.items()}
    outside = {k: med[k] - eng[k] for k in med}  # dispatch, transfer, bookkeeping: not generating
    print(f"{'':30s}{'local':>12s}{'ray (1 worker)':>16s}")
    print(f"{'start-up (s)':30s}{startup['local']:12.2f}{startup['ray'] + ray_init:16.2f}"
          f"   (ray: ray.init {ray_init:.2f} + actor start and pipeline load {startup['ray']:.2f}; "
          f"both include one warm-up generation)")
    print(f"{'wall per generation (ms)':30s}{med['local'] * 1e3:12.1f}{med['ray'] * 1e3:16.1f}")
    print(f"{'  in-engine e2e, median (ms)':30s}{eng['local'] * 1e3:12.1f}{eng['ray'] * 1e3:16.1f}")
    print(f"{'  outside the engine (ms)':30s}{outside['local'] * 1e3:12.1f}{outside['ray'] * 1e3:16.1f}")
    for name in ("local", "ray"):
        print(f"  {name} passes (ms/gen): {' '.join(f'{w * 1e3:.1f}' for w in walls[name])}")
    over = med["ray"] - med["local"]
    print(f"overhead per generation, ray - local: {over * 1e3:+.1f} ms wall ({med['ray'] / med['local']:.2f}x); "
          f"{(outside['ray'] - outside['local']) * 1e3:+.1f} ms outside the engine")


if __name__ == "__main__":
    main()
