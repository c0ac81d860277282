"""The Ray executor: same store as the local executor, one pipeline load per worker, dead workers lose nothing."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from tests.conftest import tiny_spec_dict  # noqa: E402
from experiments.media import read_frames  # noqa: E402
from experiments.spec import Spec  # noqa: E402
from repro import executors  # noqa: E402
from repro.plan import build_plan  # noqa: E402
from repro.store import Store  # noqa: E402
from repro.sweep import run_sweep  # noqa: E402

pytestmark = pytest.mark.slow

FBC = {"name": "first_block_cache", "sweep": {"threshold": [0.0, 0.3]}}
# Passes spec validation, raises TypeError inside the actor mid-generation (threshold compared with a float).
BROKEN = {"name": "first_block_cache", "label": "broken", "params": {"threshold": "NOPE"}}


def _spec(run_dir, methods=(FBC,), **changes) -> Spec:
    return Spec.model_validate(tiny_spec_dict(run_dir, methods=list(methods), **changes))


@pytest.fixture
def made(monkeypatch):
    """Every executor the sweep builds, kept so a test can inspect (or sabotage) it."""
    out = []
    real = executors.make_executor

    def make(kind, spec, **kw):
        ex = real(kind, spec, **kw)
        out.append(ex)
        return ex

    monkeypatch.setattr(executors, "make_executor", make)
    return out


@pytest.fixture(scope="module")
def shared_ray():
    """A Ray instance started by the test: the executor must use it and leave it running."""
    # its own instance ("local"), never a cluster another test (or user) runs on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _store_contents(run_dir):
    store = Store(run_dir)
    try:
        gens = {g["key"]: g for g in store.generations()}
        return gens, store.scores(), {p["point_id"] for p in store.points()}
    finally:
        store.close()


def test_ray_sweep_matches_local_and_loads_once_per_worker(tmp_path, made):
    assert not ray.is_initialized()
    local = run_sweep(_spec(tmp_path / "local", timing={"warmup": 1}), executor="local")
    remote = run_sweep(_spec(tmp_path / "ray", timing={"warmup": 1}), executor="ray", workers=2)
    assert local.exit_code == remote.exit_code == 0
    assert not ray.is_initialized()  # the executor started Ray, so it shut it down

    lg, ls, lp = _store_contents(tmp_path / "local")
    rg, rs, rp = _store_contents(tmp_path / "ray")
    assert lp == rp
    assert {k: g["status"] for k, g in lg.items()} == {k: g["status"] for k, g in rg.items()}
    assert len(rg) == 6 and all(g["status"] == "ok" and g["attempts"] == 1 for g in rg.values())
    for key in lg:
        a = read_frames(tmp_path / "local" / lg[key]["media_dir"])
        b = read_frames(tmp_path / "ray" / rg[key]["media_dir"])
        assert np.array_equal(a, b), key
    assert ls.keys() == rs.keys() and ls
    for key, metrics in ls.items():
        assert metrics.keys() == rs[key].keys()
        for name, s in metrics.items():
            r = rs[key][name]
            assert (s["value"] is None) == (r["value"] is None)
            if s["value"] is not None:
                assert r["value"] == pytest.approx(s["value"], abs=1e-6), (key, name)
            assert r["per_frame"] == pytest.approx(s["per_frame"], abs=1e-6), (key, name)

    ex = made[-1]
    assert len(ex.loads_per_worker) == 2 and set(ex.loads_per_worker.values()) == {1}
    assert sum(ex.generations_per_worker.values()) == 6
    assert all(n >= 1 for n in ex.generations_per_worker.values())  # both workers served
    # one warm-up per worker, one pipeline call per generation; each worker ran whole items (3 jobs each)
    assert local.stats["calls"] == {"warmup": 1, "generation": 6}
    assert remote.stats["calls"] == {"warmup": 2, "generation": 6}
    assert sorted(ex.generations_per_worker.values()) == [3, 3]
    assert all(0 < w["busy_s"] <= w["wall_s"] for w in remote.stats["workers"])


def test_killed_worker_loses_and_duplicates_nothing(tmp_path, made, monkeypatch, shared_ray):
    from repro.executors.ray import RayExecutor

    killed = []
    original_run = RayExecutor.run

    def run(self, items, prepare, on_start, on_generated, on_scored, should_stop):
        def done(job, result):
            if not killed:  # the first result is in; the next job is already in flight on every worker
                victim = self.slots[0]
                assert victim.pending  # a job of it in flight
                ray.kill(victim.actor)
                killed.append(victim)
            on_generated(job, result)

        return original_run(self, items, prepare, on_start, done, on_scored, should_stop)

    monkeypatch.setattr(RayExecutor, "run", run)
    spec = _spec(tmp_path / "run")
    outcome = run_sweep(spec, executor="ray", workers=2)

    assert killed and outcome.exit_code == 0 and outcome.failed == 0
    assert ray.is_initialized()  # started by the test, not by the executor: left running
    ex = made[-1]
    assert ex.retries >= 1 and ex.replaced >= 1
    gens, _, _ = _store_contents(spec.run_dir)
    assert sorted(gens) == sorted(j.key for j in build_plan(spec).jobs)
    assert all(g["status"] == "ok" and g["attempts"] == 1 for g in gens.values())
    assert set(ex.loads_per_worker.values()) == {1}  # the replacement loaded once too


def test_job_that_raises_in_the_actor_is_a_failed_point(tmp_path, made, shared_ray):
    spec = _spec(tmp_path / "run", methods=(FBC, BROKEN), prompts=["a red fox in snow"])
    outcome = run_sweep(spec, executor="ray", workers=1)

    assert outcome.exit_code == 1 and outcome.failed == 1
    gens, scores, _ = _store_contents(spec.run_dir)
    failed = [g for g in gens.values() if g["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["point_id"].startswith("broken")
    assert failed[0]["error"].startswith("TypeError:")  # the job's own exception, not RayTaskError
    assert "RayTaskError" not in failed[0]["error"]
    ok = [g for g in gens.values() if g["status"] == "ok"]
    assert len(ok) == 3 and all(g["attempts"] == 1 for g in gens.values())
    assert {g["key"] for g in ok if g["role"] == "cached"} <= scores.keys()
    ex = made[-1]
    assert list(ex.loads_per_worker.values()) == [1]  # the actor kept serving after the failure
    assert list(ex.generations_per_worker.values()) == [4]
