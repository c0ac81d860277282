"""Sweep results as a W&B artifact, logged offline, then rebuilt into a run directory with `repro pull`."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner

from experiments.errors import SpecError
from experiments.spec import Spec
from repro.aggregate import tables
from repro.artifacts import safe_entry
from repro.cli import main
from repro.store import Store
from repro.sweep import run_sweep
from tests.conftest import ROOT, tiny_spec_dict
from tests.repro.wandb_records import materialize, read_runs

FBC = [{"name": "first_block_cache", "sweep": {"threshold": [0.0, 0.3]}}]


@pytest.fixture(autouse=True)
def wandb_env(tmp_path, monkeypatch):
    for var in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR", "WANDB_DISABLED", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def _artifacts(run_dir):
    found = [a for r in read_runs(run_dir / "wandb").values() if r["job_type"] == "summary" for a in r["artifacts"]
             if a["type"] == "sweep-results"]
    assert found, "no artifact recorded in the summary run"
    return found


@pytest.mark.slow
def test_logged_offline_then_pulled_figures_best_and_pareto_work(tmp_path):
    spec = Spec.model_validate(tiny_spec_dict(tmp_path / "run", methods=FBC, wandb={"mode": "offline"},
                                              output={"dir": str(tmp_path / "run"), "mp4": True}))
    assert run_sweep(spec).exit_code == 0
    cli = CliRunner()
    assert cli.invoke(main, ["figures", str(spec.run_dir), "--format", "png"]).exit_code == 0
    # the figures are new content: `repro track` (W&B from the store, in its own process) logs a second version
    tracked = subprocess.run([sys.executable, "-m", "repro.cli", "track", str(spec.run_dir)], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert tracked.returncode == 0, tracked.stderr
    versions = _artifacts(spec.run_dir)
    assert len(versions) == 2
    first, second = versions
    assert first["type"] == "sweep-results" and first["name"] == "t-results"
    assert {"latest", "complete", f"spec-{spec.spec_hash()}"} <= set(first["aliases"])
    assert first["metadata"]["spec_hash"] == spec.spec_hash() and first["metadata"]["status"] == "complete"
    assert {"results.sqlite", "spec.resolved.yaml", "environment.json", "export/points.csv",
            "export/items.csv"} <= set(first["entries"])
    assert not any(p.startswith("media/") for p in second["entries"])  # media only behind the flag
    assert any(p.startswith("figures/") for p in second["entries"]) and not any(
        p.startswith("figures/") for p in first["entries"])

    downloaded = materialize(second, tmp_path / "download")
    pulled = tmp_path / "colleague"
    out = cli.invoke(main, ["pull", str(downloaded), "--out", str(pulled)])
    assert out.exit_code == 0, out.output
    ours, theirs = tables(Store(spec.run_dir))[0], tables(Store(pulled))[0]
    assert ours.drop(columns=["params"]).equals(theirs.drop(columns=["params"]))
    out = cli.invoke(main, ["best", str(pulled), "--min", "psnr=20"])
    assert out.exit_code == 0 and "fastest point" in out.output, out.output
    assert cli.invoke(main, ["pareto", str(pulled), "--metric", "ssim"]).exit_code == 0
    a, b = [p["point_id"] for p in Store(pulled).points()]
    out = cli.invoke(main, ["compare", str(pulled), "--points", a, b])
    assert out.exit_code == 0, out.output
    out = cli.invoke(main, ["figures", str(pulled), "--format", "png"])
    assert out.exit_code == 0, out.output
    assert (pulled / "figures" / "pareto_ssim.png").is_file()
    # pulling into a folder that holds something is refused, and leaves it as it was
    out = cli.invoke(main, ["pull", str(downloaded), "--out", str(pulled)])
    assert out.exit_code == 2 and "not an empty folder" in out.output
    assert (pulled / "results.sqlite").is_file()


@pytest.mark.slow
def test_media_travel_behind_the_flag(tmp_path):
    spec = Spec.model_validate(tiny_spec_dict(tmp_path / "run", prompts=["a red fox in snow"],
                                              methods=[{"name": "first_block_cache", "sweep": {"threshold": [0.3]}}],
                                              wandb={"mode": "offline", "artifact_media": True}))
    assert run_sweep(spec).exit_code == 0
    (art,) = _artifacts(spec.run_dir)
    media = [p for p in art["entries"] if p.startswith("media/")]
    stored = Store(spec.run_dir).generations()
    assert len(media) == sum(len(os.listdir(spec.run_dir / g["media_dir"])) for g in stored)
    pulled = tmp_path / "pulled"
    assert CliRunner().invoke(main, ["pull", str(materialize(art, tmp_path / "dl")), "--out", str(pulled)]).exit_code == 0
    for g in stored:
        assert sorted(os.listdir(pulled / g["media_dir"])) == sorted(os.listdir(spec.run_dir / g["media_dir"]))


def _fake_artifact(root):
    root.mkdir(parents=True)
    db = sqlite3.connect(root / "results.sqlite")
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                     "CREATE TABLE generations (key TEXT);"
                     "INSERT INTO meta VALUES ('spec', '{\"name\": \"x\"}');")
    db.commit()
    db.close()
    return root


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../b", "C:\\\\x", "a//b", "", "dir\\\\..\\\\x"])
def test_entries_outside_the_target_are_refused(name):
    with pytest.raises(SpecError, match="refusing"):
        safe_entry(name)


def test_links_in_an_artifact_folder_are_refused_and_nothing_is_written(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    src = _fake_artifact(tmp_path / "art")
    (src / "figures").mkdir()
    os.symlink(secret, src / "figures" / "leak.txt")
    out = CliRunner().invoke(main, ["pull", str(src), "--out", str(tmp_path / "out")])
    assert out.exit_code == 2 and "is a link" in out.output
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-pull")]


@pytest.mark.parametrize("damage", ["no_store", "not_sqlite", "bad_name"])
def test_a_folder_that_is_no_sweep_artifact_exits_2(tmp_path, damage):
    src = _fake_artifact(tmp_path / "art")
    if damage == "no_store":
        (src / "results.sqlite").unlink()
        (src / "other.txt").write_text("x")
    elif damage == "not_sqlite":
        (src / "results.sqlite").write_bytes(b"garbage" * 100)
    else:
        db = sqlite3.connect(src / "results.sqlite")
        db.execute("UPDATE meta SET value = ? WHERE key = 'spec'", ('{"name": "../../up"}',))
        db.commit()
        db.close()
    out = CliRunner().invoke(main, ["pull", str(src), "--out", str(tmp_path / "out")])
    assert out.exit_code == 2, out.output
    assert out.output.startswith("error: ") and "Traceback" not in out.output
    assert not (tmp_path / "out").exists()


def test_a_name_that_is_neither_folder_nor_artifact_path_exits_2(tmp_path):
    out = CliRunner().invoke(main, ["pull", "no such/thing/with spaces:v1"])
    assert out.exit_code == 2 and "neither a folder nor a W&B artifact path" in out.output
