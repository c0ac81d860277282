"""How long the verbs that generate nothing take, now and before issue 28 (validation without torch).

Times, each in a fresh process, median of --repeats runs after one warm-up run (which also writes the
bytecode caches, as a user's first run does; PYTHONDONTWRITEBYTECODE is dropped for the children):

* ``repro --help``;
* ``repro validate`` on configs/wan.yaml and configs/tiny.yaml;
* ``repro sweep SPEC --dry-run`` and ``repro sweep SPEC`` on a finished run of 1024 generations (nothing to do).

beside the same commands run against a checkout of another commit ("today": --base, by default the main
commit this work started from; extracted with ``git archive``, run with PYTHONPATH pointing there), and the
maximum resident memory of each (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a helper process that
runs only that command). With --outputs (default) it also runs ``repro validate`` on every spec of configs/
and on a few refusals with both checkouts and says whether stdout, stderr and exit code are identical.

The finished run is synthetic but made of real rows: a real tiny sweep (tiny Wan twin, 16x16, 5 frames, 4
steps, one generation per role) gives a baseline and a cached row with their media and scores; every job of a
1024-generation plan (32 prompts x 4 seeds x (baseline + 7 First Block Cache thresholds)) is written into a
new store as a copy of the row of its role, with its own key, prompt, seed, media folder and timings and
scores jittered around the template's. Goals (2 cores): validate <= 1.5 s and 200 MB, finished re-run <= 3 s.

Measured (2 cores shared with other work, load 4-5; today = 6cc9504), median s / max RSS:

    repro --help                             0.06 s    15 MB      0.06 s   15 MB
    repro validate configs/wan.yaml          9.78 s  1173 MB      0.51 s   59 MB
    repro validate configs/tiny.yaml        10.77 s  1173 MB      0.46 s   55 MB
    repro sweep --dry-run (1024, finished)   9.83 s  1165 MB      0.42 s   61 MB
    repro sweep (1024, finished: re-run)    12.38 s  1257 MB      0.77 s   62 MB
    validate output and exit code identical on 19 of 19 (12 specs of configs/, 7 refusals)

Today's re-run also prints the results table; the re-run now points to `repro pareto` instead (on this
run `repro pareto` takes 2.4-3.3 s and 235 MB, most of it importing scipy.stats for the bootstrap CIs).

    python benchmarks/bench_cli_startup.py [--repeats 3] [--base COMMIT] [--work /tmp/bench-cli-startup]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
BASE = "6cc9504e91599b8ba7d94dfa314d48ee363b08e2"  # main before issue 28's validation without torch
N_PROMPTS, SEEDS, THRESHOLDS = 32, [0, 1, 2, 3], [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5]

# one command in its own process; prints its wall time and the largest RSS among its children (the command)
MEASURE = ("import json, resource, subprocess, sys, time\n"
           "t = time.perf_counter()\n"
           "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
           "wall = time.perf_counter() - t\n"
           "print(json.dumps({'s': wall, 'rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,"
           " 'rc': done.returncode}))\n")


def spec_dict(out: Path, prompts: list[str], seeds: list[int], thresholds: list[float]) -> dict:
    return {"name": "bench-cli-startup", "model": {"tiny": "wan", "device": "cpu"},
            "generation": {"height": 16, "width": 16, "num_frames": 5, "num_inference_steps": 4,
                           "guidance_scale": 5.0, "max_sequence_length": 16},
            "prompts": prompts, "seeds": seeds,
            "methods": [{"name": "first_block_cache", "sweep": {"threshold": thresholds}}],
            "metrics": {"names": ["psnr", "ssim"], "device": "cpu"},
            "timing": {"warmup": 0, "repeats": 1}, "wandb": {"mode": "disabled"},
            "output": {"dir": str(out), "mp4": False}}


def build_finished_run(work: Path) -> Path:
    """The spec file of a finished 1024-generation run in work/finished (see the module docstring)."""
    import numpy as np
    import yaml

    from experiments.spec import validate_spec_data
    from repro.plan import build_plan, versions
    from repro.provenance import environment, write_run_files
    from repro.store import Store
    from repro.sweep import point_records, run_sweep

    template_dir, out = work / "template", work / "finished"
    shutil.rmtree(template_dir, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    prompts = [f"prompt {i}: a red fox running through fresh snow" for i in range(N_PROMPTS)]
    with open(os.devnull, "w") as quiet:
        run_sweep(validate_spec_data(spec_dict(template_dir, prompts[:1], SEEDS[:1], THRESHOLDS[-1:]), "template"),
                  stream=quiet)
    template = Store(template_dir, read_only=True)
    rows = {g["role"]: g for g in template.generations()}
    scores = template.scores()
    data = spec_dict(out, prompts, SEEDS, THRESHOLDS)
    spec = validate_spec_data(data, "bench")
    plan = build_plan(spec)
    assert len(plan.jobs) == 1024, len(plan.jobs)
    rng = np.random.default_rng(0)
    store = Store(out)
    sizes: dict[str, int] = {}
    for job in plan.jobs:
        sizes[job.point_id] = sizes.get(job.point_id, 0) + 1
    env = environment()
    store.set_meta(spec=spec.model_dump(mode="json"), spec_hash=spec.spec_hash(), versions=versions(),
                   environment=env, session={"pid": 0, "state": "ended"}, plan_keys=[j.key for j in plan.jobs],
                   plan_points=sizes)
    write_run_files(out, spec, env)
    store.put_points(point_records(plan, store))
    for job in plan.jobs:
        row = {k: v for k, v in rows[job.role].items() if k not in ("attempts", "created_at", "score_error")}
        shutil.copytree(template_dir / row["media_dir"], out / "media" / job.key)
        jitter = float(rng.uniform(0.9, 1.1))
        row.update(key=job.key, point_id=job.point_id, method=job.method, params=job.params,
                   optimization=job.optimization, prompt_index=job.prompt_index, prompt=job.prompt, seed=job.seed,
                   quality_baseline_key=job.quality_baseline_key, speed_baseline_key=job.speed_baseline_key,
                   spec_hash=spec.spec_hash(), media_dir=f"media/{job.key}", e2e_s=row["e2e_s"] * jitter,
                   denoise_s=row["denoise_s"] * jitter)
        store.put_generation(row)
        own = {m: {**s, "value": s["value"] if s["value"] in (None, float("inf")) else s["value"] * jitter}
               for m, s in scores.get(rows[job.role]["key"], {}).items()}
        if own:
            store.put_scores(job.key, own, reference_key=job.quality_baseline_key)
    store.close()
    spec_file = work / "finished.yaml"
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return spec_file


def checkout(commit: str, work: Path) -> Path:
    """The tree of `commit` (git archive: no worktree is registered)."""
    folder = work / f"checkout-{commit[:12]}"
    if not (folder / "repro" / "cli.py").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def child_env(code: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    return {**env, "PYTHONPATH": str(code), "WANDB_MODE": "disabled"}


def measure(code: Path, args: list[str], repeats: int) -> dict:
    cmd = [sys.executable, "-c", MEASURE, sys.executable, "-m", "repro.cli", *args]
    runs = []
    for _ in range(repeats + 1):  # the first is the warm-up
        out = subprocess.run(cmd, cwd=code, env=child_env(code), capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout))
    timed = runs[1:]
    return {"s": statistics.median(r["s"] for r in timed), "rss_mb": max(r["rss_mb"] for r in timed),
            "rc": {r["rc"] for r in timed}}


def same_output(before: Path, now: Path, args: list[str]) -> bool:
    def run(code: Path):
        done = subprocess.run([sys.executable, "-m", "repro.cli", *args], cwd=code, env=child_env(code),
                              capture_output=True, text=True)
        return done.returncode, done.stdout, done.stderr

    return run(before) == run(now)


REFUSALS = {  # spec changes whose refusal turns on the library facts
    "sea-residual-order": {"methods": [{"name": "sea_cache", "params": {"residual_order": 2}}]},
    "taylor-dtype": {"methods": [{"name": "taylorseer_cache", "params": {"taylor_factors_dtype": "Tensor"}}]},
    "faster-range": {"methods": [{"name": "faster_cache", "params": {"spatial_attention_timestep_skip_range": [1]}}]},
    "fbc-typo": {"methods": [{"name": "first_block_cache", "sweep": {"threshhold": [0.1]}}]},
    "mag-ratios-empty": {"methods": [{"name": "mag_cache", "calibrate": "never", "params": {"mag_ratios": []}}]},
    "pipeline-argument": {"generation": {"height": 16, "width": 16, "num_frames": 5, "num_inference_steps": 4,
                                         "max_sequence_lenght": 16}},
    "device-cuda": {"model": {"tiny": "wan", "device": "cuda"}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", default=BASE, help="the commit to compare with (today)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-cli-startup"))
    parser.add_argument("--no-outputs", dest="outputs", action="store_false",
                        help="skip comparing validate's output on configs/ and refusals with the base commit's")
    args = parser.parse_args()
    import yaml

    args.work.mkdir(parents=True, exist_ok=True)
    before = checkout(args.base, args.work)
    spec_file = build_finished_run(args.work)
    commands = [("repro --help", ["--help"]),
                ("repro validate configs/wan.yaml", ["validate", str(ROOT / "configs/wan.yaml")]),
                ("repro validate configs/tiny.yaml", ["validate", str(ROOT / "configs/tiny.yaml")]),
                ("repro sweep --dry-run (1024, finished)", ["sweep", str(spec_file), "--dry-run"]),
                ("repro sweep (1024, finished: re-run)", ["sweep", str(spec_file)])]
    print(f"{os.cpu_count()} CPUs; median of {args.repeats} runs after a warm-up; RSS: largest of those runs")
    print(f"{'command':42s} {'today (' + args.base[:7] + ')':>22s} {'now':>22s}")
    results = {}
    for label, cmd in commands:
        old, new = measure(before, cmd, args.repeats), measure(ROOT, cmd, args.repeats)
        results[label] = new
        codes = "" if old["rc"] == new["rc"] == {0} else f"  exit codes {sorted(old['rc'])} / {sorted(new['rc'])}"
        print(f"{label:42s} {old['s']:8.2f} s {old['rss_mb']:7.0f} MB {new['s']:8.2f} s {new['rss_mb']:7.0f} MB"
              f"{codes}", flush=True)
    wan = results["repro validate configs/wan.yaml"]
    rerun = results["repro sweep (1024, finished: re-run)"]
    print(f"goals: validate <= 1.5 s: {wan['s']:.2f} s ({'met' if wan['s'] <= 1.5 else 'NOT met'}); <= 200 MB: "
          f"{wan['rss_mb']:.0f} MB ({'met' if wan['rss_mb'] <= 200 else 'NOT met'}); finished re-run <= 3 s: "
          f"{rerun['s']:.2f} s ({'met' if rerun['s'] <= 3 else 'NOT met'})")
    if not args.outputs:
        return
    specs = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("configs/*.yaml"), *ROOT.glob("configs/paper/*.yaml")])
    cases = [[str(ROOT / s)] for s in specs]
    base = spec_dict(args.work / "refused-run", ["a red fox"], [0], [0.1])
    for name, change in REFUSALS.items():
        path = args.work / f"refusal-{name}.yaml"
        path.write_text(yaml.safe_dump({**base, **change}, sort_keys=False))
        cases.append([str(path)])
    same = [same_output(before, ROOT, ["validate", *c]) for c in cases]
    print(f"repro validate, output and exit code identical to {args.base[:7]}'s: {sum(same)} of {len(same)} "
          f"({len(specs)} specs of configs/, {len(REFUSALS)} refusals)"
          + ("" if all(same) else "; different: " + ", ".join(c[0] for c, s in zip(cases, same) if not s)))


if __name__ == "__main__":
    main()
