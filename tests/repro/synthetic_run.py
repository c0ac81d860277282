"""A finished run directory written straight into the store (no model): every job of a spec's plan with random
frames, timings and the scores its metrics ask for. For tests of the verbs that only read a run."""

from __future__ import annotations

import numpy as np

from experiments.media import write_frames
from experiments.spec import Spec
from repro.plan import build_plan, versions
from repro.scoring import needed
from repro.store import Store
from repro.sweep import point_records


def write_finished_run(spec: Spec, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    plan = build_plan(spec)
    run_dir = spec.run_dir
    store = Store(run_dir)
    sizes: dict[str, int] = {}
    for job in plan.jobs:
        sizes[job.point_id] = sizes.get(job.point_id, 0) + 1
    store.set_meta(spec=spec.model_dump(mode="json"), spec_hash=spec.spec_hash(), versions=versions(),
                   environment={"python": "synthetic"}, session={"pid": 0, "state": "ended"},
                   plan_keys=[j.key for j in plan.jobs], plan_points=sizes)
    store.put_points(point_records(plan, store))
    g = spec.generation
    for job in plan.jobs:
        frames = rng.integers(0, 256, (g.num_frames or 1, g.height, g.width, 3), dtype=np.uint8)
        write_frames(frames, run_dir / "media" / job.key, mp4=False)
        e2e = float(rng.uniform(0.5, 1.0)) * (1.0 if job.role == "baseline" else 0.7)
        store.put_generation({
            "key": job.key, "role": job.role, "point_id": job.point_id, "method": job.method, "params": job.params,
            "optimization": job.optimization, "prompt_index": job.prompt_index, "prompt": job.prompt,
            "seed": job.seed, "quality_baseline_key": job.quality_baseline_key,
            "speed_baseline_key": job.speed_baseline_key, "spec_hash": spec.spec_hash(), "code_version": "synthetic",
            "status": "ok", "error": None, "kind": "video", "media_dir": f"media/{job.key}", "mp4": None,
            "num_frames": frames.shape[0], "height": g.height, "width": g.width, "e2e_s": e2e,
            "denoise_s": 0.8 * e2e, "compute_executed": 8, "compute_possible": 8, "peak_memory_bytes": None,
            "summary": {"e2e_s": e2e, "denoise_s": 0.8 * e2e}, "device": "cpu"})
        scores = {}
        for key in needed(spec.metrics, job.quality_baseline_key):
            low, high = (20, 40) if key.startswith("psnr") else (0, 1)
            values = [float(v) for v in rng.uniform(low, high, frames.shape[0])]
            scores[key] = {"value": float(np.mean(values)), "label": key.split("@")[0], "per_frame": values}
        if scores:
            store.put_scores(job.key, scores, reference_key=job.quality_baseline_key)
    store.close()
