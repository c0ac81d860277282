"""The cluster recipes in configs/cluster/, checked as far as a machine without SLURM or Kubernetes can:
the batch script's syntax and directives, the RayJob's required fields, and a dry run of the sweep
command each of them runs."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "configs" / "cluster" / "slurm_ray.sbatch"
RAYJOB = ROOT / "configs" / "cluster" / "rayjob.yaml"
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _env(**extra) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # this environment's `repro`
    return env


# -- SLURM ---------------------------------------------------------------------------------------


def test_batch_script_parses_and_asks_for_one_task_per_node():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", SBATCH.read_text(), re.M))
    assert {"nodes", "ntasks-per-node", "gpus-per-task", "cpus-per-task", "exclusive"} <= directives.keys()
    assert directives["ntasks-per-node"] == "1"  # one `ray start` per node, owning all its GPUs
    body = SBATCH.read_text()
    assert "ray start --head" in body and "ray start --address" in body
    assert re.search(r"args=\(repro sweep \"\$SPEC\" --executor ray --ray-address \"\$address\"\)", body)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_batch_script_passes_shellcheck():
    subprocess.run(["shellcheck", "-s", "bash", str(SBATCH)], check=True)


@pytest.mark.slow
def test_batch_script_dry_run_validates_the_spec_and_starts_nothing(tmp_path):
    """DRY_RUN=1 runs the script's own sweep command with --dry-run, before any srun or ray start."""
    out = tmp_path / "run"
    res = subprocess.run(["bash", str(SBATCH)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=_env(DRY_RUN="1", SPEC="configs/tiny.yaml", OUT=str(out), VENV=sys.prefix))
    assert res.returncode == 0, res.stderr
    assert "would run" in res.stdout + res.stderr and "baseline generations" in res.stdout + res.stderr
    assert not out.exists()  # a dry run writes nothing

    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs" / "tiny.yaml").read_text().replace("num_frames: 5", "num_frames: -5"))
    res = subprocess.run(["bash", str(SBATCH)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=_env(DRY_RUN="1", SPEC=str(bad), VENV=sys.prefix))
    assert res.returncode == 2 and "num_frames" in res.stderr  # the spec's refusal, passed through


# -- KubeRay -------------------------------------------------------------------------------------


def _rayjob() -> dict:
    docs = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d]
    assert len(docs) == 1
    return docs[0]


def _pods(job: dict):
    cluster = job["spec"]["rayClusterSpec"]
    yield "head", cluster["headGroupSpec"]
    yield from ((g["groupName"], g) for g in cluster["workerGroupSpecs"])


def test_rayjob_has_the_fields_kuberay_requires():
    """Required by KubeRay's ray.io/v1 types (ray-project/kuberay ray-operator/apis/ray/v1/raycluster_types.go:
    fields without omitempty): headGroupSpec.{rayStartParams, template}; each worker group's groupName,
    minReplicas, maxReplicas, rayStartParams, template. rayStartParams is a map of strings."""
    job = _rayjob()
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert DNS_1123.match(job["metadata"]["name"])
    spec = job["spec"]
    assert spec["entrypoint"].strip() and spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", cluster["rayVersion"])
    assert cluster["workerGroupSpecs"]
    images = set()
    for name, group in _pods(job):
        assert isinstance(group["rayStartParams"], dict), name
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), name  # "0", not 0
        if name != "head":
            assert DNS_1123.match(name)
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        pod = group["template"]["spec"]
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            assert DNS_1123.match(container["name"]) and container["image"], name
            images.add(container["image"])
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, (name, mount)  # every mount has its volume
            limits = container["resources"]["limits"]
            if name != "head":
                assert int(limits["nvidia.com/gpu"]) >= 1  # a pipeline worker per GPU
    assert len(images) == 1  # head and workers run the same code
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert any(m["mountPath"] == "/results" for m in head["volumeMounts"])  # the driver writes the run dir


@pytest.mark.slow
def test_rayjob_entrypoint_dry_runs(tmp_path):
    """The entrypoint, run as written with --dry-run, its /app paths mapped to this checkout."""
    argv = shlex.split(_rayjob()["spec"]["entrypoint"])
    assert argv[:2] == ["repro", "sweep"]
    assert argv[argv.index("--executor") + 1] == "ray"
    assert argv[argv.index("--ray-address") + 1] == "auto"  # the cluster the RayJob runs the driver in
    out = argv.index("--out") + 1
    assert argv[out].startswith("/results/")  # the head's results volume
    argv[out] = str(tmp_path / "run")
    argv = [a.replace("/app/", f"{ROOT}/", 1) if a.startswith("/app/") else a for a in argv]
    res = subprocess.run([*argv, "--dry-run"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_env())
    assert res.returncode == 0, res.stderr
    assert "would run" in res.stdout + res.stderr
    assert not (tmp_path / "run").exists()
