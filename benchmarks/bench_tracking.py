"""Does W&B disturb the timed calls? The demo sweep with W&B offline beside the same sweep with W&B disabled.

Each round runs `repro sweep configs/tiny.yaml` (the shipped demo: the reference Wan model on CPU)
twice into fresh run directories, once with ``--wandb-mode offline`` and once with ``disabled``,
alternating which goes first. Per run it reads every generation's timed end-to-end seconds from
the store and prints the spread (slowest / median) and the sweep's wall time; then, per mode, the
median over rounds, and the ratio offline / disabled of both. Goal: the spread ratio within 10%
(W&B, a separate lowest-priority process, takes no time from a timed call).

``--code DIR`` runs the same sweeps with another checkout of the project (e.g. the commit before
a change, `git worktree add /tmp/before COMMIT`), in the same interleaved rounds, so "before" and
"after" are measured side by side on the same machine state.

    python benchmarks/bench_tracking.py [--rounds 3] [--code /tmp/before]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep(code: Path, mode: str, run_dir: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    env.pop("WANDB_MODE", None)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "repro.cli", "sweep", str(ROOT / "configs" / "tiny.yaml"),
                          "--out", str(run_dir), "--wandb-mode", mode], cwd=code, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"sweep failed ({code}, {mode}): {out.stderr[-2000:]}")
    db = sqlite3.connect(run_dir / "results.sqlite")
    e2e = [r[0] for r in db.execute("SELECT e2e_s FROM generations WHERE status = 'ok'")]
    db.close()
    return {"spread": max(e2e) / statistics.median(e2e), "median_s": statistics.median(e2e), "wall_s": wall,
            "n": len(e2e)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--code", type=Path, action="append", default=[],
                    help="another checkout to measure in the same rounds (repeatable)")
    args = ap.parse_args()
    codes = [ROOT, *[c.resolve() for c in args.code]]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        for r in range(args.rounds):
            order = ["offline", "disabled"] if r % 2 == 0 else ["disabled", "offline"]
            for code in codes:
                for mode in order:
                    res = sweep(code, mode, Path(tmp) / f"{r}-{codes.index(code)}-{mode}")
                    results.setdefault((str(code), mode), []).append(res)
                    print(f"round {r} {code.name:12s} {mode:8s} slowest/median {res['spread']:.2f}, median "
                          f"{res['median_s']:.3f}s over {res['n']} generations, sweep {res['wall_s']:.1f}s",
                          flush=True)
    print()
    for code in codes:
        med = {mode: {k: statistics.median(x[k] for x in results[(str(code), mode)]) for k in ("spread", "wall_s")}
               for mode in ("offline", "disabled")}
        ratio = med["offline"]["spread"] / med["disabled"]["spread"]
        print(f"{code}: slowest/median offline {med['offline']['spread']:.2f} vs disabled "
              f"{med['disabled']['spread']:.2f}: ratio {ratio:.3f} (goal <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'}); "
              f"sweep wall offline {med['offline']['wall_s']:.1f}s, disabled {med['disabled']['wall_s']:.1f}s")


if __name__ == "__main__":
    main()
