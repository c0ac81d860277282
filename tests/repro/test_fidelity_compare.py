"""A sweep made with settings that differ from a paper's: `repro compare` names each one, with the source of the
published value; the decisions of every cached generation reach the item table, the point table (per branch)
and the skip heat map."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from experiments.spec import Spec
from paper_figures import contract
from paper_figures.skip_heatmap import skip_heatmap
from repro.aggregate import computed_by_branch, tables
from repro.cli import main
from repro.papers.compare import compare_run_dir, format_text
from repro.store import Store
from repro.sweep import run_sweep
from tests.conftest import tiny_spec_dict

pytestmark = pytest.mark.slow

TABLE = {
    "name": "fixture-fidelity", "title": "Fixture table", "citation": "Doe et al. (2026)", "short": "Doe 2026",
    "source": {"kind": "quoted", "where": "this test"}, "model": "tiny Wan twin", "model_id": "tiny:wan",
    "settings": {"num_inference_steps": 6, "model.scheduler.flow_shift": 3.0, "guidance_scale": 5.0, "seeds": [0]},
    "sources": {"model.scheduler.flow_shift": "fixture.py line 7: shift=3.0",
                "num_inference_steps": "fixture.py line 8"},
    "unstated": ["resolution"],
    "prompts": "2 prompts of the spec", "hardware": "cpu",
    "rows": [
        {"label": "baseline", "method": "baseline", "latency_s": 1.0},
        {"label": "EasyCache", "method": "easycache", "speedup": 1.5},
        {"label": "TeaCache", "method": "teacache", "speedup": 1.4},
    ],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny Wan sweep with a changed shift, EasyCache's warm-up below the official one and TeaCache's absolute
    rescale: three settings that differ from the fixture table or from the official code."""
    run_dir = tmp_path_factory.mktemp("fidelity") / "run"
    spec = tiny_spec_dict(run_dir, methods=[
        {"name": "easycache", "label": "EasyCache", "params": {"threshold": 0.5, "warmup_steps": 2}},
        {"name": "teacache", "label": "TeaCache", "params": {"threshold": 5.0, "coefficients": [1.0, 0.0],
                                                          "absolute_rescale": True}},
    ])
    spec["model"]["scheduler"] = {"flow_shift": 5.0}
    assert run_sweep(Spec.model_validate(spec)).exit_code == 0
    table = tmp_path_factory.mktemp("tables") / "fixture.yaml"
    table.write_text(yaml.safe_dump(TABLE, sort_keys=False))
    return run_dir, str(table)


def test_compare_names_every_changed_setting_with_its_source(run):
    run_dir, table = run
    cmp, points, _ = compare_run_dir(run_dir, table)
    joined = "\n".join(cmp.mismatches)
    shift = "model.scheduler.flow_shift: published 3.0, ours 5.0 (published value: fixture.py line 7: shift=3.0)"
    assert shift in joined
    assert "not stated by the source (ours is our choice): resolution" in joined
    for setting in ("num_inference_steps", "guidance_scale", "seeds"):  # the same as published: not listed
        assert not any(m.startswith(f"{setting}:") for m in cmp.mismatches), setting
    easy = next(m for m in cmp.mismatches if m.startswith("EasyCache (our point"))
    assert "warmup_steps=2: the official script for this family runs 10" in easy
    assert any(m.startswith("TeaCache (our point") and "absolute_rescale=True" in m for m in cmp.mismatches)
    out = CliRunner().invoke(main, ["compare", str(run_dir), "--paper", table, "--out", str(run_dir / "cmp")])
    assert out.exit_code == 0 and "model.scheduler.flow_shift: published 3.0, ours 5.0" in out.output
    assert "warmup_steps=2" in format_text(cmp)


def test_the_point_records_its_deviating_params_in_its_call_and_snippet(run):
    run_dir, _ = run
    points = {p["method"]: p for p in Store.open_existing(run_dir).points()}
    assert "absolute_rescale=True" in points["TeaCache"]["python_call"]
    assert "absolute_rescale: true" in points["TeaCache"]["spec_snippet"]
    assert "warmup_steps=2" in points["EasyCache"]["python_call"]


def test_decisions_reach_the_item_table_the_point_table_and_the_heat_map(run, tmp_path):
    run_dir, _ = run
    points, items = tables(Store.open_existing(run_dir))
    cached = items[items.role == "cached"]
    for text in cached["decisions"]:
        d = json.loads(text)
        assert set(d) == {"branch", "step", "computed", "signal", "accumulated"}
        assert d["branch"][:2] == ["cond", "uncond"] and len(d["step"]) == 2 * 6
    assert (items[items.role == "baseline"]["decisions"] == "").all()
    easy = points[points["method"] == "EasyCache"].iloc[0]
    by_branch = contract.parse_branch_lists(easy["computed_by_branch"])
    assert set(by_branch) == {"cond", "uncond"} and len(by_branch["cond"]) == 6
    assert by_branch == computed_by_branch(list(cached[cached.point_id == easy["point_id"]]["decisions"]))
    assert by_branch["cond"] == by_branch["uncond"]  # officially the uncond call follows the cond call
    fig = skip_heatmap(points, tmp_path, formats=("png",))
    assert fig is not None and "one row per branch" in fig.caption


def test_computed_by_branch_counts_items_per_step():
    a = json.dumps({"branch": ["cond", "uncond", "cond", "uncond"], "step": [0, 0, 1, 1],
                    "computed": [True, True, False, True], "signal": [None] * 4, "accumulated": [None] * 4})
    b = json.dumps({"branch": ["cond", "uncond", "cond", "uncond"], "step": [0, 0, 1, 1],
                    "computed": [True, False, True, True], "signal": [None] * 4, "accumulated": [None] * 4})
    assert computed_by_branch([a, b, ""]) == {"cond": [1.0, 0.5], "uncond": [0.5, 1.0]}
