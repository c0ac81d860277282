"""configs/paper/: every spec validates and plans on a machine without GPU, weights or prompt sets."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from repro.cli import main
from repro.papers import get_paper
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "configs" / "paper").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_paper_config_validates_and_plans_offline(path, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "empty"))  # no prompt set fetched
    out = CliRunner().invoke(main, ["validate", str(path)])
    assert out.exit_code == 0, out.output
    assert "baseline generations" in out.output and "points" in out.output
    raw = yaml.safe_load(path.read_text())
    if isinstance(raw["prompts"], dict):
        assert "not fetched yet" in out.output and "repro fetch-weights" in out.output


def test_there_is_a_paper_config_for_magcache_table1_and_the_easycache_table():
    names = {p.stem for p in CONFIGS}
    assert {"magcache_table1", "easycache_wan13b"} <= names


def test_easycache_config_uses_the_protocol_of_its_table():
    raw = yaml.safe_load((ROOT / "configs" / "paper" / "easycache_wan13b.yaml").read_text())
    table = get_paper("easycache-wan-1.3b")
    ours = raw["metrics"]["protocol"]
    for key in ("psnr", "ssim", "lpips_spatial", "averaging"):
        assert ours[key] == table.protocol[key]
    assert raw["metrics"]["lpips_net"] == table.protocol["lpips_net"]
