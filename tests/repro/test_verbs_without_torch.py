"""Verbs that generate nothing never import torch or diffusers (issue 28): each runs in its own process, which
says afterwards which of them it had imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from experiments.spec import Spec
from tests.conftest import ROOT, tiny_spec_dict
from tests.repro.synthetic_run import write_finished_run

pytestmark = pytest.mark.slow  # each verb in a process of its own

HEAVY = ("torch", "diffusers", "transformers")
# the command, then which libraries it had imported, printed as the process exits (sys.exit included)
PROBE = ("import atexit, json, sys\n"
         "atexit.register(lambda: print('IMPORTED ' + json.dumps([m for m in {heavy} if m in sys.modules]), "
         "file=sys.__stderr__))\n"
         "sys.argv = ['repro', *{args}]\n"
         "from repro.cli import main\n"
         "main()\n")


def run_verb(*args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    code = PROBE.format(heavy=HEAVY, args=[str(a) for a in args])
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    line = next(ln for ln in done.stderr.splitlines() if ln.startswith("IMPORTED "))
    return done, json.loads(line.removeprefix("IMPORTED "))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (written straight into the store) and its spec file."""
    tmp = tmp_path_factory.mktemp("finished")
    data = tiny_spec_dict(tmp / "run")
    spec_file = tmp / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False))
    write_finished_run(Spec.model_validate(data))
    return tmp / "run", spec_file


@pytest.mark.parametrize("spec", ["configs/tiny.yaml", "configs/wan.yaml", "configs/flux.yaml",
                                  "configs/paper/magcache_table1.yaml", "configs/sd35.yaml"])
def test_validate_imports_neither_torch_nor_diffusers(spec):
    done, imported = run_verb("validate", spec)
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout
    assert imported == [], imported


def test_a_refused_spec_imports_neither(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / "run", methods=[
        {"name": "sea_cache", "params": {"residual_order": 2}}])))
    done, imported = run_verb("validate", str(spec))
    assert done.returncode == 2 and "`residual_order` must be 0 or 1, got 2." in done.stderr, done.stderr
    assert imported == [], imported


def test_dry_run_imports_neither(finished):
    _, spec_file = finished
    done, imported = run_verb("sweep", spec_file, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "0 generation(s) would run; 6 already in" in done.stderr
    assert imported == [], imported


def test_finished_rerun_imports_neither_and_writes_no_new_environment(finished):
    run_dir, spec_file = finished
    done, imported = run_verb("sweep", spec_file)
    assert done.returncode == 0, done.stderr
    assert "0 generation(s) in 0 item(s) to run, 6 already in" in done.stderr
    assert "nothing to generate or score" in done.stderr
    assert imported == [], imported
    # nothing ran: the environment stays the one the results were made in
    assert json.loads((run_dir / "environment.json").read_text()) == {"python": "synthetic"}


def test_the_probe_sees_torch_where_there_is_work(tmp_path):
    """The checks here can fail: rescoring a run (metric networks, torch) is seen importing torch."""
    data = tiny_spec_dict(tmp_path / "run")
    write_finished_run(Spec.model_validate(data))
    done, imported = run_verb("score", tmp_path / "run", "--force")
    assert done.returncode == 0, done.stderr
    assert "torch" in imported, imported


@pytest.mark.parametrize("verb", [
    ("pareto", "{run}"),
    ("best", "{run}", "--min", "psnr=0"),
    ("export", "{run}", "--out", "{tmp}/export"),
    ("figures", "{run}", "--out", "{tmp}/figures", "--format", "png"),
    ("papers",),
], ids=lambda v: v[0])
def test_reading_verbs_import_neither(finished, tmp_path, verb):
    run_dir, _ = finished
    args = [a.format(run=run_dir, tmp=tmp_path) for a in verb]
    done, imported = run_verb(*args)
    assert done.returncode == 0, done.stderr
    assert imported == [], imported
