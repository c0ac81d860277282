"""The `repro` command line as a user meets it: fast help, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from repro.cli import main

from tests.conftest import ROOT, tiny_spec_dict


def repro(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "repro.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_help_does_not_import_torch():
    code = "import sys, repro.cli; print(any(m in sys.modules for m in ('torch', 'diffusers', 'metrics')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_validate_prints_the_plan():
    out = repro("validate", "configs/tiny.yaml")
    assert out.returncode == 0, out.stderr
    assert "4 baseline generations, 28 cached generations, 7 points" in out.stdout
    assert "mag_cache: 4 points" in out.stdout


@pytest.mark.parametrize("change, needle", [
    ({"methods": [{"name": "tea_cache", "sweep": {"threshold": [0.1]}}]}, "unknown cache method 'tea_cache'; did you mean 'teacache'"),
    ({"methods": [{"name": "first_block_cache", "sweep": {"threshhold": [0.1]}}]}, "did you mean 'threshold'"),
    ({"methods": [{"name": "first_block_cache", "sweep": {"threshold": [-1]}}]}, "must be >= 0"),
    ({"prompts": []}, "no prompts"),
    ({"seeds": ["a"]}, "not an integer"),
])
def test_bad_spec_exits_2_with_one_line_and_writes_nothing(tmp_path, change, needle):
    run_dir = tmp_path / "run"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(run_dir, **change)))
    for verb in ("validate", "sweep"):
        out = CliRunner().invoke(main, [verb, str(spec)])
        assert out.exit_code == 2, out.output
        assert needle in out.stderr, out.stderr
        assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
        assert len(out.stderr.strip().splitlines()) == 1
    assert not run_dir.exists()


@pytest.mark.slow  # a repro process
def test_bad_spec_in_a_real_process_has_no_traceback(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / "run", seeds=[0.5])))
    out = repro("sweep", str(spec))
    assert out.returncode == 2 and "not an integer" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_python_tag_yaml_is_refused(tmp_path):
    spec = tmp_path / "evil.yaml"
    spec.write_text("name: !!python/object/apply:os.getcwd []\n")
    out = repro("validate", str(spec))
    assert out.returncode == 2 and "not valid YAML" in out.stderr and "Traceback" not in out.stderr


def test_not_a_mapping_and_missing_file(tmp_path):
    spec = tmp_path / "list.yaml"
    spec.write_text("[1, 2]\n")
    assert "must be a YAML mapping" in repro("validate", str(spec)).stderr
    out = repro("validate", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "not found" in out.stderr


def test_bad_flags_exit_2(tmp_path):
    assert repro("sweep", "configs/tiny.yaml", "--executor", "slurm").returncode == 2
    out = repro("sweep", "configs/tiny.yaml", "--set", "nonsense", "--dry-run")
    assert out.returncode == 2 and "KEY.PATH=VALUE" in out.stderr


def test_user_errors_have_their_own_exit_codes(tmp_path):
    """Not a run directory: 4; a run directory another process writes: 5; both one line, no traceback."""
    from experiments.spec import Spec
    from repro.lock import RunLock
    from repro.store import Store

    out = repro("pareto", str(tmp_path))
    assert out.returncode == 4 and "no results.sqlite" in out.stderr and "Traceback" not in out.stderr
    run_dir = tmp_path / "run"
    store = Store(run_dir)
    store.set_meta(spec=Spec.model_validate(tiny_spec_dict(run_dir)).model_dump(mode="json"))
    store.close()
    with RunLock(run_dir):  # flock: a second open file description in this process conflicts too
        out = CliRunner().invoke(main, ["score", str(run_dir)])
    assert out.exit_code == 5, out.output
    assert "being written by another sweep" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_exit_code_mapping_is_by_type_not_by_name():
    from experiments import errors
    from metrics.errors import WeightsMissing
    from repro.cli import exit_code_for

    class ModelUnavailable(RuntimeError):  # same name, not the type: a crash, not exit 3
        pass

    assert exit_code_for(errors.SpecError("x")) == 2
    assert exit_code_for(errors.ModelUnavailable("x")) == 3 and exit_code_for(WeightsMissing("x")) == 3
    assert exit_code_for(errors.RunDirMissing("x")) == 4 and exit_code_for(errors.RunLocked("x")) == 5
    assert exit_code_for(ModelUnavailable("x")) is None and exit_code_for(OSError("not found")) is None


def test_methods_matrix_lists_families():
    out = repro("methods")
    assert out.returncode == 0
    assert "wan" in out.stdout and "first_block_cache" in out.stdout


@pytest.mark.parametrize("change, needle", [
    ({"metrics": {"names": ["lpips"], "device": "cpu"}}, "repro fetch-weights"),
    ({"model": {"id": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "device": "cpu"}}, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"),
])
@pytest.mark.slow  # a repro process
def test_missing_weights_exit_3_before_the_run_directory_exists(tmp_path, change, needle):
    run_dir = tmp_path / "run"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(run_dir, **change)))
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch"),
           "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-m", "repro.cli", "sweep", str(spec)], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 3, out.stderr
    assert needle in out.stderr and "Traceback" not in out.stderr
    assert not run_dir.exists()  # nothing written: the same command works once the weights are fetched
