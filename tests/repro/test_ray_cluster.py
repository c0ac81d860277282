"""Two Ray nodes on one machine (ray.cluster_utils.Cluster): items run on both; a node lost mid-sweep
has its items redone on the other, nothing lost or duplicated, and the results equal a one-node run's."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from experiments.media import read_frames  # noqa: E402
from experiments.spec import Spec  # noqa: E402
from repro import executors  # noqa: E402
from repro.plan import build_plan  # noqa: E402
from repro.store import Store  # noqa: E402
from repro.sweep import run_sweep  # noqa: E402
from tests.conftest import tiny_spec_dict  # noqa: E402

pytestmark = pytest.mark.slow

# Dead nodes noticed within about a second (the default is tens of seconds).
FAST_NODE_DEATH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 250,
                   "health_check_timeout_ms": 500, "health_check_failure_threshold": 2}


def _spec(run_dir) -> Spec:
    """4 items (2 prompts x 2 seeds) of 3 jobs each: a baseline and two First Block Cache points. 24 steps make a
    job last longer than removing a node takes, so the job running on the node when it is removed is lost with it
    (at 6 steps, under load, the node finished all its queued jobs before it was gone: nothing to redo)."""
    gen = {**tiny_spec_dict(run_dir)["generation"], "num_inference_steps": 24}
    return Spec.model_validate(tiny_spec_dict(run_dir, seeds=[0, 1], generation=gen))


@pytest.fixture
def two_nodes():
    """A head and a second node, one CPU each: the two workers of a sweep land one per node."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                             "_system_config": FAST_NODE_DEATH})
    second = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, cluster.head_node.node_id, second
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def made(monkeypatch):
    out = []
    real = executors.make_executor

    def make(kind, spec, **kw):
        out.append(real(kind, spec, **kw))
        return out[-1]

    monkeypatch.setattr(executors, "make_executor", make)
    return out


def _results(run_dir):
    store = Store(run_dir)
    try:
        rows = {g["key"]: g for g in store.generations()}
        return rows, store.scores(), sorted(p["point_id"] for p in store.points())
    finally:
        store.close()


@pytest.mark.timeout(300)  # a sweep that waits forever for a worker the lost node took with it fails, not hangs
def test_lost_node_items_are_redone_on_the_other_and_results_equal_one_node(tmp_path, two_nodes, made, monkeypatch):
    from repro.executors.ray import RayExecutor

    cluster, head, second = two_nodes
    lost: dict = {}
    original_run = RayExecutor.run

    def run(self, items, prepare, on_start, on_generated, on_scored, should_stop):
        def done(job, result):
            on_generated(job, result)
            if not lost and self.nodes.get(job.key) == second.node_id:  # the second node has delivered a result
                victim = next(s for s in self.slots if s.node == second.node_id)
                assert victim.pending  # its next job is running: killed mid-item
                lost["jobs"] = {j.key for _, j, _ in victim.pending}
                lost["delivered"] = set(self.nodes)
                cluster.remove_node(second, allow_graceful=False)

        return original_run(self, items, prepare, on_start, done, on_scored, should_stop)

    monkeypatch.setattr(RayExecutor, "run", run)
    spec = _spec(tmp_path / "two-nodes")
    plan_keys = sorted(j.key for j in build_plan(spec).jobs)
    outcome = run_sweep(spec, executor="ray", workers=2)

    assert lost and outcome.exit_code == 0 and outcome.failed == 0
    ex = made[-1]
    assert set(ex.nodes.values()) == {head, second.node_id}  # items ran on both nodes
    # after the kill, the second node can only have delivered a result it had finished before dying; every
    # other job it held was redone on the head, as was all the work not yet handed out
    late = {k for k in set(plan_keys) - lost["delivered"] if ex.nodes[k] == second.node_id}
    redone = lost["jobs"] - late
    assert late <= lost["jobs"] and redone and all(ex.nodes[k] == head for k in redone)
    assert all(ex.nodes[k] == head for k in set(plan_keys) - lost["delivered"] - late)
    assert ex.retries >= 1
    rows, scores, points = _results(spec.run_dir)
    assert sorted(rows) == plan_keys == sorted(ex.nodes)  # nothing lost
    assert all(g["status"] == "ok" and g["attempts"] == 1 for g in rows.values())  # nothing written twice

    one = run_sweep(_spec(tmp_path / "one-node"), executor="local")
    assert one.exit_code == 0
    rows1, scores1, points1 = _results(tmp_path / "one-node")
    assert points == points1
    assert {k: (g["status"], g["point_id"], g["role"]) for k, g in rows.items()} == \
           {k: (g["status"], g["point_id"], g["role"]) for k, g in rows1.items()}
    for key, g in rows.items():  # bit-identical frames on CPU
        assert np.array_equal(read_frames(spec.run_dir / g["media_dir"]), read_frames(tmp_path / "one-node" / rows1[key]["media_dir"])), key
    assert scores.keys() == scores1.keys() and scores
    for key, by_metric in scores.items():
        assert by_metric.keys() == scores1[key].keys()
        for name, s in by_metric.items():
            assert s["per_frame"] == pytest.approx(scores1[key][name]["per_frame"], abs=1e-9), (key, name)
