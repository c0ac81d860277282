"""Methods from the user's code: the manual's example (docs/methods.md) run end to end, spec plugins, entry points."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REPRO = [sys.executable, "-m", "repro.cli"]


def readme_block(language: str, first_line: str) -> str:
    """The fenced block of `language` in docs/methods.md whose first line is `first_line` (exactly as printed there)."""
    text = (ROOT / "docs" / "methods.md").read_text()
    for block in re.findall(rf"```{language}\n(.*?)```", text, flags=re.S):
        if block.splitlines()[0].strip() == first_line:
            return block
    raise AssertionError(f"docs/methods.md has no ```{language} block starting with {first_line!r}")


def _run(*args: str, cwd: Path, pythonpath: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{pythonpath}{os.pathsep}{ROOT}", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*REPRO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def readme_plugin(tmp_path):
    (tmp_path / "my_cache.py").write_text(readme_block("python", "# my_cache.py"))
    (tmp_path / "toy.yaml").write_text(readme_block("yaml", "# toy.yaml"))
    return tmp_path


@pytest.mark.slow
def test_readme_example_runs_end_to_end(readme_plugin):
    out = _run("sweep", "toy.yaml", "--out", "run", cwd=readme_plugin, pythonpath=readme_plugin)
    assert out.returncode == 0, out.stderr[-3000:]
    db = sqlite3.connect(readme_plugin / "run" / "results.sqlite")
    rows = db.execute("SELECT method, params, status, compute_executed, compute_possible FROM generations").fetchall()
    base = [r for r in rows if r[0] is None]
    cached = {yaml.safe_load(r[1])["period"]: r for r in rows if r[0] == "every_other_step"}
    assert len(base) == 1 and set(cached) == {2, 3} and all(r[2] == "ok" for r in rows)
    steps, possible = 6, base[0][4]
    # Wan runs cond and uncond as separate calls: each branch computes ceil(6 / period) of its 6 calls
    for period, row in cached.items():
        assert row[3] == possible * -(-steps // period) // steps, (period, row)
    listed = _run("methods", "--plugin", "my_cache", cwd=readme_plugin, pythonpath=readme_plugin)
    assert listed.returncode == 0, listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("every_other_step"))
    assert "plugin my_cache" in line and "EveryOtherStepConfig" in line


@pytest.mark.slow  # a repro process
def test_plugins_are_imported_only_when_named(readme_plugin, tmp_path):
    marker = tmp_path / "imported"
    (readme_plugin / "my_cache.py").write_text(f"open({str(marker)!r}, 'a').write('x')\n"
                                               + readme_block("python", "# my_cache.py"))
    plain = _run("methods", cwd=readme_plugin, pythonpath=readme_plugin)
    assert plain.returncode == 0 and "every_other_step" not in plain.stdout and not marker.exists()
    spec = yaml.safe_load((readme_plugin / "toy.yaml").read_text())
    spec.pop("plugins")
    (readme_plugin / "noplugin.yaml").write_text(yaml.safe_dump(spec))
    out = _run("validate", "noplugin.yaml", cwd=readme_plugin, pythonpath=readme_plugin)
    assert out.returncode == 2 and "unknown cache method 'every_other_step'" in out.stderr and "plugins" in out.stderr
    assert not marker.exists()
    out = _run("validate", "toy.yaml", cwd=readme_plugin, pythonpath=readme_plugin)
    assert out.returncode == 0, out.stderr
    assert marker.exists()


@pytest.mark.parametrize("plugins, needle", [
    (["no_such_module_xyz"], "cannot import plugin module 'no_such_module_xyz'"),
    (["os; rm -rf /"], "is not a Python module name"),
    ([3], "valid string"),
])
@pytest.mark.slow  # a repro process
def test_bad_plugin_entries_exit_2_naming_the_entry(readme_plugin, plugins, needle):
    spec = yaml.safe_load((readme_plugin / "toy.yaml").read_text())
    spec["plugins"] = plugins
    (readme_plugin / "bad.yaml").write_text(yaml.safe_dump(spec))
    out = _run("validate", "bad.yaml", cwd=readme_plugin, pythonpath=readme_plugin)
    assert out.returncode == 2 and needle in out.stderr and "plugins[0]" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow  # a repro process
def test_a_plugin_cannot_replace_a_builtin_method(readme_plugin):
    source = readme_block("python", "# my_cache.py").replace('register_method("every_other_step"',
                                                            'register_method("teacache"')
    (readme_plugin / "my_cache.py").write_text(source)
    out = _run("methods", "--plugin", "my_cache", cwd=readme_plugin, pythonpath=readme_plugin)
    assert out.returncode == 2 and "clashes with the one from project" in out.stderr, out.stderr


@pytest.mark.slow  # a repro process
def test_entry_points_are_listed_without_import_and_loaded_when_a_spec_names_them(readme_plugin, tmp_path):
    site = tmp_path / "site"
    dist = site / "toy_cache-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-cache\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[repro.methods]\nevery_other_step = my_cache\n")
    marker = tmp_path / "imported"
    (site / "my_cache.py").write_text(f"open({str(marker)!r}, 'a').write('x')\n"
                                      + readme_block("python", "# my_cache.py"))
    work = tmp_path / "work"  # a folder without my_cache.py: only the installed entry point provides it
    work.mkdir()
    listed = _run("methods", cwd=work, pythonpath=site)
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("every_other_step"))
    assert "entry point toy-cache" in line and not marker.exists()
    spec = yaml.safe_load((readme_plugin / "toy.yaml").read_text())
    spec.pop("plugins")
    (work / "ep.yaml").write_text(yaml.safe_dump(spec))
    out = _run("validate", "ep.yaml", cwd=work, pythonpath=site)
    assert out.returncode == 0, out.stderr
    assert marker.exists()


@pytest.mark.slow
def test_probe_runs_builtin_and_plugin_methods_through_the_engine(readme_plugin):
    out = _run("methods", "--probe", "--family", "flux", "--plugin", "my_cache", cwd=readme_plugin,
               pythonpath=readme_plugin)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]  # every recorded flux status re-found
    probed = {ln.split()[1]: ln.split()[2] for ln in out.stdout.split("probe (tiny twins")[1].splitlines()
              if ln.startswith("flux ")}
    assert probed["every_other_step"] == "supported" and probed["teacache"] == "supported"
    assert probed["text_kv_cache"] == "unsupported"  # recorded unsupported on flux (a no-op there), found so again
    assert probed["magcache_official_eval"] == "n/a"  # Wan2.1's evaluation script: not probed on flux
