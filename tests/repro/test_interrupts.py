"""Issue 13: every interruption of a sweep exits 130, and a long generation stops within seconds.

A real `repro sweep` process on the tiny Wan twin with 1000 denoising steps; signals are sent once it
reports the plan. The stop-now tests use 256x256x9 generations (minutes each here, far longer than the
8 s before the signal on any CPU), so the generation in flight cannot finish before the signal lands. The checks that matter do not depend on
timing: exit 130, no traceback, and no generation recorded (a SIGTERM mid-generation drops it at its
next step instead of finishing it). The time bound is loose (the generation itself takes far longer).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, tiny_spec_dict

pytestmark = pytest.mark.slow


def start_sweep(tmp_path: Path, size: int = 256, frames: int = 9, *flags: str, sigint=signal.SIG_DFL,
                steps: int = 1000) -> tuple[subprocess.Popen, Path]:
    run = tmp_path / "run"
    gen = {"height": size, "width": size, "num_frames": frames, "num_inference_steps": steps, "guidance_scale": 5.0,
           "max_sequence_length": 16}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(run, prompts=["a red fox"], generation=gen,
                                                  methods=[{"name": "first_block_cache",
                                                            "sweep": {"threshold": [0.1]}}])))
    # SIGINT as a terminal's Ctrl-C finds it: a test run started in the background (`make test &`) inherits
    # SIGINT ignored, and Python keeps an inherited ignore until the sweep installs its own handler.
    proc = subprocess.Popen([sys.executable, "-m", "repro.cli", "sweep", str(spec), *flags], cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"})
    return proc, run


def wait_for(proc: subprocess.Popen, needle: str, timeout: float = 300) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    proc.kill()
    raise AssertionError(f"never saw {needle!r}: {''.join(seen)[-2000:]}")


def wait_for_ray_task(driver: int, title: str, timeout: float = 300) -> None:
    """Until a Ray worker of `driver`'s own Ray instance runs the task `title` (Ray names a worker's process
    after the task it runs; the instance's processes descend from the driver)."""
    def parent(pid: int) -> int:
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return 0

    def descends(pid: int) -> bool:
        while pid > 1:
            if pid == driver:
                return True
            pid = parent(pid)
        return False

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if cmdline.read_bytes().startswith(title.encode()) and descends(int(cmdline.parent.name)):
                    return
            except OSError:
                continue
        time.sleep(0.2)
    raise AssertionError(f"no Ray worker ran {title} within {timeout} s")


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, float]:
    t0 = time.monotonic()
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the sweep did not stop within {timeout} s of the signal")
    return proc.returncode, err, time.monotonic() - t0


def recorded(run: Path) -> int:
    if not (run / "results.sqlite").exists():
        return 0
    db = sqlite3.connect(run / "results.sqlite")
    try:
        return db.execute("SELECT count(*) FROM generations").fetchone()[0]
    finally:
        db.close()


def test_sigterm_during_a_long_generation_stops_it_within_seconds(tmp_path):
    proc, run = start_sweep(tmp_path)
    wait_for(proc, "ready to generate")
    time.sleep(1)  # a (1000-step) generation under way
    before = recorded(run)
    proc.send_signal(signal.SIGTERM)
    code, err, took = finish(proc, timeout=60)
    assert code == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert recorded(run) == before  # the generation in flight was dropped, not finished first
    assert took < 60


def test_a_ctrl_c_that_lands_in_code_run_by_exec_still_exits_130(tmp_path):
    # CPython marks a KeyboardInterrupt that passes through exec() of a string as unhandled even when it is
    # caught, and `python -m` then ends by SIGINT (-2) instead of our exit code; dataclasses build their methods
    # so at import, where start-up Ctrl-Cs land (1 in 5 under load). A plugin sends it there, deterministically.
    (tmp_path / "ctrl_c_in_exec.py").write_text(
        "import os, signal\nexec('os.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(10**7): pass')\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**tiny_spec_dict(tmp_path / "run"), "plugins": ["ctrl_c_in_exec"]}))
    out = subprocess.run([sys.executable, "-m", "repro.cli", "validate", str(spec)], cwd=tmp_path, text=True,
                         capture_output=True, env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
                         timeout=120)
    assert out.returncode == 130 and "interrupted" in out.stderr, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr


def test_a_sweep_started_with_sigint_ignored_ignores_it_throughout(tmp_path):
    # nohup / a background job of a script: SIGINT arrives ignored, and stays so after start-up too
    # (it used to be ignored while loading, then handled once generating: stop after the generation).
    proc, run = start_sweep(tmp_path, 32, 5, sigint=signal.SIG_IGN, steps=200)
    wait_for(proc, " to run, ")
    proc.send_signal(signal.SIGINT)  # start-up
    deadline = time.monotonic() + 300
    while recorded(run) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # the generation loop (or its end)
    code, err, _ = finish(proc, timeout=300)
    assert code == 0, err
    assert "stopping" not in err and "interrupted" not in err
    assert recorded(run) == 2  # the baseline and the cached point, nothing dropped


def test_second_ctrl_c_stops_now_with_130(tmp_path):
    proc, run = start_sweep(tmp_path)
    wait_for(proc, "ready to generate")
    time.sleep(1)  # a (1000-step) generation under way
    before = recorded(run)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)  # well inside one generation, so "now" is not "after it"
    proc.send_signal(signal.SIGINT)
    code, err, _ = finish(proc, timeout=60)
    assert code == 130, err
    assert "Traceback" not in err and "Aborted" not in err
    assert recorded(run) == before


def test_sigterm_stops_a_ray_worker_mid_generation(tmp_path):
    # Ray workers run the denoising loop in another process: the driver drops their generation in flight
    # (it kills the actors) instead of waiting for it, and exits 130 like the local executor.
    pytest.importorskip("ray")
    proc, run = start_sweep(tmp_path, 256, 9, "--executor", "ray", "--workers", "1")
    wait_for(proc, " to run, ")
    wait_for_ray_task(proc.pid, "ray::_Worker.next")  # Ray started, the worker loaded, a (minutes-long) generation runs
    time.sleep(1)
    before = recorded(run)
    proc.send_signal(signal.SIGTERM)
    code, err, took = finish(proc, timeout=60)
    assert code == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert recorded(run) == before
    assert took < 30, f"the sweep took {took:.0f} s to stop: it waited for the worker's generation"


def test_ctrl_c_during_start_up_exits_130_and_a_second_one_during_its_clean_up_too(tmp_path):
    # the first Ctrl-C lands while the pipeline loads (it interrupts at once); the second one, while the sweep
    # cleans up, must not cut the clean-up short with a traceback (it did: exit -2). Small generations: a signal
    # that lands after start-up waits for one generation, which must end well in time
    proc, run = start_sweep(tmp_path, size=64, frames=5)
    wait_for(proc, " to run, ")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    code, err, _ = finish(proc, timeout=120)
    assert code == 130, err
    assert "Traceback" not in err and "Aborted" not in err and "interrupted" in err
