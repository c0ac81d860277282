"""configs/paper/: every spec validates and plans on a machine without GPU, weights or prompt sets."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from experiments.spec import Spec
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


def _table_of(raw: dict):
    """The published table a paper spec reproduces: its W&B tags name it (tags: [paper, NAME])."""
    return get_paper(raw["wandb"]["tags"][1])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_paper_config_sets_what_its_source_states(path):
    """Every setting the table records from its source (steps, resolution, frames, guidance, scheduler shift,
    dtype, seeds) is the spec's, and every published row of the model has an entry that compare pairs it with."""
    from repro.papers.compare import spec_setting

    raw = yaml.safe_load(path.read_text())
    spec = Spec.model_validate({**raw, "prompts": ["x"]}).model_dump(mode="json")
    table = _table_of(raw)
    assert table.settings, f"{table.name} records no setting of its source"
    for key, published in table.settings.items():
        ours = spec_setting(spec, key)
        assert ours == published, f"{path.name}: {key} is {ours}, its source says {published}"
        assert key in table.sources, f"{table.name}: {key} has no source"
    labels = {m.get("label") for m in raw["methods"]}
    for row in table.rows:
        if row.method == "baseline" or (row.model_id and row.model_id != raw["model"]["id"]):
            continue
        by_params = any(m["name"] == row.method and all(
            (m.get("params") or {}).get(k, v if k in (m.get("sweep") or {}) and v in m["sweep"][k] else None) == v
            for k, v in (row.params or {}).items()) for m in raw["methods"]) if row.params else False
        assert row.label in labels or by_params, f"{path.name}: no entry for the published row {row.label!r}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_setting_of_a_paper_config_cites_its_source(path):
    """Each generation, model and seed setting has a comment on its line or the line above (its source, or
    'not stated')."""
    import re

    lines = path.read_text().splitlines()
    keys = r"(height|width|num_frames|num_inference_steps|guidance_scale|dtype|component_dtypes|scheduler|seeds|" \
           r"negative_prompt|id|prompts)"
    for i, line in enumerate(lines):
        if re.match(rf"^\s*{keys}:", line) and not line.lstrip().startswith("#"):
            cited = "#" in line or lines[i - 1].lstrip().startswith("#")
            assert cited, f"{path.name}:{i + 1}: {line.strip()!r} cites nothing"


def test_magcache_table1_runs_the_evaluation_scripts_rule():
    raw = yaml.safe_load((ROOT / "configs" / "paper" / "magcache_table1.yaml").read_text())
    assert {m["name"] for m in raw["methods"]} == {"magcache_official_eval", "teacache"}
    assert all(r.method in ("magcache_official_eval", "teacache") for r in get_paper("magcache-table1").rows)
