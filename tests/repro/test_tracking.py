"""W&B: a real offline run directory, read back from disk, with one run per point and a summary."""

from __future__ import annotations

import json

import pytest

from experiments.spec import Spec
from repro.store import Store
from repro.sweep import run_sweep
from repro.tracking import resolve_mode
from tests.conftest import tiny_spec_dict
from tests.repro.wandb_records import read_all

pytestmark = pytest.mark.slow


def test_offline_runs_hold_configs_and_summaries(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "secret-key-that-must-not-leak-0123456789")
    spec = Spec.model_validate(tiny_spec_dict(
        tmp_path / "run", prompts=["a red fox in snow"],
        methods=[{"name": "first_block_cache", "sweep": {"threshold": [0.0, 0.3]}}],
        wandb={"mode": "offline", "project": "repro-test", "tags": ["t"]},
    ))
    assert run_sweep(spec).exit_code == 0
    runs = read_all(spec.run_dir / "wandb")
    by_type = {}
    for r in runs:
        by_type.setdefault(r["job_type"], []).append(r)
    assert len(by_type["baseline"]) == 1 and len(by_type["cached"]) == 2 and len(by_type["summary"]) == 1
    assert {r["group"] for r in runs} == {spec.name}
    points = {p["point_id"]: p for p in Store(spec.run_dir).points()}
    for r in by_type["cached"]:
        cfg, summary = r["config"], r["summary"]
        assert cfg["method"] == "first_block_cache" and cfg["spec_hash"] == spec.spec_hash()
        assert cfg["params"] == points[cfg["point_id"]]["params"]
        assert cfg["generation"]["num_inference_steps"] == spec.generation.num_inference_steps
        assert summary["speedup"] > 0 and 0 < summary["compute_fraction"] <= 1
        assert "ssim" in summary
    # re-running a finished sweep logs nothing new
    assert run_sweep(spec).generated == 0
    assert len(read_all(spec.run_dir / "wandb")) == len(runs)
    # the key never reaches our files
    for path in spec.run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".sqlite", ".wandb", ".log", ".md", ".txt"):
            assert b"secret-key-that-must-not-leak" not in path.read_bytes(), path


def test_auto_mode_follows_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x")
    assert resolve_mode("auto") == "online"
    assert resolve_mode("disabled") == "disabled"


def test_tracking_failure_never_loses_results(tmp_path, monkeypatch, capsys):
    import repro.tracking as tracking

    def broken(*a, **k):
        raise ConnectionError("wandb unreachable")

    monkeypatch.setattr(tracking, "_log", broken)
    spec = Spec.model_validate(tiny_spec_dict(tmp_path / "run", prompts=["a red fox in snow"],
                                              wandb={"mode": "offline"}))
    assert run_sweep(spec).exit_code == 0
    assert "wandb: logging failed" in capsys.readouterr().err
    assert len(Store(spec.run_dir).generations(status="ok")) == 3
    assert json.loads((spec.run_dir / "environment.json").read_text())["libraries"]["torch"]
